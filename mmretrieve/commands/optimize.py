"""mmretrieve optimize INDEX: choose (auto) and tune the index's faiss structure for its content now.

Also the home of the structure options shared with ``mmretrieve index`` (--factory, --target-recall,
--max-memory, --exact-below, --rerank-dtype, --no-tune).
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..index import TuningConfig


def add_structure_options(p: argparse.ArgumentParser, *, new_index: bool = True) -> None:
    """--factory (new indexes only), --target-recall, --max-memory, --exact-below, --rerank-dtype, --no-tune."""
    if new_index:
        p.add_argument("--factory", default="auto",
                       help="faiss structure of a new index: 'auto' (exact Flat while small, then a tuned "
                            "approximate structure) or a faiss factory string such as IVF1024,PQ32, tuned too "
                            "unless --no-tune (default: %(default)s)")
    p.add_argument("--target-recall", type=float, default=None,
                   help="recall@10 against exact search the structure is tuned to (default 0.95)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory budget of the faiss structure, e.g. 8G (default: 30%% of the raw vectors)")
    p.add_argument("--exact-below", type=int, default=None, metavar="N",
                   help="with --factory auto: entries below which the index stays exact (Flat); past it an "
                        "approximate structure is chosen and tuned (default 50000)")
    p.add_argument("--rerank-dtype", choices=("float16", "float32"), default=None,
                   help="precision of the re-rank copy of the vectors (rerank.vec) an approximate structure "
                        "re-scores its candidates with (default float16: half the bytes)")
    p.add_argument("--no-tune", action="store_true",
                   help="keep faiss's default search parameters for a given factory string (no recall target)")


def tuning_from_args(args: argparse.Namespace, base: "TuningConfig | None" = None) -> "TuningConfig":
    """The TuningConfig the options describe, starting from ``base`` (the defaults when None)."""
    from ..index import TuningConfig  # faiss is imported only by the commands that use it
    from ..index.tuning import parse_memory

    base = base or TuningConfig()
    changes = {}
    if args.target_recall is not None:
        changes["target_recall"] = args.target_recall
    if args.max_memory is not None:
        changes["max_memory"] = parse_memory(args.max_memory)
    if getattr(args, "exact_below", None) is not None:
        if args.exact_below < 0:
            raise ValueError(f"--exact-below {args.exact_below}: must be 0 or more entries")
        changes["flat_below"] = args.exact_below
    if args.no_tune:
        changes["tune"] = False
    if getattr(args, "rerank_dtype", None) is not None:
        changes["rerank_dtype"] = args.rerank_dtype
    return TuningConfig(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, **changes})


def register(sub) -> None:
    p = sub.add_parser("optimize", help="choose and tune an index's search structure for its current size")
    p.add_argument("index", metavar="INDEX")
    add_structure_options(p, new_index=False)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..index import UnifiedIndex

    with UnifiedIndex.open(args.index) as ix:
        before = ix.structure()["description"]
        tuning = tuning_from_args(args, ix.tuning)
        bar = None

        def progress(stage: str, done: int, total: int) -> None:
            nonlocal bar
            if args.no_progress:
                return
            if bar is None or bar.desc != stage:
                if bar is not None:
                    bar.close()
                bar = tqdm(total=total, desc=stage, unit="vec", file=sys.stderr, leave=False)
            bar.n = done
            bar.refresh()

        try:
            plan = ix.optimize(progress=progress, tuning=tuning)
        except KeyboardInterrupt:
            print(f"interrupted: {args.index} still searches with {before}", file=sys.stderr)
            return 130
        finally:
            if bar is not None:
                bar.close()
    print(f"before: {before}")
    print(f"now:    {plan.describe()}")
    return 0
