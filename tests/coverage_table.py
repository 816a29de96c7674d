"""Print the suite's coverage per package (statements and branches) from the .coverage file that
``pytest --cov`` left, then the modules the project holds to 90 % branch coverage.

    python -m pytest -q -m "not browser" --cov --cov-report=   # writes .coverage
    python tests/coverage_table.py [--data .coverage] [--markdown]

Coverage is measured in the test process; code that runs only inside CLI subprocesses started by a
test (kill tests, the CLI tests) is not counted.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

import coverage

CORE = ("mmretrieve/index/", "mmretrieve/verify.py", "mmretrieve/evaluation/metrics.py")
TARGET = 90.0


def _pct(covered: int, total: int) -> float:
    return 100.0 * covered / total if total else 100.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=".coverage", help="coverage data file (default: %(default)s)")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables (for the README)")
    args = ap.parse_args(argv)
    if not os.path.exists(args.data):
        ap.error(f"{args.data}: no coverage data; run pytest with --cov first")
    cov = coverage.Coverage(data_file=args.data)
    cov.load()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "coverage.json")
        cov.json_report(outfile=out, include=["mmretrieve/*", "*/mmretrieve/*"])
        with open(out, encoding="utf-8") as f:
            files = json.load(f)["files"]
    rows = {}
    for name, body in files.items():
        rel = name[name.index("mmretrieve/"):] if "mmretrieve/" in name else name
        rows[rel] = body["summary"]
    packages: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for rel, s in rows.items():
        pkg = os.path.dirname(rel).replace("/", ".")
        for key in ("num_statements", "covered_lines", "num_branches", "covered_branches"):
            packages[pkg][key] += s[key]
    total = collections.Counter()
    for c in packages.values():
        total.update(c)

    def line(name: str, c) -> list[str]:
        return [name, str(c["num_statements"]), f"{_pct(c['covered_lines'], c['num_statements']):.0f} %",
                str(c["num_branches"]), f"{_pct(c['covered_branches'], c['num_branches']):.0f} %"]

    header = ["package / module", "statements", "covered", "branches", "branch coverage"]
    table = [line(p, packages[p]) for p in sorted(packages)] + [line("all", total)]
    core = sorted(r for r in rows if r.startswith(CORE) and not r.endswith("__init__.py"))
    core_table = [line(r, rows[r]) for r in core]
    low = [r for r in core if _pct(rows[r]["covered_branches"], rows[r]["num_branches"]) < TARGET]
    for title, body in (("per package", table), (f"core modules (target >= {TARGET:.0f} % branch coverage)", core_table)):
        print(f"\n{title}")
        if args.markdown:
            print("| " + " | ".join(header) + " |")
            print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
            for r in body:
                print("| " + " | ".join(f"`{r[0]}`" if i == 0 else c for i, c in enumerate(r)) + " |")
        else:
            widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
            for r in [header] + body:
                print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if low:
        print(f"\nbelow {TARGET:.0f} % branch coverage: {', '.join(low)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
