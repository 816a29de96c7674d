"""Train the sample architecture on a synthetic corpus for longer and print the loss / recall curves.

    python benchmarks/bench_training.py --steps 400 --out runs/bench-training

Writes out/log.csv (every step) and out/curves.png when matplotlib is installed (else only the CSV).
Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import csv
import os
import time


def main() -> None:
    from mmretrieve.train import DataConfig, LockConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench-training")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--preset", default="sample")
    args = ap.parse_args()
    cfg = TrainConfig(
        name="bench-training",
        model=ModelConfig(preset=args.preset, preset_weights=False),
        data=DataConfig(kind="synthetic", root=os.path.join(args.out, "corpus"), val_fraction=0.2,
                        synthetic={"n_images": 256, "n_videos": 128, "n_audio": 96, "seed": 2}),
        optim=OptimConfig(lr=2e-3, weight_decay=0.05, warmup_steps=20, max_steps=args.steps, batch_size=args.batch_size),
        lock=LockConfig(token_embedding=True),
        run=RunConfig(out=args.out, eval_every=args.eval_every, save_every=args.steps, log_every=1),
    )
    t0 = time.perf_counter()
    result = train(cfg, resume=False)
    print(f"{result.step} steps in {time.perf_counter() - t0:.0f} s")
    with open(os.path.join(args.out, "log.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in rows[-1] if c.startswith("val_") and c.endswith("t2x_R@1") or c.endswith("chance_R@1")]
    print("step   loss    temp   " + "  ".join(c.replace("val_", "") for c in cols))
    for r in rows:
        if r.get(cols[0]) if cols else False:
            print(f"{int(r['step']):5d}  {float(r['loss']):.3f}  {float(r['temperature']):.3f}  "
                  + "  ".join(f"{float(r[c]):>{len(c) - 4}.1f}" for c in cols))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib not installed: curves are in {args.out}/log.csv")
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    a.set_xlabel("step"), a.set_ylabel("loss")
    for c in cols:
        pts = [(int(r["step"]), float(r[c])) for r in rows if r.get(c)]
        b.plot(*zip(*pts), marker="o", label=c.replace("val_", ""))
    b.set_xlabel("step"), b.set_ylabel("held-out R@1 (%)"), b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "curves.png"))
    print(f"wrote {args.out}/curves.png")


if __name__ == "__main__":
    main()
