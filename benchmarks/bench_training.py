"""Train the sample architecture on a synthetic corpus for longer and print the loss / recall curves.

    python benchmarks/bench_training.py --steps 400 --out runs/bench-training

Writes out/log.csv (every step) and out/curves.svg (loss and held-out recall curves; no plotting library needed).
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
    loss = [(int(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
    recall = {c.replace("val_", ""): [(int(r["step"]), float(r[c])) for r in rows if r.get(c)] for c in cols}
    path = os.path.join(args.out, "curves.svg")
    with open(path, "w", encoding="utf-8") as f:
        f.write(svg_curves(loss, recall))
    print(f"wrote {path} (open it in a browser)")


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _panel(x0: float, title: str, ylabel: str, series: dict[str, list[tuple[float, float]]], w=420, h=300) -> str:
    """One line chart as SVG elements; a series whose name ends in 'chance_R@1' is dashed."""
    pts = [p for s in series.values() for p in s]
    xmax = max(p[0] for p in pts) or 1
    ymax = max(p[1] for p in pts) * 1.05 or 1
    left, top, pw, ph = x0 + 55, 40, w - 70, h - 90

    def xy(x: float, y: float) -> str:
        return f"{left + pw * x / xmax:.1f},{top + ph * (1 - y / ymax):.1f}"

    out = [f'<text x="{x0 + w / 2}" y="22" text-anchor="middle" font-weight="bold">{title}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
           f'<text x="{left + pw / 2}" y="{top + ph + 32}" text-anchor="middle">step</text>',
           f'<text x="{x0 + 14}" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 {x0 + 14} {top + ph / 2})">{ylabel}</text>']
    for k in range(5):  # grid and tick labels
        yv, xv = ymax * k / 4, xmax * k / 4
        out.append(f'<text x="{left - 6}" y="{top + ph * (1 - k / 4) + 4:.1f}" text-anchor="end" font-size="10">{yv:.3g}</text>')
        out.append(f'<text x="{left + pw * k / 4:.1f}" y="{top + ph + 14}" text-anchor="middle" font-size="10">{xv:.0f}</text>')
    for n, (name, s) in enumerate(series.items()):
        colour = _COLOURS[(n // 2 if len(series) > 2 else n) % len(_COLOURS)]
        dash = ' stroke-dasharray="4 3"' if name.endswith("chance_R@1") else ""
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{dash} points="{" ".join(xy(*p) for p in s)}"/>')
        out.append(f'<text x="{left + 6}" y="{top + ph + 48 + 12 * (n % 2)}" font-size="10" fill="{colour}" '
                   f'transform="translate({(n // 2) * 130} 0)">{name}</text>')
    return "\n".join(out)


def svg_curves(loss: list[tuple[float, float]], recall: dict[str, list[tuple[float, float]]]) -> str:
    """A stand-alone SVG: training loss, and held-out text->item R@1 with chance (dashed) per task."""
    body = _panel(0, "training loss", "loss", {"loss": loss})
    body += "\n" + _panel(440, "held-out R@1 (%)", "R@1 (%)", recall)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="880" height="330" font-family="sans-serif" '
            f'font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')


if __name__ == "__main__":
    main()
