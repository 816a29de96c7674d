"""Index the hostile corpus (mmretrieve.testing.make_hostile_corpus) twice and count what happened.

    python benchmarks/bench_hostile.py [--many 10000] [--root DIR] [--workers 2] [--json FILE]

1. ``mmretrieve index ROOT --index IDX --preset tiny-random --workers N`` as a subprocess;
2. ``Retriever.add(ROOT)`` in this process (in-memory index, --inproc-workers decode workers).
For each: files tried by kind, indexed, skipped with a reason, unexpected outcomes (against the
table of the test suite, tests/reliability/hostile_expectations.py: a file expected to be skipped
that was indexed or not reported, a file expected to be indexed that was not), crashes, wall time
and peak RSS. Exit status 1 on any crash or unexpected outcome.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

from mmretrieve.retriever import printable_path
from mmretrieve.testing import peak_rss_mb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reliability"))
from hostile_expectations import expected_outcomes  # noqa: E402  (the expectations live with the tests)


def _candidates(path: str, root: str, real_root: str) -> set[str]:
    """The spellings under which a corpus file may be indexed or reported."""
    out = {path, os.path.realpath(path)}
    rel = os.path.relpath(path, root)
    out.add(os.path.join(real_root, rel))
    return {printable_path(p) for p in out}


def _split_report(stdout: str, known: set[str]) -> tuple[dict[str, str], list[str]]:
    """The '  skipped PATH: REASON' entries of an AddReport printed by ``mmretrieve index``.

    Paths may contain newlines, ': ' or quotes, so an entry runs up to the next '\\n  skipped ' and
    its path is the first prefix (cut at ': ') that names a known file; else the text before the
    first ': '. Returns ({path: reason}, [unparsed entries])."""
    lines = stdout.split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith("added ")), None)
    if start is None:
        return {}, []
    end = max((i for i, line in enumerate(lines) if line.startswith("index ")), default=len(lines))
    body = "\n".join(lines[start + 1:end])
    entries = [e for e in ("\n" + body).split("\n  skipped ")[1:]]
    out: dict[str, str] = {}
    odd: list[str] = []
    for entry in entries:
        cut = entry.find(": ")
        chosen = None
        while cut >= 0:
            if entry[:cut] in known:
                chosen = cut
                break
            cut = entry.find(": ", cut + 1)
        if chosen is None:
            chosen = entry.find(": ")
        if chosen < 0:
            odd.append(entry)
            continue
        out[entry[:chosen]] = entry[chosen + 2:]
    return out, odd


def classify(corpus, indexed: set[str], failed: dict[str, str]) -> dict:
    """Compare what was indexed / reported with what the corpus says must happen to each file."""
    root = corpus.root
    real_root = os.path.realpath(root)
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    unexpected: list[str] = []
    seen: set[str] = set()
    expected = expected_outcomes(corpus, many=False)

    def outcome(cands: set[str]) -> tuple[bool, str | None]:
        seen.update(cands)
        added = bool(cands & indexed)
        reason = next((failed[c] for c in cands if c in failed), None)
        return added, reason

    for f in corpus.files:
        added, reason = outcome(_candidates(f.path, root, real_root))
        c = by_kind[f.kind]
        want = expected.get(printable_path(os.path.relpath(f.path, root)))
        c["tried"] += 1
        c["indexed"] += added
        c["skipped"] += reason is not None
        c["no_reason"] += reason is not None and not reason.strip()
        problem = None
        if added and reason is not None:
            problem = "both indexed and reported as skipped"
        elif want is None:
            problem = "not in the expectations table"
        elif not want.entries and added:
            problem = "expected a reported skip, was indexed"
        elif not want.entries and reason is None:
            problem = "expected a reported skip, nothing reported"
        elif want.entries and not added:
            problem = f"expected to be indexed, {'skipped: ' + reason if reason else 'nothing reported'}"
        if problem:
            c["unexpected"] += 1
            unexpected.append(f"{f.kind} {printable_path(f.path)!r}: {problem}")
    if corpus.many_dir:
        c = by_kind["many-tiny"]
        for name in sorted(os.listdir(corpus.many_dir)):
            added, reason = outcome(_candidates(os.path.join(corpus.many_dir, name), root, real_root))
            c["tried"] += 1
            c["indexed"] += added
            c["skipped"] += reason is not None
            c["no_reason"] += reason is not None and not reason.strip()
            if added or reason is None:  # 1-40 bytes of junk: must be skipped with a reason
                c["unexpected"] += 1
                if c["unexpected"] <= 5:
                    unexpected.append(f"many-tiny {name}: " + ("indexed" if added else "nothing reported"))
    extra_reported = sorted(p for p in failed if p not in seen)
    extra_indexed = sorted(p for p in indexed if p not in seen)
    totals = collections.Counter()
    for c in by_kind.values():
        totals.update(c)
    return {
        "tried": totals["tried"], "indexed": totals["indexed"], "skipped_with_reason": totals["skipped"] - totals["no_reason"],
        "skipped_without_reason": totals["no_reason"], "unexpected": totals["unexpected"],
        "unexpected_details": unexpected, "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "other_reported": extra_reported, "other_indexed": extra_indexed,
    }


def run_cli(corpus, index_dir: str, args) -> dict:
    cmd = [sys.executable, "-m", "mmretrieve", "index", corpus.root, "--index", index_dir, "--preset", args.preset,
           "--workers", str(args.workers), "--batch-size", str(args.batch_size), "--no-progress"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=args.timeout)
        code, out_b, err_b = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, out_b, err_b = "timeout", exc.stdout or b"", exc.stderr or b""
    wall = time.perf_counter() - t0
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    stdout = out_b.decode("utf-8", "backslashreplace")
    stderr = err_b.decode("utf-8", "backslashreplace")
    decoder_lines = stderr.count("\n")
    indexed: set[str] = set()
    entries = 0
    if os.path.isfile(os.path.join(index_dir, "manifest.json")):
        from mmretrieve.index import UnifiedIndex

        with UnifiedIndex.open(index_dir, readonly=True) as ix:
            indexed = set(ix.paths())
            entries = len(ix)
    known = set()
    real_root = os.path.realpath(corpus.root)
    for f in corpus.files:
        known |= _candidates(f.path, corpus.root, real_root)
    failed, odd = _split_report(stdout, known)
    summary = next((line for line in stdout.splitlines() if line.startswith("added ")), "")
    crashed = code != 0 or "Traceback" in stderr
    res = classify(corpus, indexed, failed)
    res.update({"exit_code": code, "crashes": int(crashed), "wall_s": round(wall, 2),
                "peak_rss_mb": round(peak_children, 1), "entries": entries, "summary": summary,
                "unparsed_report_entries": len(odd), "decoder_stderr_lines": decoder_lines,
                "stderr_tail": stderr[-1500:] if crashed else ""})
    return res


def run_inprocess(corpus, args) -> dict:
    import mmretrieve as mmr

    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    crash = ""
    indexed: set[str] = set()
    failed: dict[str, str] = {}
    entries = 0
    # decoders (FFmpeg, decord, mpg123) write to fd 2 directly: keep their noise out of the figures
    sys.stderr.flush()
    saved_fd = os.dup(2)
    noise = tempfile.TemporaryFile()
    os.dup2(noise.fileno(), 2)
    try:
        with mmr.Retriever.create(args.preset, num_workers=args.inproc_workers, batch_size=args.batch_size) as r:
            rep = r.add(corpus.root, progress=False)
            indexed = set(rep.added) | set(rep.updated)
            failed = {p: reason for p, reason in rep.failed}
            entries = len(r)
            r.search("a red square", k=3)
    except Exception:
        crash = traceback.format_exc(limit=5)
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
    noise.seek(0)
    noise_text = noise.read().decode("utf-8", "backslashreplace")
    noise.close()
    wall = time.perf_counter() - t0
    res = classify(corpus, indexed, failed)
    res.update({"crashes": int(bool(crash)), "wall_s": round(wall, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "rss_before_mb": round(rss_before, 1), "entries": entries, "crash": crash,
                "decoder_stderr_lines": noise_text.count("\n"),
                "traceback_in_stderr": "Traceback" in noise_text})
    if "Traceback" in noise_text:
        res["crashes"] += 1
        res["crash"] += noise_text[noise_text.index("Traceback"):][:1500]
    return res


def _unlock(corpus) -> None:
    for p in (corpus.extras.get("locked_dir"), corpus.extras.get("locked_file")):
        if p and os.path.lexists(p):
            try:
                os.chmod(p, 0o700)
            except OSError:
                pass


def print_run(name: str, r: dict) -> None:
    print(f"[{name}]")
    print(f"  tried {r['tried']}  indexed {r['indexed']}  skipped_with_reason {r['skipped_with_reason']}  "
          f"skipped_without_reason {r['skipped_without_reason']}  unexpected {r['unexpected']}  "
          f"crashes {r['crashes']}  entries {r['entries']}")
    print(f"  wall_s {r['wall_s']:.1f}  peak_rss_mb {r['peak_rss_mb']:.0f}"
          + (f"  exit_code {r['exit_code']}" if "exit_code" in r else "")
          + f"  stderr_lines {r['decoder_stderr_lines']}")
    print(f"  {'kind':<18}{'tried':>7}{'indexed':>9}{'skipped':>9}{'unexpected':>12}")
    for kind, c in r["by_kind"].items():
        print(f"  {kind:<18}{c.get('tried', 0):>7}{c.get('indexed', 0):>9}{c.get('skipped', 0):>9}"
              f"{c.get('unexpected', 0):>12}")
    print(f"  other_reported {len(r['other_reported'])}  other_indexed {len(r['other_indexed'])}")
    for p in r["other_reported"][:10]:
        print(f"    reported {p!r}")
    for p in r["other_indexed"][:10]:
        print(f"    indexed {p!r}")
    for line in r["unexpected_details"][:20]:
        print(f"    unexpected: {line}")
    if r.get("stderr_tail"):
        print("  stderr: " + r["stderr_tail"].replace("\n", "\n    "))
    if r.get("crash"):
        print("  crash: " + r["crash"].replace("\n", "\n    "))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--many", type=int, default=10_000, help="tiny junk files in many/")
    ap.add_argument("--root", default=None, help="write the corpus here (new or empty folder; kept)")
    ap.add_argument("--preset", default="tiny-random")
    ap.add_argument("--workers", type=int, default=2, help="decode workers of the CLI run")
    ap.add_argument("--inproc-workers", type=int, default=0, help="decode workers of the in-process run")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed to the CLI run")
    ap.add_argument("--json", metavar="FILE", default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)

    from mmretrieve.testing import make_hostile_corpus

    tmp = tempfile.mkdtemp(prefix="bench_hostile-")
    if args.root:
        root = os.path.abspath(args.root)
        if os.path.exists(root) and os.listdir(root):
            ap.error(f"--root {root}: must be a new or empty folder")
    else:
        root = os.path.join(tmp, "corpus")
    corpus = None
    try:
        t0 = time.perf_counter()
        corpus = make_hostile_corpus(root, many_files=args.many)
        gen_s = time.perf_counter() - t0
        cli = run_cli(corpus, os.path.join(tmp, "index"), args)
        inproc = run_inprocess(corpus, args)
    finally:
        if corpus is not None and not args.root:
            _unlock(corpus)  # so the temporary corpus can be deleted (a --root corpus is kept as made)
        shutil.rmtree(tmp, ignore_errors=True)

    table = expected_outcomes(corpus, many=False)
    wants = [table.get(printable_path(os.path.relpath(f.path, corpus.root))) for f in corpus.files]
    to_index = sum(w is not None and w.entries > 0 for w in wants)
    print(f"corpus             {corpus.root}  generated_s {gen_s:.1f}")
    print(f"files              {len(corpus.files)} crafted (expected: indexed {to_index}, skipped "
          f"{len(corpus.files) - to_index}) + {corpus.many_count} tiny = {corpus.tried} tried")
    print_run(f"cli: mmretrieve index --preset {args.preset} --workers {args.workers}", cli)
    print_run(f"in-process: Retriever.add, num_workers={args.inproc_workers}", inproc)
    bad = cli["crashes"] + cli["unexpected"] + inproc["crashes"] + inproc["unexpected"]
    print(f"crashes            {cli['crashes'] + inproc['crashes']}")
    print(f"unexpected         {cli['unexpected'] + inproc['unexpected']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"corpus": corpus.root, "files": len(corpus.files), "many": corpus.many_count,
                       "tried": corpus.tried, "generated_s": round(gen_s, 2), "cli": cli, "inprocess": inproc},
                      f, indent=2)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
