"""Webdataset-style tar shards, read with the standard library (the ``webdataset`` package is not needed).

A shard is a tar file whose members are grouped into samples by key: ``<key>.<ext>`` where the key is the
member name up to the first dot of its base name (``dir/000123.jpg`` and ``dir/000123.txt`` form sample
``dir/000123``), members of one sample being adjacent. Per sample (see datasets/shards.md):

- one media member with an image, video or audio extension (``jpg``, ``mp4``, ``flac``, ...);
- captions from ``txt`` (one caption per non-empty line) and/or ``json`` (``caption`` string,
  ``captions`` list or ``text``; the other keys become metadata).

Patterns use webdataset's brace notation (``shards-{0000..0099}.tar``, ``{train,val}.tar``), shell globs,
or a list of those.
"""
from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from typing import Iterator, Sequence

from mmretrieve.modality import modality_of_path

from .common import DatasetError, Sample

__all__ = ["ShardSample", "ShardReader", "read_shards", "expand_pattern"]

_BRACE = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class ShardSample(Sample):
    """A sample read from a shard. ``path`` is ``<shard>#<member>`` unless extracted to disk; ``data``
    holds the media bytes (empty after extraction, when ``path`` is a real file)."""

    data: bytes = b""
    shard: str = ""
    member: str = ""

    def open(self) -> io.BufferedIOBase:
        """A binary file object over the media (the bytes in memory, or the extracted file)."""
        return io.BytesIO(self.data) if self.data else open(self.path, "rb")


def expand_pattern(pattern: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Expand braces (``{000..012}`` with zero padding kept, ``{a,b}``) then globs; order is preserved."""
    if not isinstance(pattern, (str, os.PathLike)):
        out: list[str] = []
        for p in pattern:
            out.extend(expand_pattern(p))
        return out
    pattern = os.fspath(pattern)
    m = _BRACE.search(pattern)
    if m is None:
        if any(ch in pattern for ch in "*?["):
            return sorted(glob.glob(pattern))
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        step = 1 if int(hi) >= int(lo) else -1
        parts = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    else:
        parts = body.split(",")
    out = []
    for part in parts:
        out.extend(expand_pattern(pattern[: m.start()] + part + pattern[m.end():]))
    return out


def _split_member(name: str) -> tuple[str, str] | None:
    directory, base = os.path.split(name)
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    return (os.path.join(directory, stem) if directory else stem), ext.lower()


class ShardReader:
    """Iterable over the samples of shards; ``skipped`` lists (what, reason) for samples left out."""

    def __init__(self, shards: list[str], *, skip_missing: bool, extract_to: str | None):
        self.shards = shards
        self.skip_missing = skip_missing
        self.extract_to = extract_to
        self.skipped: list[tuple[str, str]] = []
        self._stream: Iterator[ShardSample] | None = None

    def __iter__(self) -> Iterator[ShardSample]:
        """A fresh pass over all shards."""
        for shard in self.shards:
            yield from self._read_shard(shard)

    def __next__(self) -> ShardSample:
        """``next(reader)`` continues one shared pass, so the reader also works as an iterator."""
        if self._stream is None:
            self._stream = iter(self)
        return next(self._stream)

    def _read_shard(self, shard: str) -> Iterator[ShardSample]:
        try:
            tar = tarfile.open(shard, mode="r|*")  # streaming: members are read in order
        except (tarfile.TarError, OSError) as e:
            self._problem(shard, f"not a readable tar file ({e})")
            return
        key: str | None = None
        group: dict[str, tuple[str, bytes]] = {}
        try:
            with tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    split = _split_member(member.name)
                    if split is None:
                        continue
                    k, ext = split
                    f = tar.extractfile(member)
                    data = f.read() if f is not None else b""
                    if k != key and group:
                        sample = self._make(shard, key, group)
                        if sample is not None:
                            yield sample
                        group = {}
                    key = k
                    group[ext] = (member.name, data)
        except (tarfile.TarError, OSError, EOFError) as e:
            self._problem(shard, f"truncated or corrupt tar ({e})")
            return
        if group:
            sample = self._make(shard, key, group)
            if sample is not None:
                yield sample

    def _problem(self, what: str, reason: str) -> None:
        if not self.skip_missing:
            raise DatasetError(f"shards {what}", [f"{what}: {reason}"],
                               "Pass skip_missing=True to skip such samples (they are listed in .skipped).")
        self.skipped.append((what, reason))

    def _make(self, shard: str, key: str, group: dict[str, tuple[str, bytes]]) -> ShardSample | None:
        where = f"{shard}#{key}"
        media = None
        for ext, (name, data) in group.items():
            modality = modality_of_path("x." + ext.rsplit(".", 1)[-1])
            if modality is not None:
                if media is not None:
                    self._problem(where, f"more than one media member ({media[1]}, {name})")
                    return None
                media = (modality, name, data)
        captions: list[str] = []
        metadata: dict = {}
        if "txt" in group:
            try:
                text = group["txt"][1].decode("utf-8")
            except UnicodeDecodeError:
                self._problem(where, "txt member is not UTF-8")
                return None
            captions.extend(line.strip() for line in text.splitlines() if line.strip())
        if "json" in group:
            try:
                obj = json.loads(group["json"][1].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                self._problem(where, f"json member is not valid UTF-8 JSON ({e})")
                return None
            if not isinstance(obj, dict):
                self._problem(where, "json member is not an object")
                return None
            for k, v in obj.items():
                if k in ("caption", "text") and isinstance(v, str):
                    captions.append(v.strip())
                elif k == "captions" and isinstance(v, list):
                    captions.extend(str(c).strip() for c in v)
                else:
                    metadata[k] = v
        captions = [c for i, c in enumerate(captions) if c and c not in captions[:i]]
        if media is None:
            self._problem(where, f"no image, video or audio member (found: {', '.join(sorted(group))})")
            return None
        if not captions:
            self._problem(where, "no caption (txt, or json caption/captions/text)")
            return None
        modality, name, data = media
        path = f"{shard}#{name}"
        if self.extract_to is not None:
            root = os.path.abspath(self.extract_to)
            path = os.path.abspath(os.path.join(root, name))
            if os.path.commonpath([root, path]) != root:
                self._problem(where, f"member name {name!r} would be written outside extract_to")
                return None
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            data = b""
        return ShardSample(path=path, modality=modality, captions=tuple(captions), item_id=key,
                           metadata=metadata, data=data, shard=shard, member=name)


def read_shards(
    pattern: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    skip_missing: bool = False,
    extract_to: str | os.PathLike | None = None,
) -> ShardReader:
    """Samples of webdataset-style tar shards, streamed in shard order.

    Missing shard files raise DatasetError at once, listing all of them. Bad samples (no media, no
    caption, undecodable captions, corrupt tar) raise DatasetError when reached, or with
    ``skip_missing`` are skipped and recorded in ``reader.skipped``. ``extract_to``: write each media
    member to this folder so ``sample.path`` is a real file (video/audio decoders want files).
    """
    shards = expand_pattern(pattern)
    label = os.fspath(pattern) if isinstance(pattern, (str, os.PathLike)) else f"{len(shards)} patterns"
    if not shards:
        raise DatasetError(f"shards {label}", [f"pattern {label!r} matches no file"])
    missing = [s for s in shards if not os.path.isfile(s)]
    if missing:
        raise DatasetError(f"shards {label}", [f"{s}: shard file not found" for s in missing])
    out = None if extract_to is None else os.fspath(extract_to)
    if out is not None:
        os.makedirs(out, exist_ok=True)
    return ShardReader(shards, skip_missing=skip_missing, extract_to=out)
