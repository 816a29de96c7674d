"""A generated corpus of hostile files, to prove that indexing skips junk with a reason and never crashes.

make_hostile_corpus(root) writes, under root:

    truncated/   every supported extension, a valid file cut in half (video, image and audio)
    empty/       a zero-byte file of every supported extension
    wrong_ext/   text named .png/.mp4/.wav, a PNG named .mp3, a WAV named .jpg, an MP4 named .png ...
    bombs/       a PNG decompression bomb (small file, 16384x16384 pixels), JPEG and PNG headers
                 declaring 65000x65000 pixels
    video/       an MP4 with a video stream and zero frames; an MP4 whose mvhd/tkhd/mdhd durations
                 claim ten hours for a one-second clip; a container with no video stream
    audio/       float WAV full of NaN; WAV with +inf; a hand-written WAV header declaring 0 Hz; a WAV
                 header declaring far more data than present; a WAV with 0 channels
    names/       a non-UTF-8 file name (bytes 0xff 0xfe), a 240-byte name, names with newlines, quotes,
                 SQL and shell metacharacters, a leading dash (each a valid tiny PNG)
    links/       a symlink loop between two directories, a self-referencing file symlink, a dangling link
    special/     a FIFO and a UNIX socket with media extensions (reading a FIFO would block forever),
                 a directory named like an image, a file and a folder with mode 000, a link to a file
                 that cannot be read even by root
    many/        ``many_files`` tiny files (10,000 by default) with media extensions and 1-40 bytes

Each written entry is a :class:`HostileFile` saying what it is (``kind``, ``note``). What indexing
must do with each file is not decided here: the test suite keeps that table
(tests/reliability/hostile_expectations.py) beside the tests that check it.

Permissions: tests usually run as root, and root reads a mode-000 file anyway (``HostileFile.note``
says so). A read that fails even for root is still produced: ``special/denied.png`` is a symlink to a write-only sysfs attribute
(e.g. /sys/bus/pci/rescan, mode 0200), whose open() for reading returns EACCES for every user. It
is never written to. When no such file exists (no sysfs) that entry is left out.
"""
from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..modality import AUDIO_EXTS, IMAGE_EXTS, VIDEO_EXTS

__all__ = ["HostileFile", "HostileCorpus", "make_hostile_corpus", "crafted_wav", "png_bytes"]


@dataclass(frozen=True)
class HostileFile:
    path: str  # as the filesystem sees it (str; non-UTF-8 names are surrogate-escaped)
    kind: str  # short tag, e.g. "truncated", "empty", "bomb", "nan-audio"
    note: str = ""


@dataclass(frozen=True)
class HostileCorpus:
    root: str
    files: tuple[HostileFile, ...]
    many_dir: str | None = None
    many_count: int = 0
    extras: dict = field(default_factory=dict)

    def by_kind(self, kind: str) -> tuple[HostileFile, ...]:
        return tuple(f for f in self.files if f.kind == kind)

    @property
    def tried(self) -> int:
        """Files written (each reaches the indexer), including the many tiny ones."""
        return len(self.files) + self.many_count


# ------------------------------------------------------------------------------------------ builders
def png_bytes(width: int, height: int, *, rows: bytes | None = None, colour_type: int = 0) -> bytes:
    """A PNG with the given header; the pixel data is zeros compressed row by row (cheap for huge sizes)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    if rows is None:
        comp = zlib.compressobj(9)
        row = b"\x00" * (width * (3 if colour_type == 2 else 1) + 1)
        parts = [comp.compress(row) for _ in range(height)]
        rows = b"".join(parts) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def crafted_wav(*, sample_rate: int, channels: int = 1, bits: int = 16, data: bytes = b"\x00\x00" * 800,
                declared_data: int | None = None, audio_format: int = 1) -> bytes:
    """A WAV file written by hand, so the header can lie (0 Hz, 0 channels, more data than present)."""
    block = max(channels, 1) * bits // 8
    n = len(data) if declared_data is None else declared_data
    fmt = struct.pack("<HHIIHH", audio_format, channels, sample_rate, sample_rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", n) + data
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + n) + body


def _jpeg_with_size(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    i = 2
    while i < len(data):
        marker = data[i + 1]
        seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):  # SOFn: length, precision, height, width
            data[i + 5 : i + 7] = struct.pack(">H", height)
            data[i + 7 : i + 9] = struct.pack(">H", width)
            return bytes(data)
        i += 2 + seg_len
    raise RuntimeError("no SOF marker in the generated JPEG")


def _patch_mp4_durations(data: bytes, factor: int) -> bytes:
    """Multiply the duration fields of mvhd, tkhd and mdhd boxes (the metadata lies, the packets don't)."""
    out = bytearray(data)
    for box, offset_v0, offset_v1 in ((b"mvhd", 16, 24), (b"tkhd", 20, 28), (b"mdhd", 16, 24)):
        start = 0
        while True:
            pos = out.find(box, start)
            if pos < 0:
                break
            start = pos + 4
            version = out[pos + 4]
            field_at = pos + 4 + (offset_v1 if version == 1 else offset_v0)
            if version == 1:
                (d,) = struct.unpack(">Q", out[field_at : field_at + 8])
                out[field_at : field_at + 8] = struct.pack(">Q", min(d * factor, 2**63 - 1))
            else:
                (d,) = struct.unpack(">I", out[field_at : field_at + 4])
                out[field_at : field_at + 4] = struct.pack(">I", min(d * factor, 2**32 - 1))
    return bytes(out)


def _empty_video(path: str) -> None:
    """A container with a video stream that holds no frame at all."""
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264" if path.endswith((".mp4", ".mkv", ".mov")) else "mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()  # header written, no packet ever muxed


def _audio_only_container(path: str) -> None:
    """An .mp4 that holds audio and no video stream."""
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        t = np.arange(16000, dtype=np.float32) / 16000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_only_file() -> str | None:
    """A write-only sysfs attribute (mode 0200): open() for reading fails with EACCES even for root.

    Only ever opened for reading (which fails); nothing here writes to it."""
    import glob

    for pattern in ("/sys/bus/pci/rescan", "/sys/class/zram-control/hot_remove", "/sys/devices/pci*/*/rescan",
                    "/sys/module/*/parameters/*"):
        for candidate in sorted(glob.glob(pattern)):
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            if st.st_mode & 0o777 == 0o200:
                try:
                    with open(candidate, "rb"):
                        pass
                except PermissionError:
                    return candidate
    return None


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _valid_bytes(ext: str, tmpdir: str, rng: np.random.Generator) -> bytes | None:
    """A small valid file of the given extension (None when this machine cannot encode it)."""
    from ..media.write import write_audio, write_image, write_video

    path = os.path.join(tmpdir, "valid" + ext)
    try:
        if ext in IMAGE_EXTS:
            write_image(path, rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
        elif ext in VIDEO_EXTS:
            frames = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
            codec = {".mpg": "mpeg1video", ".mpeg": "mpeg2video", ".ogv": "libtheora", ".m4v": "libx264"}.get(ext)
            write_video(path, frames, 8, codec=codec)
        elif ext in AUDIO_EXTS:
            t = np.arange(24000, dtype=np.float32) / 16000
            tone = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
            if ext == ".m4a":
                import av

                with av.open(path, mode="w", format="ipod") as container:
                    stream = container.add_stream("aac", rate=16000)
                    frame = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
                    frame.sample_rate = 16000
                    for packet in stream.encode(frame):
                        container.mux(packet)
                    for packet in stream.encode():
                        container.mux(packet)
            elif ext == ".opus":
                import soundfile as sf

                sf.write(path, tone, 48000, format="OGG", subtype="OPUS")
            elif ext in (".aif", ".aiff"):
                import soundfile as sf

                sf.write(path, tone, 16000, format="AIFF")
            else:
                write_audio(path, tone, 16000)
        else:
            return None
        with open(path, "rb") as f:
            return f.read()
    except Exception:  # an encoder missing from this build of FFmpeg/libsndfile
        return None
    finally:
        if os.path.exists(path):
            os.unlink(path)


def make_hostile_corpus(root: str | os.PathLike, *, many_files: int = 10_000, seed: int = 0,
                        special_files: bool = True, non_utf8_name: bool = True) -> HostileCorpus:
    """Write the hostile corpus under root (see the module docstring); returns what was written."""
    root = os.path.abspath(os.fspath(root))
    rng = np.random.default_rng(seed)
    files: list[HostileFile] = []

    def add(path: str, kind: str, note: str = "") -> None:
        files.append(HostileFile(path, kind, note))

    def sub(name: str) -> str:
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        return d

    all_exts = sorted(IMAGE_EXTS | VIDEO_EXTS | AUDIO_EXTS)
    scratch = sub(".scratch")
    valid: dict[str, bytes] = {}
    for ext in all_exts:
        data = _valid_bytes(ext, scratch, rng)
        if data is not None:
            valid[ext] = data
    os.rmdir(scratch)

    d = sub("truncated")
    for ext in all_exts:
        data = valid.get(ext) or valid[".mp4" if ext in VIDEO_EXTS else ".wav" if ext in AUDIO_EXTS else ".png"]
        cut = data[: max(1, len(data) // 2)]
        note = "" if ext in valid else f"no encoder for {ext} here: the truncated bytes are of another format"
        add(_write(os.path.join(d, "half" + ext), cut), "truncated", note)
        add(_write(os.path.join(d, "header_only" + ext), data[:24]), "truncated")

    d = sub("empty")
    for ext in all_exts:
        add(_write(os.path.join(d, "zero" + ext), b""), "empty")

    d = sub("wrong_ext")
    text = b"this is plain text, not media\n" * 4
    for ext in (".png", ".jpg", ".mp4", ".webm", ".wav", ".flac", ".mp3"):
        add(_write(os.path.join(d, "text" + ext), text), "not-media")
    add(_write(os.path.join(d, "html.gif"), b"<html><body>hi</body></html>"), "not-media")
    add(_write(os.path.join(d, "random.tiff"), rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()), "not-media")
    add(_write(os.path.join(d, "png_named.mp3"), valid[".png"]), "wrong-ext", "an image inside an audio extension")
    add(_write(os.path.join(d, "wav_named.jpg"), valid[".wav"]), "wrong-ext", "audio inside an image extension")
    add(_write(os.path.join(d, "mp4_named.png"), valid[".mp4"]), "wrong-ext", "a video inside an image extension")
    add(_write(os.path.join(d, "png_named.jpg"), valid[".png"]), "wrong-ext", "an image under another image extension decodes fine")
    add(_write(os.path.join(d, "wav_named.mp4"), valid[".wav"]), "wrong-ext", "audio inside a video extension: no video stream")

    d = sub("bombs")
    add(_write(os.path.join(d, "bomb.png"), png_bytes(16384, 16384)), "bomb",
        "268 Mpixel PNG in a few hundred KB: refused before decoding")
    add(_write(os.path.join(d, "huge_header.jpg"), _jpeg_with_size(65000, 65000)), "huge-header")
    add(_write(os.path.join(d, "huge_header.png"), png_bytes(100000, 100000, rows=zlib.compress(b"\x00" * 64))),
        "huge-header")
    add(_write(os.path.join(d, "zero_size.png"), png_bytes(0, 0, rows=zlib.compress(b""))), "huge-header",
        "0x0 pixels")

    d = sub("video")
    zero = os.path.join(d, "zero_frames.mp4")
    _empty_video(zero)
    add(zero, "zero-frames")
    zero_mkv = os.path.join(d, "zero_frames.mkv")
    _empty_video(zero_mkv)
    add(zero_mkv, "zero-frames")
    add(_write(os.path.join(d, "lying_duration.mp4"), _patch_mp4_durations(valid[".mp4"], 36000)), "lying-duration",
        "claims 2 s x 36000; must not produce thousands of windows nor hang")
    no_video = os.path.join(d, "audio_only.mp4")
    _audio_only_container(no_video)
    add(no_video, "no-video-stream")

    d = sub("audio")
    nan = np.zeros(1600, dtype=np.float32)
    nan[100:200] = np.nan
    add(_write(os.path.join(d, "nan.wav"), crafted_wav(sample_rate=16000, bits=32, audio_format=3, data=nan.tobytes())),
        "nan-audio")
    inf = np.zeros(1600, dtype=np.float32)
    inf[5] = np.inf
    add(_write(os.path.join(d, "inf.wav"), crafted_wav(sample_rate=16000, bits=32, audio_format=3, data=inf.tobytes())),
        "nan-audio")
    add(_write(os.path.join(d, "zero_hz.wav"), crafted_wav(sample_rate=0)), "zero-rate")
    add(_write(os.path.join(d, "zero_channels.wav"), crafted_wav(sample_rate=16000, channels=0)), "zero-channels")
    add(_write(os.path.join(d, "lying_length.wav"), crafted_wav(sample_rate=16000, declared_data=1 << 30)),
        "truncated", "header declares 1 GiB of samples")
    add(_write(os.path.join(d, "no_samples.wav"), crafted_wav(sample_rate=16000, data=b"")), "empty-audio")

    d = sub("names")
    png = png_bytes(8, 8, colour_type=2)
    if non_utf8_name:
        bad_utf8 = os.path.join(os.fsencode(d), b"bad-\xff\xfe-name.png")
        _write(bad_utf8, png)  # type: ignore[arg-type]
        add(os.fsdecode(bad_utf8), "non-utf8-name",
            "valid image, but the index stores paths as UTF-8 text: reported with the name shown as \\xNN")
    long_name = os.path.join(d, ("l" * 236) + ".png")
    add(_write(long_name, png), "long-name", "240-byte file name")
    long_utf8 = os.path.join(d, ("é" * 110) + ".png")  # 220 bytes in UTF-8
    add(_write(long_utf8, png), "long-name")
    for name in ("new\nline.png", "quote'\"; DROP TABLE items; --.png", "-rf.png", "$(echo pwned).png", " space .png"):
        add(_write(os.path.join(d, name), png), "odd-name")
    deep = d
    for _ in range(30):  # a path longer than 4096 bytes? no: 30 x 100 = 3000 bytes, still openable
        deep = os.path.join(deep, "d" * 99)
    os.makedirs(deep, exist_ok=True)
    add(_write(os.path.join(deep, "deep.png"), png), "deep-path", "a ~3000-byte path")

    d = sub("links")
    a, b = os.path.join(d, "loop_a"), os.path.join(d, "loop_b")
    os.makedirs(a, exist_ok=True)
    os.symlink(os.path.join("..", "loop_b"), os.path.join(a, "to_b"))
    os.makedirs(b, exist_ok=True)
    os.symlink(os.path.join("..", "loop_a"), os.path.join(b, "to_a"))
    _write(os.path.join(a, "inside.png"), png)
    add(os.path.join(a, "inside.png"), "symlink-loop", "reached once, however many times the loop is followed")
    self_loop = os.path.join(d, "self.jpg")
    os.symlink("self.jpg", self_loop)
    add(self_loop, "symlink-loop", "a file symlink pointing at itself (ELOOP)")
    dangling = os.path.join(d, "dangling.wav")
    os.symlink("does-not-exist.wav", dangling)
    add(dangling, "dangling-link")

    extras: dict = {}
    if special_files:
        d = sub("special")
        fifo = os.path.join(d, "fifo.wav")
        os.mkfifo(fifo)
        add(fifo, "fifo", "opening it for reading would block forever")
        sock_path = os.path.join(d, "socket.png")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(sock_path)
            add(sock_path, "socket")
        except OSError:
            pass
        finally:
            s.close()
        os.makedirs(os.path.join(d, "folder.jpg"), exist_ok=True)
        locked = _write(os.path.join(d, "mode000.png"), png)
        os.chmod(locked, 0)
        root_note = "root reads mode-000 files: indexed when run as root, skipped otherwise"
        add(locked, "unreadable", root_note)
        locked_dir = os.path.join(d, "mode000_dir")
        os.makedirs(locked_dir, exist_ok=True)
        _write(os.path.join(locked_dir, "hidden.png"), png)
        os.chmod(locked_dir, 0)
        extras["locked_dir"] = locked_dir
        extras["locked_file"] = locked
        denied = _write_only_file()
        if denied is not None:
            link = os.path.join(d, "denied.png")
            os.symlink(denied, link)
            add(link, "unreadable", f"symlink to {denied}, write-only: reading it fails even for root")

    many_dir = None
    if many_files:
        many_dir = sub("many")
        exts = [".jpg", ".png", ".wav", ".mp4", ".gif", ".flac"]
        blobs = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF", b"\x00\x00\x00\x18ftyp", b"GIF89a", b"fLaC"]
        for i in range(many_files):
            k = i % len(exts)
            n = 1 + (i * 7) % 40
            data = (blobs[k] + bytes(rng.integers(0, 256, n, dtype=np.uint8)))[:n]
            with open(os.path.join(many_dir, f"f{i:05d}{exts[k]}"), "wb") as f:
                f.write(data)
    return HostileCorpus(root, tuple(files), many_dir, int(many_files), extras)
