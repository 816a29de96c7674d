"""Webdataset-style tar shards, read with the standard library (the ``webdataset`` package is not needed).

A shard is a tar file whose members are grouped into samples by key: ``<key>.<ext>`` where the key is the
member name up to the first dot of its base name (``dir/000123.jpg`` and ``dir/000123.txt`` form sample
``dir/000123``), members of one sample being adjacent. Per sample (see datasets/shards.md):

- one media member with an image, video or audio extension (``jpg``, ``mp4``, ``flac``, ...);
- captions from ``txt`` (one caption per non-empty line) and/or ``json`` (``caption`` string,
  ``captions`` list or ``text``; the other keys become metadata).

Patterns use webdataset's brace notation (``shards-{0000..0099}.tar``, ``{train,val}.tar``), shell globs,
or a list of those.

Two ways in: :func:`read_shards` streams samples with their media bytes (any tar, also compressed);
:func:`index_shards` reads only the tar headers and the caption members and records where each media
member's bytes lie (``offset``/``size``), so a sample's media is read later with one seek - random
access for training (``data.kind: shards``) without extracting anything. Indexing needs uncompressed tars.
"""
from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from mmretrieve.errors import MediaError
from mmretrieve.modality import modality_of_path

from .common import Dataset, DatasetError, Sample

__all__ = ["ShardSample", "ShardReader", "read_shards", "index_shards", "expand_pattern"]

_COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip"), (b"BZh", "bzip2", "bunzip2"),
               (b"\xfd7zXZ\x00", "xz", "unxz"), (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"))
_SKIP_HINT = "Pass skip_missing=True to skip such samples (they are listed in .skipped)."

_BRACE = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class ShardSample(Sample):
    """A sample read from a shard. ``path`` is ``<shard>#<member>`` unless extracted to disk (so errors
    name the shard and the member). The media is found in one of three ways:

    - ``data``: the bytes themselves (read_shards);
    - ``offset``: where the member's bytes start in the (uncompressed) tar file ``shard`` (index_shards;
      -1 otherwise) - ``size`` bytes read on demand with one seek;
    - ``path`` is a real file (read_shards with ``extract_to``; ``data`` is then empty).
    """

    data: bytes = b""
    shard: str = ""
    member: str = ""
    offset: int = -1
    size: int = 0  # the media member's size in bytes

    @property
    def ext(self) -> str:
        """The media member's extension, lower case, without the dot (``jpg``, ``flac``)."""
        return os.path.splitext(self.member or self.path)[1][1:].lower()

    @property
    def in_shard(self) -> bool:
        """True when the media comes from the shard (bytes held or indexed), False for an extracted file."""
        return bool(self.data) or self.offset >= 0

    def read_bytes(self) -> bytes:
        """The media bytes: held, read from the shard at ``offset`` (one seek), or the extracted file's.

        A shard that is gone or shorter than indexed raises MediaError naming ``<shard>#<member>``.
        """
        if self.data:
            return self.data
        if self.offset < 0:
            with open(self.path, "rb") as f:
                return f.read()
        try:
            with open(self.shard, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except OSError as e:
            raise MediaError(self.path, f"cannot read the member from its shard: {e}") from None
        if len(data) != self.size:
            raise MediaError(self.path, f"truncated shard: the member has {len(data)} of its {self.size} bytes "
                                        f"(the shard changed since it was indexed?)")
        return data

    def open(self) -> io.BufferedIOBase:
        """A binary file object over the media (the bytes in memory, or the extracted file)."""
        return io.BytesIO(self.read_bytes()) if self.in_shard else open(self.path, "rb")


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

    def __init__(self, shards: list[str], *, skip_missing: bool, extract_to: str | None, index: bool = False):
        self.shards = shards
        self.skip_missing = skip_missing
        self.extract_to = extract_to
        self.index = index  # read headers and captions only; samples carry offset/size instead of data
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
        if self.index:
            yield from self._index_shard(shard)
            return
        try:
            tar = tarfile.open(shard, mode="r|*")  # streaming: members are read in order
        except (tarfile.TarError, OSError) as e:
            self._problem(shard, f"not a readable tar file ({e})")
            return
        key: str | None = None
        group: dict[str, tuple[str, bytes]] = {}
        try:
            with tar:
                for member, k, ext in _keyed_members(tar):
                    f = tar.extractfile(member)
                    data = f.read() if f is not None else b""
                    if k != key and group:
                        sample = self._make(shard, key, group)
                        if sample is not None:
                            yield sample
                        group = {}
                    key = k
                    group[ext] = (member.name, data)
                end = tar.offset
                garbage = _nonzero_after(tar.fileobj, None)  # the stream goes on from the end marker
        except (tarfile.TarError, OSError, EOFError) as e:
            self._problem(shard, f"truncated or corrupt tar ({e})")
            return
        if garbage is not None:  # tarfile ends an archive quietly at an unreadable header
            self._problem(shard, f"corrupt tar: unreadable header at byte {end}; the members after it are not read")
        if group:
            sample = self._make(shard, key, group)
            if sample is not None:
                yield sample

    def _index_shard(self, shard: str) -> Iterator[ShardSample]:
        """Random-access pass: tar headers and caption members are read, media members only located."""
        try:
            size = os.path.getsize(shard)
            tar = tarfile.open(shard, mode="r:")  # uncompressed only: members are read in place
        except (tarfile.TarError, OSError) as e:
            try:
                with open(shard, "rb") as f:
                    magic = f.read(6)
            except OSError:
                magic = b""
            for prefix, kind, tool in _COMPRESSED:
                if magic.startswith(prefix):
                    self._problem(shard, f"{kind}-compressed tar: training reads each member in place at its "
                                         f"offset, which needs an uncompressed tar (decompress it first, e.g. "
                                         f"with {tool})")
                    return
            self._problem(shard, f"not a readable tar file ({e})")
            return
        key: str | None = None
        group: dict[str, tuple[str, bytes, int, int]] = {}
        with tar:
            try:
                for member, k, ext in _keyed_members(iter(tar.next, None)):
                    if k != key and group:
                        sample = self._make(shard, key, group)
                        if sample is not None:
                            yield sample
                        group = {}
                    key = k
                    if member.offset_data + member.size > size:
                        self._problem(f"{shard}#{k}", f"truncated: member {member.name} needs bytes up to "
                                                      f"{member.offset_data + member.size}, the shard has {size}")
                        return
                    data = b""
                    if ext in ("txt", "json"):
                        f = tar.extractfile(member)
                        data = f.read() if f is not None else b""
                    group[ext] = (member.name, data, member.offset_data, member.size)
                end = tar.offset
            except (tarfile.TarError, OSError, EOFError) as e:
                self._problem(shard, f"truncated or corrupt tar ({e})")
                return
            garbage = _nonzero_after(tar.fileobj, end)
        if garbage is not None:
            # tarfile ends an archive quietly at an unreadable header: don't lose the rest silently
            self._problem(shard, f"corrupt tar: unreadable header at byte {end} (non-zero data at byte {garbage}); "
                                 f"the members after it are not read")
        if group:
            sample = self._make(shard, key, group)
            if sample is not None:
                yield sample

    def _problem(self, what: str, reason: str) -> None:
        if not self.skip_missing:
            raise DatasetError(f"shards {what}", [f"{what}: {reason}"], _SKIP_HINT)
        self.skipped.append((what, reason))

    def _make(self, shard: str, key: str, group: dict[str, tuple]) -> ShardSample | None:
        """A sample from one key's members: ext -> (name, bytes) streamed, or (name, bytes, offset, size)
        indexed (bytes only for captions)."""
        where = f"{shard}#{key}"
        media = None
        for ext, entry in group.items():
            modality = modality_of_path("x." + ext.rsplit(".", 1)[-1])
            if modality is not None:
                if media is not None:
                    self._problem(where, f"more than one media member ({media[1]}, {entry[0]})")
                    return None
                media = (modality, *entry)
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
        modality, name, data, *location = media
        offset, size = location if location else (-1, len(data))
        if size == 0:
            self._problem(where, f"empty media member {name} (0 bytes)")
            return None
        path = f"{shard}#{name}"
        if self.extract_to is not None and not location:
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
                           metadata=metadata, data=data, shard=shard, member=name, offset=offset, size=size)


def _keyed_members(members: Iterable[tarfile.TarInfo]) -> Iterator[tuple[tarfile.TarInfo, str, str]]:
    """(member, sample key, extension) for the regular files named ``<key>.<ext>``, in tar order."""
    for member in members:
        if member.isfile():
            split = _split_member(member.name)
            if split is not None:
                yield member, split[0], split[1]


def _nonzero_after(fileobj, offset: int | None, chunk: int = 1 << 16) -> int | None:
    """Position of the first non-zero byte at or after ``offset`` (None: only the end-of-archive zeros).
    ``offset=None`` reads on from where a stream is (a streamed, possibly compressed tar)."""
    if offset is not None:
        fileobj.seek(offset)
    pos = offset or 0
    while True:
        block = fileobj.read(chunk)
        if not block:
            return None
        stripped = block.lstrip(b"\0")
        if stripped:
            return pos + len(block) - len(stripped)
        pos += len(block)


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
    shards, _ = _shard_files(pattern)
    out = None if extract_to is None else os.fspath(extract_to)
    if out is not None:
        os.makedirs(out, exist_ok=True)
    return ShardReader(shards, skip_missing=skip_missing, extract_to=out)


def _shard_files(pattern) -> tuple[list[str], str]:
    """The shard files a pattern names, and a label; DatasetError lists every missing one."""
    shards = expand_pattern(pattern)
    label = os.fspath(pattern) if isinstance(pattern, (str, os.PathLike)) else f"{len(shards)} patterns"
    if not shards:
        raise DatasetError(f"shards {label}", [f"pattern {label!r} matches no file"])
    missing = [s for s in shards if not os.path.isfile(s)]
    if missing:
        raise DatasetError(f"shards {label}", [f"{s}: shard file not found" for s in missing])
    return shards, label


def index_shards(
    pattern: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    skip_missing: bool = False,
) -> Dataset:
    """Index webdataset-style tar shards for random access, without reading (or extracting) media.

    Each sample is a :class:`ShardSample` whose ``path`` is ``<shard>#<member>`` (the shard's absolute
    path) and whose ``offset``/``size`` locate the media member's bytes in the tar
    (``TarInfo.offset_data`` / ``.size``); ``sample.read_bytes()`` reads them with one seek. Only tar
    headers and ``txt``/``json`` members are read. Shards must be uncompressed tars.

    Problems are listed all at once like the other readers: missing shard files (always fatal);
    compressed, truncated or corrupt shards, samples without media, with an unknown media extension,
    with an empty media member, more than one media member, or without captions raise one DatasetError
    naming every ``<shard>#<key>``; with ``skip_missing`` those are left out and listed in
    ``Dataset.skipped``. Corrupt media *bytes* are only seen when decoded (MediaError naming
    ``<shard>#<member>``).
    """
    shards, label = _shard_files(pattern)
    reader = ShardReader([os.path.abspath(s) for s in shards], skip_missing=True, extract_to=None, index=True)
    samples = tuple(reader)
    if reader.skipped and not skip_missing:
        raise DatasetError(f"shards {label}", [f"{what}: {reason}" for what, reason in reader.skipped],
                           "Pass skip_missing=True (data.skip_missing: true) to leave these samples out; "
                           "they are then listed in Dataset.skipped.")
    return Dataset(name=f"shards {label}", split="shards", samples=samples, skipped=tuple(reader.skipped))
