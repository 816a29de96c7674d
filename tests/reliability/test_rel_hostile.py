"""The hostile corpus: every file is indexed or skipped with a reason, nothing crashes, memory bounded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from rel_helpers import TINY, cli

from mmretrieve.media.write import write_image
from mmretrieve.retriever import printable_path
from mmretrieve.testing import make_hostile_corpus

PEAK_RSS_LIMIT_MB = 1800  # tiny model + torch + decoders idle at ~0.9 GB; the bomb alone decoded is +1 GB


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return make_hostile_corpus(str(root), many_files=10_000)


_IN_PROCESS = textwrap.dedent("""
    import json, sys
    import mmretrieve as mmr
    from mmretrieve.testing import peak_rss_mb
    r = mmr.Retriever.create(sys.argv[2], num_workers=0, batch_size=8)
    rep = r.add(sys.argv[1], progress=False)
    hits = r.search("a red square", k=3)
    print(json.dumps({"added": rep.added, "failed": rep.failed, "entries": len(r), "hits": len(hits),
                      "maxrss_mb": peak_rss_mb()}))
""")


@pytest.mark.slow
def test_hostile_corpus_every_file_reported_memory_bounded(hostile):
    proc = subprocess.run([sys.executable, "-c", _IN_PROCESS, hostile.root, TINY], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    added = set(out["added"])
    failed = {p: reason for p, reason in out["failed"]}
    assert all(reason.strip() for reason in failed.values())
    def real(path: str) -> str:  # as reports show it: undecodable bytes as \xNN
        return printable_path(os.path.realpath(path))

    problems = []
    for f in hostile.files:
        p = real(f.path)
        if f.expect == "skip":
            if p not in failed and f.path not in failed:
                problems.append(f"{f.kind} {f.path}: expected a reported skip, got {'added' if p in added else 'nothing'}")
        elif f.expect == "any":
            if p not in added and p not in failed:
                problems.append(f"{f.kind} {f.path}: neither indexed nor reported")
    assert not problems, "\n".join(problems)
    many = [p for p in failed if p.startswith(real(hostile.many_dir))]
    assert len(many) == hostile.many_count
    assert not (added & set(failed))
    assert out["entries"] >= len(added) and out["hits"] == min(3, out["entries"])
    assert out["maxrss_mb"] < PEAK_RSS_LIMIT_MB, f"peak RSS {out['maxrss_mb']:.0f} MB"
    print(f"hostile: {hostile.tried} files tried, {len(added)} indexed, {len(failed)} skipped with a reason, "
          f"peak RSS {out['maxrss_mb']:.0f} MB")


@pytest.mark.slow
def test_hostile_corpus_through_the_cli_with_workers(hostile, tmp_path):
    index = str(tmp_path / "idx")
    done = cli("index", hostile.root, "--index", index, "--preset", TINY, "--workers", "2", "--no-progress",
               "--batch-size", "16", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    summary = [line for line in done.stdout.splitlines() if line.startswith("added ")][0]
    n_failed = int(summary.split("failed ")[1].split(";")[0])
    assert n_failed >= hostile.many_count + sum(f.expect == "skip" for f in hostile.files)
    assert done.stdout.count("  skipped ") == n_failed
    assert "file(s) skipped" in done.stderr
    strict = cli("index", hostile.root, "--index", index, "--workers", "0", "--no-progress", "--strict", timeout=300)
    assert strict.returncode == 1  # skips are an error with --strict; the good files were unchanged
    from mmretrieve.verify import verify_index

    report = verify_index(index, check_encoder=False)
    assert report.ok, str(report)


def test_non_utf8_file_name_does_not_break_indexing(tmp_path):
    """A file name that is not valid UTF-8 must be indexed or skipped with a reason, never crash add()."""
    folder = os.path.join(os.fsencode(str(tmp_path)), b"mixed")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    write_image(os.fsdecode(os.path.join(folder, b"good.png")), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    write_image(os.fsdecode(os.path.join(folder, b"bad-\xff.png")), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    import mmretrieve as mmr

    with mmr.Retriever.create(TINY, num_workers=0) as r:
        rep = r.add(os.fsdecode(folder), progress=False)
        assert any(p.endswith("good.png") for p in rep.added)
        assert len(rep.added) + len(rep.failed) == 2
        str(rep).encode("utf-8")  # the report can be printed


def test_unreadable_file_is_skipped_with_a_reason(tmp_path):
    corpus = make_hostile_corpus(str(tmp_path), many_files=0, non_utf8_name=False)
    denied = corpus.by_kind("unreadable")
    if not any(f.expect == "skip" for f in denied):
        pytest.skip("no file here that cannot be read (no write-only sysfs attribute, and running as root)")
    import mmretrieve as mmr

    with mmr.Retriever.create(TINY, num_workers=0) as r:
        rep = r.add(os.path.join(corpus.root, "special"), progress=False)
    reasons = dict(rep.failed)
    for f in denied:
        if f.expect == "skip":
            assert "ermission denied" in reasons.get(f.path, reasons.get(os.path.realpath(f.path), "")), reasons
