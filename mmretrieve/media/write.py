"""Write media files (videos with PyAV, audio with soundfile, images with PIL).

Used by the synthetic corpus, the tests and the benchmarks to generate media on the spot.
"""
from __future__ import annotations

import os
from fractions import Fraction
from typing import Iterable

import numpy as np

__all__ = ["write_video", "write_audio", "write_image", "VIDEO_CODECS"]

# container extension -> (codec, pixel format)
VIDEO_CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".webm": ("libvpx", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
}


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = 8.0,
    *,
    codec: str | None = None,
    gop: int | None = None,
    pts_seconds: Iterable[float] | None = None,
    crf: int = 23,
    threads: int | None = 1,
) -> str:
    """Encode RGB uint8 frames (T, H, W, 3) to a video file; the codec follows the extension.

    ``pts_seconds`` gives each frame its own presentation time (variable frame rate);
    ``gop`` sets the keyframe interval in frames. ``threads=1`` (default) keeps the bytes independent of
    the machine (the encoder's automatic thread count follows the CPU count, and its output with
    it); ``None`` lets the encoder choose, faster for large clips.
    """
    import av

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    default_codec, pix_fmt = VIDEO_CODECS.get(ext, ("libx264", "yuv420p"))
    codec = codec or default_codec
    frames = list(frames) if not isinstance(frames, np.ndarray) else frames
    if len(frames) == 0:
        raise ValueError(f"{path}: write_video needs at least one frame")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"{path}: frame size {w}x{h} must be even for {pix_fmt}")
    times = list(pts_seconds) if pts_seconds is not None else None
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if gop is not None:
            stream.codec_context.gop_size = gop
        if threads is not None:
            stream.codec_context.thread_count = int(threads)
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast", **({"threads": str(threads)} if threads else {})}
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
            # convert here: left to the encoder, the RGB -> YUV conversion varied from run to run
            vf = vf.reformat(format=pix_fmt)
            if times is not None:
                vf.pts = int(round(times[i] * 1000))
                vf.time_base = Fraction(1, 1000)
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> str:
    """Write float samples in [-1, 1], shape (N,) or (N, channels); the format follows the extension."""
    import soundfile as sf

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".mp3":
        sf.write(path, samples, sample_rate, format="MP3")
    elif ext in (".ogg", ".oga"):
        sf.write(path, samples, sample_rate, format="OGG", subtype="OPUS" if sample_rate == 48000 else "VORBIS")
    else:
        sf.write(path, samples, sample_rate)
    return path


def write_image(path: str | os.PathLike, array: np.ndarray, **save_kwargs) -> str:
    """Save an RGB/greyscale uint8 array with PIL; the format follows the extension."""
    from PIL import Image

    path = os.fspath(path)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path, **save_kwargs)
    return path
