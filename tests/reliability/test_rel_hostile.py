"""The hostile corpus: each file has the exact outcome hostile_expectations.py gives it, nothing crashes,\nmemory stays bounded."""
from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hostile_expectations import DENIED, NOT_UTF8, check, expected_outcomes, outcomes_from_run
from rel_helpers import TINY, cli

from mmretrieve.index import UnifiedIndex
from mmretrieve.media.write import write_image
from mmretrieve.retriever import printable_path
from mmretrieve.testing import make_hostile_corpus

PEAK_RSS_LIMIT_MB = 1800  # tiny model + torch + decoders idle at ~0.9 GB; the bomb alone decoded is +1 GB


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return make_hostile_corpus(str(root), many_files=10_000)


_IN_PROCESS = textwrap.dedent("""
    import collections, json, sys
    import mmretrieve as mmr
    from mmretrieve.testing import peak_rss_mb
    r = mmr.Retriever.create(sys.argv[2], num_workers=0, batch_size=8)
    rep = r.add(sys.argv[1], progress=False)
    hits = r.search("a red square", k=3)
    ids = [int(i) for chunk, _ in r.index.iter_vectors() for i in chunk]
    per_path = collections.Counter(h.path for h in r.index.get(ids))
    print(json.dumps({"added": rep.added, "failed": rep.failed, "entries": len(r), "per_path": per_path,
                      "hits": len(hits), "maxrss_mb": peak_rss_mb()}))
""")


@pytest.mark.slow
def test_hostile_corpus_exact_outcome_per_file_memory_bounded(hostile):
    """Every valid file indexed exactly once (entries counted per path), every invalid one skipped once
    with a reason of the expected kind, nothing else reported or indexed; peak memory bounded."""
    proc = subprocess.run([sys.executable, "-c", _IN_PROCESS, hostile.root, TINY], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    got, problems = outcomes_from_run(hostile.root, out["per_path"], [tuple(f) for f in out["failed"]])
    expected = expected_outcomes(hostile)
    problems += check(expected, got)
    assert not problems, f"{len(problems)} file(s) differ from the table:\n" + "\n".join(problems[:60])
    indexed = {p for p, e in expected.items() if e.entries}
    assert len(out["added"]) == len(indexed) and out["entries"] == sum(out["per_path"].values()) == len(indexed)
    assert len(out["failed"]) == len(expected) - len(indexed)
    assert out["hits"] == 3
    assert out["maxrss_mb"] < PEAK_RSS_LIMIT_MB, f"peak RSS {out['maxrss_mb']:.0f} MB"
    print(f"hostile: {hostile.tried} files tried, {len(indexed)} indexed, {len(out['failed'])} skipped with "
          f"the expected reason, peak RSS {out['maxrss_mb']:.0f} MB")


@pytest.mark.slow
def test_hostile_corpus_through_the_cli_with_workers(hostile, tmp_path):
    """The CLI with two decoding workers: exactly the expected skips, every valid file once in the index."""
    index = str(tmp_path / "idx")
    done = cli("index", hostile.root, "--index", index, "--preset", TINY, "--workers", "2", "--no-progress",
               "--batch-size", "16", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    expected = expected_outcomes(hostile)
    want_indexed = {p: e.entries for p, e in expected.items() if e.entries}
    summary = [line for line in done.stdout.splitlines() if line.startswith("added ")][0]
    n_failed = int(summary.split("failed ")[1].split(";")[0])
    assert n_failed == len(expected) - len(want_indexed)
    assert done.stdout.count("  skipped ") == n_failed
    assert f"{n_failed} file(s) skipped" in done.stderr
    with UnifiedIndex.open(index, readonly=True) as ix:
        ids = [int(i) for chunk, _ in ix.iter_vectors() for i in chunk]
        per_path = collections.Counter(h.path for h in ix.get(ids))
    real_root = os.path.realpath(hostile.root)
    assert {os.path.relpath(p, real_root): n for p, n in per_path.items()} == want_indexed
    strict = cli("index", hostile.root, "--index", index, "--workers", "0", "--no-progress", "--strict", timeout=300)
    assert strict.returncode == 1  # skips are an error with --strict; the good files were unchanged
    from mmretrieve.verify import verify_index

    report = verify_index(index, check_encoder=False)
    assert report.ok and report.entries == len(want_indexed), str(report)


def test_non_utf8_file_name_is_skipped_with_its_reason_and_the_rest_indexed(tmp_path):
    """A file name that is not valid UTF-8 is skipped with the reason, never crashes add()."""
    folder = os.path.join(os.fsencode(str(tmp_path)), b"mixed")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    write_image(os.fsdecode(os.path.join(folder, b"good.png")), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    write_image(os.fsdecode(os.path.join(folder, b"bad-\xff.png")), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    import mmretrieve as mmr

    with mmr.Retriever.create(TINY, num_workers=0) as r:
        rep = r.add(os.fsdecode(folder), progress=False)
        assert [os.path.basename(p) for p in rep.added] == ["good.png"] and len(r) == 1
        assert len(rep.failed) == 1 and rep.failed[0][0].endswith("bad-\\xff.png")
        assert re.search(NOT_UTF8.reason, rep.failed[0][1]), rep.failed
        str(rep).encode("utf-8")  # the report can be printed


def test_unreadable_file_is_skipped_with_permission_denied(tmp_path):
    corpus = make_hostile_corpus(str(tmp_path), many_files=0, non_utf8_name=False)
    expected = expected_outcomes(corpus)
    denied = {p for p, e in expected.items() if p.startswith("special/") and e is DENIED}
    if not denied:
        pytest.skip("no file here that cannot be read (no write-only sysfs attribute, and running as root)")
    import mmretrieve as mmr

    with mmr.Retriever.create(TINY, num_workers=0) as r:
        rep = r.add(os.path.join(corpus.root, "special"), progress=False)
    real_root = os.path.realpath(corpus.root)
    reasons = {os.path.relpath(p, real_root): why for p, why in rep.failed}
    for rel in denied:
        assert re.search(DENIED.reason, reasons.get(rel, "")), (rel, reasons)
