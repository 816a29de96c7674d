"""mmretrieve index DIR... --index PATH: add or update media in an index (created when missing)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from ._common import SAMPLING_FLAGS, add_device, add_pretrained, add_sampling_options, parse_where, sampling_changes
from .optimize import add_structure_options, tuning_from_args


def register(sub) -> None:
    p = sub.add_parser("index", help="index images, videos and audio found under folders or files")
    p.add_argument("inputs", nargs="+", metavar="PATH", help="files or folders (searched recursively by extension)")
    p.add_argument("--index", "-i", required=True, metavar="INDEX", help="index directory (created when missing)")
    p.add_argument("--preset", default="clip-vit-b32", help="encoder preset for a new index (default: %(default)s)")
    add_pretrained(p)
    add_device(p)
    add_structure_options(p)
    p.add_argument("--vector-dtype", choices=("float32", "float16"), default=None,
                   help="precision a new index stores its vectors in (default float32; float16 halves the disk "
                        "and rounds every score to float16)")
    new = p.add_argument_group("a new index's embedding (recorded in the index; defaults from the preset)")
    new.add_argument("--video-head", choices=("mean", "transformer"), help="temporal head over frame vectors")
    add_sampling_options(new)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding worker processes (default: auto)")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="user metadata stored with every added file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any file was skipped")
    p.add_argument("--prune", action="store_true",
                   help="remove indexed files under the given folders that no longer exist (never done otherwise)")
    p.add_argument("--watch", action="store_true",
                   help="after indexing, follow the folders and apply changes in batches until Ctrl-C (needs watchdog)")
    p.add_argument("--quiet-period", type=float, default=1.0, metavar="SECONDS",
                   help="--watch: apply a burst of changes once it has been quiet this long (default: %(default)s)")
    p.add_argument("--allow-untrained", action="store_true",
                   help="index media of a modality whose tower is untrained (skipped and reported otherwise)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..retriever import Retriever

    chosen = [f"--{name.replace('_', '-')}" for name in _NEW_INDEX_OPTIONS if getattr(args, name) not in (None, False)]
    if os.path.exists(args.index):
        if args.vector_dtype is not None:
            raise ValueError(f"--vector-dtype: only for a new index; {args.index} keeps the precision it was "
                             f"created with (see `mmretrieve info {args.index}`)")
        if args.target_recall is not None or args.max_memory is not None or args.no_tune \
                or args.rerank_dtype is not None or args.exact_below is not None:
            raise ValueError(f"--target-recall/--max-memory/--exact-below/--rerank-dtype/--no-tune: only for a new index; change {args.index}'s "
                             f"settings with `mmretrieve optimize {args.index} --target-recall ...`")
        if chosen:
            raise ValueError(f"{' '.join(chosen)}: only for a new index; {args.index} already records its sampling "
                             f"(see `mmretrieve info {args.index}`)")
        r = Retriever.load(args.index, device=args.device, pretrained=args.pretrained, batch_size=args.batch_size, num_workers=args.workers)
    else:
        r = Retriever.create(
            args.preset,
            path=args.index,
            factory=args.factory,
            tuning=tuning_from_args(args),
            vector_dtype=args.vector_dtype or "float32",
            device=args.device,
            pretrained=args.pretrained,
            video_head=args.video_head,
            batch_size=args.batch_size,
            num_workers=args.workers,
            sampling=_sampling(args),
        )
    with r:
        report = r.add(list(args.inputs), metadata=parse_where(args.metadata), progress=not args.no_progress,
                       allow_untrained=args.allow_untrained)
        r.save()
        print(report)
        if args.prune:
            print(f"pruned {len(prune_missing(r, args.inputs, allow_untrained=args.allow_untrained))} vanished file(s)")
        counts = r.index.stats()
        print("index " + args.index + ": " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if args.watch:
            watch_folders(r, args)
    if report.failed:
        print(f"{len(report.failed)} file(s) skipped; see the reasons above", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


def prune_missing(r, inputs, *, allow_untrained: bool = False) -> list[str]:
    """Remove indexed files under ``inputs`` that no longer exist; saves. Returns their paths."""
    from ..watch import WatchConfig, sync_folders

    folders = [p for p in inputs if os.path.isdir(p)]
    return list(sync_folders(r, folders, WatchConfig(prune=True, allow_untrained=allow_untrained)).removed) if folders else []


def watch_folders(r, args: argparse.Namespace) -> None:
    from ..watch import FolderWatcher, WatchConfig

    config = WatchConfig(quiet=args.quiet_period, max_delay=max(10.0, args.quiet_period), prune=args.prune,
                         metadata=parse_where(args.metadata), allow_untrained=args.allow_untrained)

    def show(report) -> None:
        a = report.added
        if a.added or a.updated or a.failed or report.removed:
            print(f"{time.strftime('%H:%M:%S')} {report}", flush=True)

    print(f"watching {', '.join(args.inputs)} (Ctrl-C to stop)" + ("" if args.prune else "; deletions kept (no --prune)"),
          flush=True)
    FolderWatcher(r, args.inputs, config, on_batch=show).run()


_NEW_INDEX_OPTIONS = ("video_head",) + SAMPLING_FLAGS


def _sampling(args: argparse.Namespace):
    """The preset's sampling with the flags given applied (None: the preset's, chosen by Retriever.create)."""
    from ..embedding import Sampling
    from ..models import get_preset

    changes = sampling_changes(args)
    return Sampling.from_preset(get_preset(args.preset)).override(**changes) if changes else None
