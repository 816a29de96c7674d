"""mmretrieve train --recipe NAME|FILE [--data DIR | --index INDEX] [--out DIR] [--set SECTION.KEY=VALUE ...]

Runs (or resumes) a training run; under ``torchrun --nproc-per-node N -m mmretrieve train ...`` every
process joins the group and the features are gathered across ranks.
"""
from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune the towers contrastively from a recipe (YAML)")
    p.add_argument("--recipe", "-r", required=True, help="a shipped recipe name (see --list) or a YAML file")
    p.add_argument("--data", metavar="DIR", help="dataset folder / manifest file (overrides data.root)")
    p.add_argument("--index", metavar="INDEX",
                   help="inversion recipes: train from the image/clip vectors a saved index stores, nothing re-encoded "
                        "(sets data.kind=index, data.root=INDEX, inversion.input=normalized, and the index's preset "
                        "and weights unless --preset / --set model.weights say otherwise)")
    p.add_argument("--out", metavar="DIR", help="run folder: checkpoints, log.csv, best/, last/ (overrides run.out)")
    p.add_argument("--preset", help="encoder preset (overrides model.preset)")
    p.add_argument("--pretrained", metavar="PATH_OR_TAG", help="local CLIP weights (overrides model.pretrained)")
    p.add_argument("--device", help="torch device (overrides run.device)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any other override, value parsed as YAML (e.g. --set optim.lr=1e-5 --set data.tasks=[video])")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if --out holds a checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.set_defaults(run=run)


def _overrides(args: argparse.Namespace) -> dict:
    import yaml

    out: dict = {}
    for flag, key in (("data", "data.root"), ("out", "run.out"), ("preset", "model.preset"),
                      ("pretrained", "model.pretrained"), ("device", "run.device")):
        if getattr(args, flag):
            out[key] = getattr(args, flag)
    if args.no_progress:
        out["run.progress"] = False
    if args.index:
        if args.data:
            raise ValueError("--data and --index: give one source of training data")
        from ..train.index_data import index_encoder_record

        rec = index_encoder_record(args.index)
        out.update({"data.kind": "index", "data.root": args.index, "inversion.input": "normalized"})
        if not args.preset:
            if rec["preset_file"]:
                raise ValueError(f"--index {args.index}: the index was built from a preset JSON file (preset "
                                 f"{rec['preset']!r}); give that file with --preset PATH")
            out["model.preset"] = rec["preset"]
            if rec["weights_path"] is not None:
                from ..retriever import recorded_weights

                out["model.weights"] = recorded_weights(rec["weights_path"])
            if rec["video_head"] is not None:
                out["model.video_head"] = rec["video_head"]
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def run(args: argparse.Namespace) -> int:
    from ..train import config_to_dict, load_recipe, override, train

    config = override(load_recipe(args.recipe), _overrides(args))
    if args.print_config:
        print(json.dumps(config_to_dict(config), indent=2))
        return 0
    if config.run.out is None:
        raise ValueError("--out: a run folder is required (or run.out in the recipe)")
    result = train(config, resume=not args.no_resume)
    from ..evaluation.evaluate import results_table

    if result.val:
        print(results_table(result.val))
    print(f"trained {result.step} steps; checkpoints in {config.run.out}/checkpoints, log {config.run.out}/log.csv")
    if result.best:
        label, value = next((k, v) for k, v in result.best.items() if k != "step")
        what = {"mean_t2x_R@1": "mean text->item R@1", "mean_mAP@10": "mean mAP@10 of both directions"}.get(label, label)
        print(f"best: step {result.best['step']} ({what} {value:.1f} on the validation split) in {config.run.out}/best")
    elif not result.val:
        print(f"no validation split (data.val_split={config.data.val_split}): no best checkpoint; "
              f"evaluate {config.run.out}/last")
    if config.run.export:
        print(f"exported weights: {config.run.export}")
    return 0
