"""Mutation testing of the core modules with mutmut: per module score, counts and surviving mutants.

    python benchmarks/mutation.py                      # metrics, filters, verify, store (in that order)
    python benchmarks/mutation.py metrics filters -j 2 # some modules, two mutants at a time
    python benchmarks/mutation.py store --diffs        # also print each survivor's changed lines

Each module runs in its own scratch copy of the project (``build/mutation/<module>``: mmretrieve/,
tests/ and pyproject.toml with a ``[tool.mutmut]`` section naming that module and its tests), so the
work tree is never touched. mutmut first runs the module's tests once to record which tests reach
each function, then runs, for every mutant, only those tests (fastest first, stopping at the first
failure). The score is mutmut's: (killed + timeout) / (mutants - skipped).

Needs the test extra (mutmut is pinned there). Not part of .ci/run: it takes tens of minutes per
module on two cores.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Target:
    module: str  # the file mutated
    tests: tuple[str, ...]  # pytest arguments selecting its tests
    isolation: str = "fork"  # mutmut's process_isolation: "forkserver" when the tests start threads (torch)
    setup_seconds: int = 60  # fixture set-up time per run, added to mutmut's timeout (see prepare)


TARGETS = {
    "metrics": Target("mmretrieve/evaluation/metrics.py", (
        "tests/evaluation/test_metrics.py", "tests/evaluation/test_metric_conventions.py",
        "tests/evaluation/test_metrics_inputs.py", "tests/evaluation/test_metrics_details.py",
        # 9 s of a 25,000 x 5,000 evaluation: checks memory bounds, not the conventions mutated here
        "--deselect", "tests/evaluation/test_metrics.py::test_coco_5k_scale_without_full_matrix")),
    "filters": Target("mmretrieve/index/filters.py", (
        "tests/index/test_filters.py", "tests/index/test_index_filters_property.py")),
    # no model for the plain-index tests, one tiny-random index per module for the encoder ones
    # (test_verify.py's CLI tests take seconds each and add no mutant they kill)
    # (forked straight from a process that has run a model, a mutant's tests can deadlock on a lock
    # some thread held at fork time; the fork server forks from a process that only imported)
    "verify": Target("mmretrieve/verify.py", ("tests/test_verify_plain.py", "tests/test_verify_encoder.py"),
                     isolation="forkserver"),
    "store": Target("mmretrieve/index/store.py", (
        "tests/index/test_store.py", "tests/index/test_index_basic.py", "tests/index/test_index_persistence.py"),
        setup_seconds=5),
}
STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious", "skipped", "segfault", "not checked")


def _toml_list(items) -> str:
    return "[" + ", ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "]"


def prepare(name: str, target: Target, workdir: str) -> str:
    """A scratch copy of the project whose pyproject.toml points mutmut at one module and its tests."""
    work = os.path.join(workdir, name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for sub in ("mmretrieve", "tests"):
        shutil.copytree(os.path.join(ROOT, sub), os.path.join(work, sub), ignore=ignore)
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        project = f.read()
    if "[tool.mutmut]" in project:
        raise SystemExit("pyproject.toml already has a [tool.mutmut] section; this script writes its own")
    with open(os.path.join(work, "pyproject.toml"), "w", encoding="utf-8") as f:
        f.write(project + "\n[tool.mutmut]\n"
                f'source_paths = ["mmretrieve"]\n'
                f"only_mutate = {_toml_list([target.module])}\n"
                f"pytest_add_cli_args_test_selection = {_toml_list(target.tests)}\n"
                f'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
                # mutmut's timeout is 15 x the tests' measured call time + this constant; fixture set-up
                # (a model, an index) is not in the measured time, so the constant must cover it
                f"timeout_constant = {target.setup_seconds}\n"
                f'process_isolation = "{target.isolation}"\n')
    # mutmut copies the sources into mutants/ and imports them from there; creating the folder first
    # lets PYTHONPATH name it, so CLI subprocesses started by a test run the mutant too
    os.makedirs(os.path.join(work, "mutants"))
    return work


def _mutmut(work: str, *args: str, log=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, CI="true", PYTHONPATH=os.path.join(work, "mutants"))
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, env=env, text=True,
                          stdout=log if log is not None else subprocess.PIPE,
                          stderr=subprocess.STDOUT if log is not None else subprocess.PIPE)


def results(work: str) -> dict[str, str]:
    """mutant name -> status, from ``mutmut results --all true``."""
    out = _mutmut(work, "results", "--all", "true")
    got = {}
    for line in out.stdout.splitlines():
        m = re.match(r"^\s+(\S+): (.+)$", line)
        if m:
            got[m.group(1)] = m.group(2).strip()
    return got


def diff_of(work: str, mutant: str) -> list[str]:
    """The changed lines of one mutant ('-' original, '+' mutant)."""
    out = _mutmut(work, "show", mutant).stdout
    return [line for line in out.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|CREATE|FROM|WHERE|JOIN|ORDER BY)\b", re.IGNORECASE)
_LITERAL = re.compile(r"'[^']*'")


def sql_case_only(diff: list[str]) -> bool:
    """True when a mutant only changes the letter case of SQL text outside its quoted literals: SQLite
    reads keywords, table, column and pragma names case-insensitively, so the mutant is equivalent."""
    minus = [line[1:] for line in diff if line.startswith("-")]
    plus = [line[1:] for line in diff if line.startswith("+")]
    if len(minus) != 1 or len(plus) != 1 or minus == plus or not _SQL.search(minus[0]):
        return False
    return (_LITERAL.findall(minus[0]) == _LITERAL.findall(plus[0])
            and _LITERAL.sub("''", minus[0]).lower() == _LITERAL.sub("''", plus[0]).lower())


def run(name: str, target: Target, workdir: str, jobs: int, diffs: bool) -> dict:
    work = prepare(name, target, workdir)
    t0 = time.perf_counter()
    with open(os.path.join(work, "mutmut.log"), "w", encoding="utf-8") as log:
        proc = _mutmut(work, "run", "--max-children", str(jobs), log=log)
    seconds = time.perf_counter() - t0
    status = results(work)
    counts = {s: sum(1 for v in status.values() if v == s) for s in STATUSES}
    counts["other"] = len(status) - sum(counts.values())
    tested = len(status) - counts["skipped"]
    score = 100.0 * (counts["killed"] + counts["timeout"]) / tested if tested else 0.0
    survivors = sorted(k for k, v in status.items() if v != "killed" and v != "timeout")
    changes = {k: diff_of(work, k) for k in survivors}
    sql_case = [k for k in survivors if status[k] == "survived" and sql_case_only(changes[k])]
    others = [k for k in survivors if k not in sql_case]
    adjusted = (100.0 * (counts["killed"] + counts["timeout"]) / (tested - len(sql_case))
                if tested > len(sql_case) else 0.0)
    print(f"\n== {name}: {target.module}  ({len(status)} mutants, {seconds / 60:.1f} min, "
          f"{seconds / max(1, len(status)):.2f} s per mutant, mutmut exit {proc.returncode})")
    print("   " + ", ".join(f"{k} {v}" for k, v in counts.items() if v or k in ("killed", "survived", "timeout")))
    print(f"   score {score:.1f} %")
    if sql_case:
        print(f"   {len(sql_case)} survivors only change the letter case of SQL text (equivalent: SQLite is "
              f"case-insensitive there); score without them {adjusted:.1f} %")
        for k in sql_case:
            print(f"   equivalent (SQL case): {k}")
    for k in others:
        print(f"   {status[k]}: {k}")
        if diffs:
            for line in changes[k]:
                print(f"       {line.strip()[:160]}")
    if proc.returncode != 0 and not status:
        print(f"   mutmut failed; see {os.path.join(work, 'mutmut.log')}")
    return {"module": target.module, "mutants": len(status), "score": score, "adjusted": adjusted,
            "sql_case": len(sql_case), **counts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", metavar="MODULE", help=f"{', '.join(TARGETS)} (default: all, in this order)")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="mutants tested at once (default: %(default)s)")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "build", "mutation"),
                    help="scratch copies (default: %(default)s)")
    ap.add_argument("--diffs", action="store_true", help="print the changed lines of every survivor")
    args = ap.parse_args(argv)
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    rows = [run(n, TARGETS[n], args.workdir, args.jobs, args.diffs) for n in (args.modules or list(TARGETS))]
    print("\nmodule                                  mutants  killed  survived  timeout   score  SQL-case  score w/o")
    for r in rows:
        print(f"{r['module']:<40}{r['mutants']:>7}{r['killed']:>8}{r['survived']:>10}{r['timeout']:>9}"
              f"{r['score']:>7.1f} %{r['sql_case']:>9}{r['adjusted']:>9.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
