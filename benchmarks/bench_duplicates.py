"""Precision and recall of near-duplicate detection per kind of copy, at several thresholds.

    python benchmarks/bench_duplicates.py [--preset sample] [--images 48] [--videos 16] [--sounds 16]

Originals are the synthetic corpus (shapes, moving shapes, tones; what the ``sample`` preset knows).
Each original gets copies of the kinds people keep by accident: images re-encoded as JPEG (quality
40), resized (to 62% and stored as PNG) and lightly cropped (6% off every side); videos re-compressed
(CRF 40, other codec); sounds re-encoded (Ogg Vorbis) and resampled (22.05 kHz FLAC). Everything is
indexed with the preset; ``Retriever.duplicates(T)`` groups files; then for every kind:

  recall    = share of (original, copy) pairs that land in one group
  precision = share of grouped pairs that involve a copy of this kind and are truly the same item
  distinct  = for originals: pairs of different items wrongly grouped (the false pairs)

A threshold holds for the encoder it was measured with: run this with your own ``--preset``.
"""
from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections import defaultdict

from PIL import Image

import mmretrieve as mmr
from mmretrieve.data.synthetic import make_corpus
from mmretrieve.media.audio import load_audio
from mmretrieve.media.video import VideoSampling, sample_video
from mmretrieve.media.write import write_audio, write_video

THRESHOLDS = (0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.98, 0.99)


def make_copies(corpus, root: str) -> dict[str, tuple[str, str]]:
    """path -> (origin path, kind) for every file, originals included (kind "original")."""
    os.makedirs(os.path.join(root, "copies"), exist_ok=True)
    out: dict[str, tuple[str, str]] = {}
    for n, item in enumerate(corpus.items):
        src = os.path.realpath(item.path)
        out[src] = (src, "original")
        stem = os.path.join(root, "copies", f"{n:04d}")
        if item.modality is mmr.Modality.IMAGE:
            img = Image.open(src).convert("RGB")
            w, h = img.size
            img.save(stem + "-jpeg.jpg", quality=40)
            out[stem + "-jpeg.jpg"] = (src, "image: re-encoded JPEG q40")
            img.resize((int(w * 0.62), int(h * 0.62)), Image.BILINEAR).save(stem + "-resized.png")
            out[stem + "-resized.png"] = (src, "image: resized to 62%")
            dx, dy = int(w * 0.06), int(h * 0.06)
            img.crop((dx, dy, w - dx, h - dy)).save(stem + "-cropped.png")
            out[stem + "-cropped.png"] = (src, "image: cropped 6% per side")
        elif item.modality is mmr.Modality.VIDEO:
            clip = sample_video(src, VideoSampling(num_frames=10_000, fps=None, window=None, max_frames=10_000))[0]
            fps = (len(clip.timestamps) - 1) / max(clip.timestamps[-1] - clip.timestamps[0], 1e-6)
            write_video(stem + "-recompressed.webm", clip.frames, fps, crf=40)
            out[stem + "-recompressed.webm"] = (src, "video: re-compressed (VP8, CRF 40)")
        else:
            samples = load_audio(src, 16000)
            write_audio(stem + "-reencoded.ogg", samples, 16000)
            out[stem + "-reencoded.ogg"] = (src, "audio: re-encoded Ogg Vorbis")
            resampled = load_audio(src, 22050)
            write_audio(stem + "-resampled.flac", resampled, 22050)
            out[stem + "-resampled.flac"] = (src, "audio: resampled to 22.05 kHz FLAC")
    return {os.path.realpath(p): v for p, v in out.items()}


def score(groups, files: dict[str, tuple[str, str]]) -> dict[str, tuple[int, int, int, int]]:
    """kind -> (true grouped pairs, grouped pairs, copies found with their original, copies)."""
    group_of = {item.path: g for g, group in enumerate(groups) for item in group.items}
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for path, (origin, kind) in files.items():
        if kind != "original":
            stats[kind][3] += 1
            if path in group_of and group_of.get(origin) == group_of[path]:
                stats[kind][2] += 1
    for group in groups:
        for a, b in itertools.combinations([i.path for i in group.items], 2):
            same = files[a][0] == files[b][0]
            kinds = {files[a][1], files[b][1]} - {"original"}
            for kind in kinds:
                stats[kind][1] += 1
                stats[kind][0] += same
            if not same and files[a][1] == files[b][1] == "original":
                stats["distinct originals"][1] += 1
    return {k: tuple(v) for k, v in stats.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="sample")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--sounds", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        corpus = make_corpus(os.path.join(root, "corpus"), n_images=args.images, n_videos=args.videos,
                             n_audio=args.sounds, seed=7)
        files = make_copies(corpus, root)
        t0 = time.perf_counter()
        with mmr.Retriever.create(args.preset, num_workers=0) as r:
            report = r.add(sorted(files), progress=False)
            assert not report.failed, report.failed
            print(f"preset {args.preset}: {len(corpus)} originals, {len(files) - len(corpus)} copies, "
                  f"{len(r)} entries indexed in {time.perf_counter() - t0:.1f} s")
            kinds = sorted({k for _, k in files.values()} - {"original"})
            print(f"{'threshold':>9}  {'kind':<36} {'precision':>9} {'recall':>7}  (pairs right/grouped, copies found/all)")
            for t in THRESHOLDS:
                t1 = time.perf_counter()
                groups = r.duplicates(t)
                took = time.perf_counter() - t1
                stats = score(groups, files)
                for kind in kinds:
                    right, grouped, found, total = stats.get(kind, (0, 0, 0, 0))
                    prec = f"{right / grouped:.3f}" if grouped else "  -  "
                    print(f"{t:>9.2f}  {kind:<36} {prec:>9} {found / total:>7.3f}  ({right}/{grouped}, {found}/{total})")
                false_pairs = stats.get("distinct originals", (0, 0, 0, 0))[1]
                print(f"{t:>9.2f}  {'distinct originals wrongly grouped':<36} {false_pairs:>9d} pairs"
                      f"   [{len(groups)} groups, range search {took * 1000:.0f} ms]")


if __name__ == "__main__":
    main()
