"""mmretrieve eval (--checkpoint DIR | --preset NAME) --protocol P --data DIR [--json FILE]

Standard protocols: coco-5k, msrvtt-1k-a, msrvtt-full-test, clotho-eval, synthetic (see
mmretrieve.evaluation.evaluate). Composed retrieval: cirr (``--split val``: Recall@K and Recall_subset@K;
``--split test1``: the two test-server files, written to ``--submission DIR``) and fashioniq (R@10/R@50
per category and averaged), with ``--method arithmetic --weight W`` or ``--method inversion
[--inversion NET] [--template T]`` (see mmretrieve.evaluation.composed). ``--split`` accepts the dataset's split name instead (1k-A, full-test,
karpathy-test, evaluation). The report
names its conventions (ties, median rank, item->text rule, mAP@10); ``--ties`` and ``--median`` pick
others (mmretrieve.evaluation.metrics). A checkpoint trained with ``data.max_words`` is evaluated
with its captions cut the same way unless ``--max-words`` says otherwise. Every path (``--checkpoint``,
``--weights``, ``--pretrained``, ``--data``, ``--json``) is read from the current directory when
relative. Items are decoded with the checkpoint's recorded sampling (a preset's otherwise); the
sampling flags override it.
"""
from __future__ import annotations

import argparse
import json
import os

from ._common import add_device, add_pretrained, add_sampling_options, sampling_changes

_SPLIT_TO_PROTOCOL = {"1k-a": "msrvtt-1k-a", "full-test": "msrvtt-full-test", "karpathy-test": "coco-5k", "5k": "coco-5k",
                      "evaluation": "clotho-eval", "synthetic": "synthetic"}


def register(sub) -> None:
    from ..evaluation.metrics import MEDIANS, TIES
    from ..evaluation.protocols import COMPOSED_PROTOCOLS, PROTOCOLS
    from ..query import COMPOSED_METHODS, DEFAULT_COMPOSED_TEXT_WEIGHT

    p = sub.add_parser("eval", help="evaluate an encoder or a training checkpoint with the standard retrieval protocols")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="DIR", help="a training checkpoint folder (runs/x/best, runs/x/last, ...)")
    src.add_argument("--preset", help="evaluate a preset as is (zero-shot)")
    p.add_argument("--weights", metavar="FILE", help="trained encoder weights (.safetensors) for --preset")
    p.add_argument("--protocol", choices=PROTOCOLS + COMPOSED_PROTOCOLS, help="evaluation protocol")
    p.add_argument("--split", help="or a split name: 1k-A / full-test (MSR-VTT), karpathy-test (COCO), evaluation (Clotho); "
                                   "for cirr / fashioniq the dataset split (cirr: val (default), test1, train; "
                                   "fashioniq: val (default))")
    comp = p.add_argument_group("composed protocols (cirr, fashioniq)")
    comp.add_argument("--method", choices=COMPOSED_METHODS, default="arithmetic",
                      help="how reference and text compose (default: arithmetic)")
    comp.add_argument("--weight", type=float, default=DEFAULT_COMPOSED_TEXT_WEIGHT,
                      help="arithmetic: the text's weight w in (1-w)*ref + w*text (default: %(default)s)")
    comp.add_argument("--inversion", metavar="NET", help="inversion: a network (.safetensors, or Pic2Word's .pt; "
                                                         "default: the one shipped for the preset)")
    comp.add_argument("--template", help="inversion: the prompt template (default: the network's)")
    comp.add_argument("--categories", help="fashioniq: comma-separated categories (default: dress,shirt,toptee)")
    comp.add_argument("--submission", metavar="DIR", help="cirr test1: folder for the two test-server files")
    comp.add_argument("--submission-name", default="mmretrieve", help="cirr test1: NAME in recall_submission_NAME.json")
    p.add_argument("--data", metavar="DIR", help="dataset folder (for synthetic: where the corpus is or will be generated)")
    add_sampling_options(p.add_argument_group("sampling (default: the checkpoint's / preset's)"),
                         frames_flags=("--num-frames", "--frames"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--skip-missing", action="store_true", help="leave out items whose media are missing, and report them")
    p.add_argument("--ties", choices=TIES, default="item-order",
                   help="placing of items that score the same as a positive (default: item-order, as open_clip)")
    p.add_argument("--median", choices=MEDIANS, default="floor",
                   help="MdR convention: floor = floor(median of 0-based ranks)+1 (open_clip, LAION-CLAP; default), "
                        "midpoint = median of 1-based ranks (CLIP4Clip)")
    p.add_argument("--max-words", type=int, default=None, metavar="N",
                   help="cut captions to N tokens, start and end included (default: the checkpoint's data.max_words, "
                        "else the full context)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    add_pretrained(p)
    add_device(p)
    p.set_defaults(run=run)


def checkpoint_sampling(state: dict, preset):
    """The sampling a training checkpoint's state.json records; older checkpoints recorded only the
    frames per video (``num_frames``, None = the preset's), over the preset's sampling."""
    from ..embedding import Sampling

    if "video_sampling" in state:
        try:
            return Sampling.from_record(state)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"state.json: malformed sampling record ({type(e).__name__}: {e})") from None
    sampling = Sampling.from_preset(preset)
    return sampling.override(num_frames=state["num_frames"]) if state.get("num_frames") else sampling


def run(args: argparse.Namespace) -> int:
    from ..embedding import Sampling
    from ..evaluation.evaluate import conventions_for, conventions_text, results_table, run_protocol, write_results
    from ..evaluation.protocols import COMPOSED_PROTOCOLS
    from ..models import create_encoder

    protocol = args.protocol
    if protocol not in COMPOSED_PROTOCOLS and args.method != "arithmetic":
        raise ValueError(f"--method {args.method}: for the composed protocols ({', '.join(COMPOSED_PROTOCOLS)}) only")
    if protocol is None:
        if args.split is None:
            raise ValueError("--protocol or --split is required")
        protocol = _SPLIT_TO_PROTOCOL.get(args.split.lower())
        if protocol is None:
            raise ValueError(f"--split {args.split!r}: no standard protocol; use one of {', '.join(_SPLIT_TO_PROTOCOL)}")
    max_words = args.max_words
    if args.checkpoint:
        folder = os.path.abspath(os.path.expanduser(args.checkpoint))
        state_path = os.path.join(folder, "state.json")
        if not os.path.isfile(state_path):
            raise FileNotFoundError(f"{args.checkpoint}: not a training checkpoint (no state.json in {folder})")
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
        from dataclasses import replace

        from ..models import get_preset

        preset = replace(get_preset(state["preset"]), weights=None)
        encoder = create_encoder(preset, device=args.device, pretrained=args.pretrained or state["config"]["model"].get("pretrained"),
                                 weights=os.path.join(folder, "model.safetensors"), video_head=state.get("video_head"))
        sampling = checkpoint_sampling(state, encoder.preset)
        if max_words is None:
            max_words = state.get("config", {}).get("data", {}).get("max_words")
        label = args.checkpoint
    else:
        encoder = create_encoder(args.preset, device=args.device, pretrained=args.pretrained, weights=args.weights)
        sampling = Sampling.from_preset(encoder.preset)
        label = args.preset
    if protocol in COMPOSED_PROTOCOLS:
        return _run_composed(args, protocol, encoder, label)
    sampling = sampling.override(**sampling_changes(args))
    results = run_protocol(protocol, encoder, args.data, sampling=sampling, batch_size=args.batch_size,
                           skip_missing=args.skip_missing, ties=args.ties, median=args.median, max_words=max_words)
    conventions = conventions_for(list(results), ties=args.ties, median=args.median)
    print(f"{protocol}: {label}")
    print(results_table(results))
    print(conventions_text(conventions))
    print(f"  captions: {'cut to ' + str(max_words) + ' tokens' if max_words else 'full tokenizer context'}")
    if args.json:
        write_results(results, args.json, {"protocol": protocol, "encoder": label, "encoder_id": encoder.fingerprint_id(),
                                           "conventions": conventions, "max_words": max_words})
        print(f"wrote {args.json}")
    return 0


def _run_composed(args: argparse.Namespace, protocol: str, encoder, label: str) -> int:
    from ..evaluation.composed import run_composed_protocol, write_cirr_submission
    from ..evaluation.evaluate import write_results
    from ..models.inversion import load_inversion, shipped_inversion

    if args.data is None:
        raise ValueError(f"--data: the {protocol} folder is required (see datasets/{protocol}.md)")
    inversion = None
    if args.method == "inversion":
        inversion = shipped_inversion(encoder.preset.name) if args.inversion is None else load_inversion(args.inversion)
    elif args.inversion or args.template:
        raise ValueError("--inversion / --template: for --method inversion only")
    if protocol == "cirr" and args.split == "test1" and not args.submission:
        raise ValueError("--split test1: CIRR's test labels are hidden; pass --submission DIR for the test-server files")
    cats = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    res = run_composed_protocol(protocol, encoder, args.data, split=args.split, categories=cats, method=args.method,
                                weight=args.weight, inversion=inversion, template=args.template,
                                skip_missing=args.skip_missing)
    how = f"arithmetic, w={args.weight}" if args.method == "arithmetic" else f"inversion ({inversion.source})"
    print(f"{protocol}: {label} ({how})")
    if "submission" in res:
        paths = write_cirr_submission(res["submission"], args.submission, args.submission_name)
        n = len(res["submission"]["recall"]) - 2  # minus "version" and "metric"
        print(f"test1: {n} queries; labels are hidden, submit to the CIRR test server:")
        for path in paths:
            print(f"  wrote {path}")
    else:
        table = res.get("cirr") or res["fashioniq"]
        cols = list(next(iter(table.values())))
        width = max(len(k) for k in table)
        print(f"{'':<{width}}  " + "  ".join(f"{c:>8}" for c in cols))
        for name, metrics in table.items():
            print(f"{name:<{width}}  " + "  ".join(f"{metrics[c]:8.1f}" for c in cols))
    for item, why in res.get("skipped", []):
        print(f"  skipped {item}: {why}")
    if args.json:
        extra = {"protocol": protocol, "encoder": label, "encoder_id": encoder.fingerprint_id(), "method": args.method,
                 "weight": args.weight if args.method == "arithmetic" else None,
                 "inversion": inversion.source if inversion is not None else None}
        write_results({k: v for k, v in res.items() if k != "submission"}, args.json, extra)
        print(f"wrote {args.json}")
    return 0
