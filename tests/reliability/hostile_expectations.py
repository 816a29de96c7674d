"""What indexing must do with each file of the hostile corpus (mmretrieve.testing.make_hostile_corpus).

The corpus generator only writes files; the expected outcome of every one of them lives here, with
the tests: either INDEXED with an exact number of index entries, or SKIPPED with a reason matching a
pattern of the expected kind. Paths are relative to the (real) corpus root, as the AddReport shows
them (undecodable bytes as \\xNN). `check` compares a run against the table in both directions: a
path missing from the run, indexed twice, indexed where a skip was expected, skipped for the wrong
reason, or reported that the table does not list (a directory named like an image, a second path
through a symlink loop) is a problem.

Truncated files: a format without a length header may legitimately decode its first half. Which ones
do is a property of the decoders pinned by the lock (PyAV's FFmpeg, decord, libsndfile, Pillow); the
table states what they do, so a decoder upgrade that changes it shows up here.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

__all__ = ["Expect", "INDEXED", "expected_outcomes", "check", "outcomes_from_run"]


@dataclass(frozen=True)
class Expect:
    entries: int  # index entries expected for the path; 0 = skipped
    reason: str | None = None  # regex (re.search) the skip reason must match


INDEXED = Expect(1)  # every valid file of the corpus is short: one entry


def _skip(pattern: str) -> Expect:
    return Expect(0, pattern)


# reason kinds
EMPTY = _skip(r"^empty file \(0 bytes\)$")
NOT_REGULAR = _skip(r"^not a regular file \((FIFO|socket)\)")
TRUNCATED_SOUND = _skip(r"^truncated: header declares \d+ (bytes|samples), file (has|holds) \d+$")
TRUNCATED_IMAGE = _skip(r"^cannot decode image: truncated image data")
UNOPENABLE_IMAGE = _skip(r"^cannot open image: (Truncated File Read|could not create decoder object)$")
NOT_IMAGE = _skip(r"^not a recognised image format \(corrupt or not an image\)$")
BOMB = _skip(r"^refused as a possible decompression bomb: Image size \(\d+ pixels\) exceeds limit")
NOT_VIDEO = _skip(r"(^|pyav: )(cannot open video: |no video stream in file$)")
TRUNCATED_VIDEO = _skip(r"(^|pyav: )truncated or damaged: the header declares 16 frames, the file holds 1$")
NOT_AUDIO = _skip(r"^(cannot open audio: |no audio stream in file|audio stream has a sample rate of 0 Hz)")
CORRUPT_AUDIO = _skip(r"^corrupt audio data: ")
NON_FINITE = _skip(r"^audio contains NaN or infinite samples$")
NO_SAMPLES = _skip(r"^no audio samples \(empty\)$")
NOT_UTF8 = _skip(r"^file name is not valid UTF-8 \(the index stores paths as text\); rename the file")
NOT_FOUND = _skip(r"^cannot read file: No such file or directory$")
LOOP = _skip(r"^cannot read file: Too many levels of symbolic links$")
DENIED = _skip(r"^cannot read file: Permission denied$")
DENIED_FOLDER = _skip(r"^cannot list folder: Permission denied$")

_IMAGE_EXTS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
_VIDEO_EXTS = (".avi", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ogv", ".webm")
_AUDIO_EXTS = (".aif", ".aiff", ".flac", ".m4a", ".mp3", ".oga", ".ogg", ".opus", ".wav")

_HALF = {  # first half of a valid file
    ".aif": TRUNCATED_SOUND, ".aiff": TRUNCATED_SOUND, ".wav": TRUNCATED_SOUND, ".mp3": TRUNCATED_SOUND,
    ".flac": CORRUPT_AUDIO, ".m4a": NOT_AUDIO, ".oga": NOT_AUDIO, ".ogg": NOT_AUDIO, ".opus": NOT_AUDIO,
    ".bmp": TRUNCATED_IMAGE, ".gif": TRUNCATED_IMAGE, ".jpeg": TRUNCATED_IMAGE, ".jpg": TRUNCATED_IMAGE,
    ".png": TRUNCATED_IMAGE, ".tif": TRUNCATED_IMAGE, ".tiff": TRUNCATED_IMAGE, ".webp": UNOPENABLE_IMAGE,
    ".avi": TRUNCATED_VIDEO, ".m4v": NOT_VIDEO, ".mov": NOT_VIDEO, ".mp4": NOT_VIDEO, ".mpg": NOT_VIDEO,
    ".ogv": NOT_VIDEO,
    # streams without a length header: the first second of the clip decodes and is indexed
    ".mkv": INDEXED, ".mpeg": INDEXED, ".webm": INDEXED,
}
_HEADER_ONLY = {  # first 24 bytes of a valid file
    ".aif": TRUNCATED_SOUND, ".aiff": TRUNCATED_SOUND, ".wav": TRUNCATED_SOUND,
    ".flac": NOT_AUDIO, ".m4a": NOT_AUDIO, ".mp3": NOT_AUDIO, ".oga": NOT_AUDIO, ".ogg": NOT_AUDIO, ".opus": NOT_AUDIO,
    ".bmp": UNOPENABLE_IMAGE, ".jpeg": UNOPENABLE_IMAGE, ".jpg": UNOPENABLE_IMAGE, ".png": UNOPENABLE_IMAGE,
    ".webp": UNOPENABLE_IMAGE, ".gif": NOT_IMAGE, ".tif": NOT_IMAGE, ".tiff": NOT_IMAGE,
    **{ext: NOT_VIDEO for ext in _VIDEO_EXTS},
}

_FIXED = {
    "wrong_ext/text.png": NOT_IMAGE, "wrong_ext/text.jpg": NOT_IMAGE, "wrong_ext/text.mp4": NOT_VIDEO,
    "wrong_ext/text.webm": NOT_VIDEO, "wrong_ext/text.wav": NOT_AUDIO, "wrong_ext/text.flac": NOT_AUDIO,
    "wrong_ext/text.mp3": NOT_AUDIO, "wrong_ext/html.gif": NOT_IMAGE, "wrong_ext/random.tiff": NOT_IMAGE,
    "wrong_ext/png_named.mp3": NOT_AUDIO, "wrong_ext/wav_named.jpg": NOT_IMAGE,
    "wrong_ext/mp4_named.png": NOT_IMAGE, "wrong_ext/wav_named.mp4": NOT_VIDEO,
    "wrong_ext/png_named.jpg": INDEXED,  # a PNG under another image extension is a fine image
    "bombs/bomb.png": BOMB, "bombs/huge_header.jpg": BOMB, "bombs/huge_header.png": BOMB,
    "bombs/zero_size.png": NOT_IMAGE,
    "video/zero_frames.mp4": NOT_VIDEO, "video/zero_frames.mkv": NOT_VIDEO, "video/audio_only.mp4": NOT_VIDEO,
    "video/lying_duration.mp4": INDEXED,  # claims ten hours, holds two seconds: one window
    "audio/nan.wav": NON_FINITE, "audio/inf.wav": NON_FINITE, "audio/zero_hz.wav": NOT_AUDIO,
    "audio/zero_channels.wav": CORRUPT_AUDIO, "audio/lying_length.wav": TRUNCATED_SOUND,
    "audio/no_samples.wav": NO_SAMPLES,
    # valid tiny PNGs under hostile names: all indexed, once each
    "names/bad-\\xff\\xfe-name.png": NOT_UTF8,
    "names/" + "l" * 236 + ".png": INDEXED, "names/" + "é" * 110 + ".png": INDEXED,
    "names/new\nline.png": INDEXED, "names/quote'\"; DROP TABLE items; --.png": INDEXED, "names/-rf.png": INDEXED,
    "names/$(echo pwned).png": INDEXED, "names/ space .png": INDEXED,
    "names/" + "/".join(["d" * 99] * 30) + "/deep.png": INDEXED,
    # the loop loop_a/to_b -> loop_b/to_a -> loop_a is walked once: inside.png under one path only
    "links/loop_a/inside.png": INDEXED, "links/self.jpg": LOOP, "links/dangling.wav": NOT_FOUND,
    "special/fifo.wav": NOT_REGULAR, "special/socket.png": NOT_REGULAR,
    # special/folder.jpg is a directory: neither indexed nor reported
}


def expected_outcomes(corpus, *, many: bool = True) -> dict[str, Expect]:
    """relative path -> Expect, for the corpus as written on this machine (root or not, sysfs or not)."""
    out = dict(_FIXED)
    for ext in _IMAGE_EXTS + _VIDEO_EXTS + _AUDIO_EXTS:
        out[f"truncated/half{ext}"] = _HALF[ext]
        out[f"truncated/header_only{ext}"] = _HEADER_ONLY[ext]
        out[f"empty/zero{ext}"] = EMPTY
    written = {os.path.relpath(f.path, corpus.root) for f in corpus.files}
    if "special/socket.png" not in written:  # binding a UNIX socket can fail (path length, filesystem)
        del out["special/socket.png"]
    if "names/bad-\udcff\udcfe-name.png" not in written:
        del out["names/bad-\\xff\\xfe-name.png"]
    if "special/mode000.png" in written:
        root = os.geteuid() == 0  # root reads mode-000 files and folders
        out["special/mode000.png"] = INDEXED if root else DENIED
        out["special/mode000_dir" + ("/hidden.png" if root else "")] = INDEXED if root else DENIED_FOLDER
    if "special/denied.png" in written:  # a link to a write-only sysfs file: unreadable even for root
        out["special/denied.png"] = DENIED
    if many and corpus.many_dir:
        for name in os.listdir(corpus.many_dir):  # 1-40 bytes of junk after a media signature
            ext = os.path.splitext(name)[1]
            kind = _JUNK_IMAGE if ext in _IMAGE_EXTS else NOT_VIDEO if ext in _VIDEO_EXTS else _JUNK_AUDIO
            out[f"many/{name}"] = kind
    return out


# a signature followed by random bytes can also declare absurd sizes or stop mid-header
_JUNK_IMAGE = _skip(r"^(not a recognised image format|cannot open image: |cannot decode image: |"
                    r"refused as a possible decompression bomb: )")
_JUNK_AUDIO = _skip(r"^(cannot open audio: |corrupt audio data: |no audio stream in file|"
                    r"audio stream has a sample rate of 0 Hz|truncated: )")


def outcomes_from_run(root: str, entries_per_path: dict[str, int], failed: list[tuple[str, str]]) -> tuple[dict, list[str]]:
    """(relative path -> (entries, [reasons])) from a run, and problems found while collecting it."""
    real_root = os.path.realpath(root)
    got: dict[str, tuple[int, list[str]]] = {}
    problems = []
    for path, n in entries_per_path.items():
        got[os.path.relpath(path, real_root)] = (n, [])
    for path, reason in failed:
        rel = os.path.relpath(path, real_root)
        n, reasons = got.get(rel, (0, []))
        if n:
            problems.append(f"{rel!r}: indexed ({n} entries) AND reported as skipped ({reason})")
        got[rel] = (n, reasons + [reason])
    return got, problems


def check(expected: dict[str, Expect], got: dict[str, tuple[int, list[str]]]) -> list[str]:
    """Every difference between a run and the table, one line each (empty when the run is exact)."""
    problems = []
    for rel, want in sorted(expected.items()):
        if rel not in got:
            problems.append(f"{rel!r}: neither indexed nor reported (expected "
                            f"{'%d entries' % want.entries if want.entries else 'a skip: ' + str(want.reason)})")
            continue
        n, reasons = got[rel]
        if want.entries:
            if n != want.entries or reasons:
                problems.append(f"{rel!r}: expected {want.entries} entries, got {n}"
                                + (f" and skips {reasons}" if reasons else ""))
        elif n:
            problems.append(f"{rel!r}: expected a skip ({want.reason}), was indexed with {n} entries")
        elif len(reasons) != 1:
            problems.append(f"{rel!r}: expected one skip report, got {len(reasons)}: {reasons}")
        elif not re.search(want.reason, reasons[0]):
            problems.append(f"{rel!r}: skip reason {reasons[0]!r} is not of the expected kind {want.reason!r}")
    for rel in sorted(set(got) - set(expected)):
        problems.append(f"{rel!r}: not in the corpus table, but the run reports {got[rel]}")
    return problems
