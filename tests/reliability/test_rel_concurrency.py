"""Readers (search, info; other processes) while `mmretrieve index` writes; two writers refused."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import Counter

import numpy as np
import pytest
from rel_helpers import TINY, cli, cli_popen, make_audio_folder, make_image_folder, row_count

from mmretrieve.errors import IndexLockedError

N_AUDIO = 16  # 25-s tones: 3 windows each, written together or not at all


@pytest.mark.slow
def test_readers_see_only_whole_commits_while_writer_adds(tmp_path):
    folder = str(tmp_path / "tones")
    files = make_audio_folder(folder, N_AUDIO)
    index = str(tmp_path / "idx")
    writer = cli_popen("index", folder, "--index", index, "--preset", TINY, "--batch-size", "2",
                       "--workers", "0", "--no-progress")
    readers: list[subprocess.Popen] = []
    seen_totals, snapshots = set(), 0
    try:
        deadline = time.monotonic() + 200
        while row_count(index) < 0 and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # CLI readers start now and run while the writer is adding
        readers = [cli_popen("search", index, "a low tone", "-k", "5", "--json", "-m", "audio"),
                   cli_popen("info", index, "--json")]
        from mmretrieve.index import UnifiedIndex

        q = np.random.default_rng(0).standard_normal((1, 32)).astype(np.float32)
        with UnifiedIndex.open(index, readonly=True) as ro:  # one long-lived reader in this process
            while time.monotonic() < deadline:
                finished = writer.poll() is not None
                hits = ro.search(q, k=10_000)[0]  # every row, from ONE committed snapshot
                per_file = Counter(h.path for h in hits)
                assert all(c == 3 for c in per_file.values()), f"half-written file seen: {per_file}"
                assert all(h.start is not None and h.end is not None for h in hits)
                seen_totals.add(len(hits))
                snapshots += 1
                if finished:
                    break
                time.sleep(0.05)
        assert writer.wait(60) == 0, writer.stderr.read()[-2000:]
        for p in readers:  # they started while the writer was adding; let them finish, never kill them
            p.wait(180)
    finally:
        for p in [writer, *readers]:
            if p.poll() is None:
                p.kill()
            p.wait()
    for p in readers:
        out, err = p.communicate()
        assert p.returncode == 0, f"reader {p.args[3:]} failed: {err[-1500:]}"
    assert max(seen_totals) == 3 * N_AUDIO
    intermediate = [t for t in seen_totals if 0 < t < 3 * N_AUDIO]
    assert intermediate, f"the reader never overlapped the writer ({snapshots} snapshots: {sorted(seen_totals)})"
    assert all(t % 6 == 0 for t in seen_totals), f"a commit is a batch of 2 files x 3 windows: {sorted(seen_totals)}"
    info = cli("info", index, "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["counts"]["audio"] == 3 * N_AUDIO
    assert {h for h in files}  # files were generated


_HOLDER = textwrap.dedent("""
    import sys
    import mmretrieve as mmr
    r = mmr.Retriever.load(sys.argv[1])
    print("holding", flush=True)
    sys.stdin.readline()
    r.close()
""")


def test_second_writer_is_refused_clearly(tmp_path):
    folder = str(tmp_path / "imgs")
    make_image_folder(folder, 3)
    index = str(tmp_path / "idx")
    assert cli("index", folder, "--index", index, "--preset", TINY, "--workers", "0", "--no-progress").returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, index], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        second = cli("index", folder, "--index", index, "--workers", "0", "--no-progress")
        assert second.returncode == 2
        assert f"being written by process {holder.pid}" in second.stderr, second.stderr
        with pytest.raises(IndexLockedError):
            from mmretrieve.index import UnifiedIndex

            UnifiedIndex.open(index)
        # readers still work while the writer holds the lock; so does verify (read-only)
        found = cli("search", index, "noise", "-k", "2")
        assert found.returncode == 0 and found.stdout.count("image") == 2, found.stderr
        from mmretrieve.verify import verify_index

        assert verify_index(index, check_encoder=False).ok
        with pytest.raises(IndexLockedError):
            verify_index(index, repair=True, check_encoder=False)
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(60)
    assert holder.returncode == 0
    again = cli("index", folder, "--index", index, "--workers", "0", "--no-progress")  # lock released
    assert again.returncode == 0 and "unchanged 3" in again.stdout
