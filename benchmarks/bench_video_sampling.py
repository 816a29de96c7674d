"""Time to sample 12 frames from a 60 s 720p H.264 clip vs. decoding every frame, per backend.

    python benchmarks/bench_video_sampling.py [--seconds 60] [--fps 25]

Prints seconds for: decoding all frames, exact uniform sampling of 12 frames, keyframe-snapped
sampling of 12 frames, and the speed-up ratios, for decord and PyAV side by side.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def make_clip(path: str, seconds: float, fps: int, gop: int) -> None:
    from mmretrieve.media.write import write_video

    h, w = 720, 1280
    n = int(seconds * fps)
    yy, xx = np.mgrid[0:h, 0:w]
    base = ((xx // 40 + yy // 40) % 2 * 60 + 60).astype(np.uint8)

    def frames():
        for i in range(n):
            f = np.stack([base, base, base], axis=-1)
            x = int((i * 7) % (w - 160))
            f[300:460, x : x + 160] = (220, 40, 40)
            yield f

    write_video(path, frames(), fps, gop=gop, threads=None)


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--gop", type=int, default=250, help="keyframe interval in frames (x264 default 250)")
    ap.add_argument("--frames", type=int, default=12)
    args = ap.parse_args()

    from mmretrieve.media.video import VideoSampling, decode_all_frames, sample_video

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "clip_720p.mp4")
        t0 = time.perf_counter()
        make_clip(path, args.seconds, args.fps, args.gop)
        print(f"generated {args.seconds:.0f} s 1280x720 H.264 at {args.fps} fps (GOP {args.gop}) in {time.perf_counter() - t0:.1f} s")
        backends = ["pyav"]
        try:
            import decord  # noqa: F401

            backends.insert(0, "decord")
        except ImportError:
            print("decord not installed: PyAV only")
        for backend in backends:
            exact = VideoSampling(num_frames=args.frames, window=None, backend=backend)
            snap = VideoSampling(num_frames=args.frames, window=None, backend=backend, keyframe_snap=True)
            t_all = timed(lambda: decode_all_frames(path, backend=backend), repeat=1)
            t_exact = timed(lambda: sample_video(path, exact))
            t_snap = timed(lambda: sample_video(path, snap))
            n = decode_all_frames(path, backend=backend)
            print(f"[{backend}] decode all {n} frames: {t_all:7.3f} s")
            print(f"[{backend}] sample {args.frames} frames exact:    {t_exact:7.3f} s  ({t_all / t_exact:6.1f}x faster than decoding all)")
            print(f"[{backend}] sample {args.frames} frames keyframe: {t_snap:7.3f} s  ({t_all / t_snap:6.1f}x faster than decoding all, "
                  f"{t_exact / t_snap:.1f}x faster than exact)")


if __name__ == "__main__":
    main()
