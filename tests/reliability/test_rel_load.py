"""benchmarks/bench_load.py run small: concurrent readonly searchers (plus a writer) see no error."""
from __future__ import annotations

import json
import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "benchmarks", "bench_load.py")


def _bench(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, os.path.abspath(BENCH), "--vectors", "3000", "--dim", "32",
                           "--processes", "2", "--seconds", "3", "--json", str(out), *extra],
                          capture_output=True, text=True, timeout=240)
    assert out.is_file(), proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_concurrent_readers_with_a_writer_have_no_errors(tmp_path):
    proc, res = _bench(tmp_path, "--with-writer", "--index", str(tmp_path / "idx"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert res["errors"] == 0 and res["lost_processes"] == 0 and res["exit_codes"] == [0, 0, 0]
    assert res["vectors"] == 3000 and res["dim"] == 32
    assert res["by_modality"] == {"image": 1000, "video": 1000, "audio": 1000}
    assert res["processes"] == 2 and len(res["per_process"]) == 2
    assert res["queries"] > 0 and res["filtered_queries"] > 0
    assert all(p["queries"] > 0 and p["errors"] == 0 and p["peak_rss_mb"] > 0 for p in res["per_process"])
    assert sum(p["queries"] for p in res["per_process"]) == res["queries"]
    lat = res["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    w = res["writer"]
    assert w is not None and w["errors"] == 0 and w["commits"] >= 1
    assert w["rows_added"] == w["rows_removed"] > 0  # the writer's rows are removed again at the end
    # the figures are printed as well
    for label in ("vectors", "processes", "duration_s", "queries", "throughput_qps", "latency_ms", "errors"):
        assert label in proc.stdout

    # the kept index is reused as it was (the writer's rows are gone), without rebuilding
    proc2, res2 = _bench(tmp_path, "--index", str(tmp_path / "idx"), "--processes", "1", "--seconds", "1")
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert res2["build_s"] is None and res2["vectors"] == 3000 and res2["writer"] is None
    assert res2["errors"] == 0 and res2["per_process"][0]["queries"] > 0
