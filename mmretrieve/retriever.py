"""The Retriever: one encoder, one unified index, search from any modality to any modality."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .duplicates import DEFAULT_DUPLICATE_THRESHOLD, DuplicateGroup, dedup_search, find_duplicates
from .embedding import (Embedded, Preparer, Sampling, Source, autocast, embed_sources, encode_texts, encode_windows,
                        file_hash, pool_windows, to_numpy)
from .errors import EncoderMismatchError, IndexCorruptError, MediaError
from .index import Hit, IndexBackend, TuningConfig, UnifiedIndex
from .indexing import AddReport, commit_files, write_files
from .media.video import VideoSampling
from .modality import Modality, modality_of_path, parse_modality
from .query import Arithmetic, AudioArray, Composed, Query, QueryLike, VideoArray, as_query, fuse

__all__ = ["Retriever", "AddReport", "AddPlan", "expand_inputs", "index_fingerprint", "recorded_weights",
           "searchable_modalities", "untrained_guard"]

_INDEX_FORMAT = "mmretrieve-index"


@dataclass(frozen=True)
class AddPlan:
    """Which sources need embedding; ``replacing`` are indexed files whose content changed."""

    to_embed: tuple[Source, ...]
    unchanged: tuple[str, ...]
    replacing: frozenset[str]


class Retriever:
    """Index media of every modality in one space and search it with text, files or composed queries."""

    def __init__(
        self,
        encoder,
        index: IndexBackend,
        *,
        sampling: Sampling,
        batch_size: int = 32,
        num_workers: int | None = None,
        weights_path: str | None = None,
    ):
        """Pair an encoder with an index; refuses (EncoderMismatchError) an index made by another
        encoder or with another sampling."""
        index.check_fingerprint(index_fingerprint(encoder, sampling, weights_path))
        self.weights_path = weights_path
        self.encoder = encoder
        self.index = index
        self.sampling = sampling
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._inversions: dict = {}

    @property
    def video_sampling(self) -> VideoSampling:
        """The video part of :attr:`sampling`."""
        return self.sampling.video

    @property
    def audio_window(self) -> float | None:
        """The audio window of :attr:`sampling` (seconds; None = one entry per recording)."""
        return self.sampling.audio_window

    # construction --------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        preset: str = "clip-vit-b32",
        *,
        path: str | os.PathLike | None = None,
        factory: str = "auto",
        tuning: TuningConfig | None = None,
        vector_dtype: str = "float32",
        device: str | None = None,
        pretrained: str | Mapping[str, str] | None = None,
        weights: str | None = None,
        video_head: str | None = None,
        video: VideoSampling | None = None,
        audio_window: float | None = ...,  # type: ignore[assignment]
        sampling: Sampling | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        make_index: Callable[[int, dict], IndexBackend] | None = None,
    ) -> "Retriever":
        """A new, empty retriever. ``path`` keeps the index on disk from the start (else in memory until ``save``).

        ``sampling`` replaces the preset's (``Sampling.from_preset(...).override(...)``); ``video``
        then overrides its frame sampling and window, ``audio_window`` its audio window in seconds
        (None = whole recording as one entry). The sampling is recorded in the index.
        ``weights`` is read from the current directory when relative, and recorded as an absolute path.
        ``factory`` ("auto" or a faiss factory string) and ``tuning`` (recall target, memory budget)
        choose the local index's structure; ``vector_dtype`` ("float32" or "float16": half the bytes on disk,
        every score rounded to float16) the precision the local index stores vectors in. ``make_index(dim, fingerprint)`` builds another index backend (an ``IndexBackend``, e.g. a
        Milvus collection) instead of a local one.
        """
        from .models import create_encoder

        if path is not None and os.path.exists(os.fspath(path)):
            raise FileExistsError(f"{os.fspath(path)}: an index already exists there; use Retriever.load(path)")
        if weights is not None:
            weights = os.path.abspath(os.path.expanduser(os.fspath(weights)))
        encoder = create_encoder(preset, device=device, pretrained=pretrained, weights=weights, video_head=video_head)
        chosen = (sampling or Sampling.from_preset(encoder.preset)).override(video=video)
        if audio_window is not ...:
            chosen = chosen.override(audio_window=audio_window)
        fingerprint = index_fingerprint(encoder, chosen, weights)
        if make_index is not None:
            index = make_index(encoder.dim, fingerprint)
        else:
            index = UnifiedIndex.create(encoder.dim, fingerprint, factory=factory, tuning=tuning,
                                        path=None if path is None else os.fspath(path), vector_dtype=vector_dtype)
        return cls(encoder, index, sampling=chosen, batch_size=batch_size, num_workers=num_workers, weights_path=weights)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        device: str | None = None,
        pretrained: str | None = None,
        readonly: bool = False,
        batch_size: int = 32,
        num_workers: int | None = None,
    ) -> "Retriever":
        """Open a saved index and rebuild the encoder that made it; refuses a different encoder.

        ``pretrained`` points at local weights when the original ones can't be downloaded; they must be
        the same weights (the fingerprint is checked). ``readonly`` opens without the writer lock.
        """
        index = UnifiedIndex.open(os.fspath(path), readonly=readonly)
        return cls.from_index(index, device=device, pretrained=pretrained, batch_size=batch_size, num_workers=num_workers)

    @classmethod
    def from_index(
        cls,
        index: IndexBackend,
        *,
        device: str | None = None,
        pretrained: str | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
    ) -> "Retriever":
        """A retriever over an opened index, with the encoder its fingerprint names (closes it on failure)."""
        from .models import create_encoder, preset_from_dict

        try:
            fp = index.fingerprint
            if fp.get("format") != _INDEX_FORMAT:
                raise EncoderMismatchError(f"{index.path}: not an mmretrieve retriever index (no encoder record)")
            try:  # a record of the wrong shape is damage, not a programming error
                enc_fp = fp["encoder"]
                preset, head = enc_fp["preset"], video_head_of(enc_fp)
                if fp.get("preset_definition") is not None:  # a preset file's definition, kept by the index
                    preset = preset_from_dict(fp["preset_definition"], f"{index.path}: the recorded preset")
                sampling = Sampling.from_record(fp)
            except (KeyError, TypeError, AttributeError, ValueError) as e:
                raise IndexCorruptError(f"{index.path}: the index's encoder record is malformed "
                                        f"({type(e).__name__}: {e})") from None
            encoder = create_encoder(preset, device=device, pretrained=pretrained,
                                     weights=recorded_weights(fp.get("weights_path")), video_head=head)
            return cls(
                encoder,
                index,
                sampling=sampling,
                batch_size=batch_size,
                num_workers=num_workers,
                weights_path=fp.get("weights_path"),
            )
        except BaseException:
            index.close()
            raise

    # writing ---------------------------------------------------------------------------------------
    def add(
        self,
        source: Any,
        *,
        modality: str | Modality | None = None,
        metadata: Mapping[str, Any] | None = None,
        recursive: bool = True,
        progress: bool = True,
        allow_untrained: bool = False,
    ) -> AddReport:
        """Add files, directories (recursively, by extension) or in-memory media.

        Strings and paths are files or directories; ``modality="text"`` indexes strings as text. Arrays and
        tensors need ``modality``; in-memory videos and recordings are ``VideoArray``/``AudioArray``. A
        changed file replaces its old entries; an unchanged one (same content hash) is skipped. A file that
        can't be decoded is reported in ``AddReport.failed`` and the rest goes on. Media of a modality whose
        tower is untrained (``encoder.untrained_modalities``) are skipped and reported, unless
        ``allow_untrained`` (for fine-tuning work).
        """
        mod = None if modality is None else parse_modality(modality)
        sources, failed = expand_inputs(source, mod, dict(metadata or {}), recursive)
        sources = untrained_guard(self.encoder, sources, failed, allow_untrained=allow_untrained)
        plan = self.plan(sources)
        results = embed_sources(
            self.encoder,
            plan.to_embed,
            sampling=self.sampling,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            progress=progress,
        )
        return commit_files(self.index, results, batch_size=self.batch_size, replacing=plan.replacing,
                            unchanged=plan.unchanged, failed=failed)

    def plan(self, sources: Sequence[Source]) -> AddPlan:
        """Decide what to embed: new files and changed ones; unchanged files (same content hash) are skipped."""
        to_embed: list[Source] = []
        unchanged: list[str] = []
        replacing: set[str] = set()
        seen: set[str] = set()
        for s in sources:
            if s.path is None:
                to_embed.append(s)
                continue
            if s.path in seen:
                continue
            seen.add(s.path)
            state = self.index.file_state(s.path)
            if state is not None:
                if self._unchanged(s.path, state):
                    unchanged.append(s.path)
                    continue
                replacing.add(s.path)
            to_embed.append(s)
        return AddPlan(tuple(to_embed), tuple(unchanged), frozenset(replacing))

    def write(self, items: Sequence[Embedded]) -> list[int]:
        """Store embedded files in ONE transaction (a changed file's old entries are replaced); returns ids.

        A crash loses at most this batch, never half a file.
        """
        return write_files(self.index, items)

    def _unchanged(self, path: str, state) -> bool:
        old_hash, old_mtime, old_size = state
        try:
            st = os.stat(path)
        except OSError:
            return False
        if old_mtime is not None and old_size is not None and st.st_mtime == old_mtime and st.st_size == old_size:
            return True
        if old_size is not None and st.st_size != old_size:
            return False
        try:
            return old_hash is not None and file_hash(path) == old_hash
        except OSError:
            return False

    def remove(self, target: int | str | os.PathLike | Iterable[int]) -> int:
        """Remove entries by id(s) or every entry of a file path; returns how many were removed."""
        if isinstance(target, (str, os.PathLike)):
            return self.index.remove_path(os.path.realpath(os.path.expanduser(os.fspath(target))))
        if isinstance(target, (int, np.integer)):
            return self.index.remove([int(target)])
        return self.index.remove([int(i) for i in target])

    def save(self, path: str | os.PathLike | None = None) -> None:
        """Persist atomically (to the index's own directory, or a snapshot at ``path``)."""
        self.index.save(None if path is None else os.fspath(path))

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "Retriever":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # reading ---------------------------------------------------------------------------------------
    def embed(self, query: QueryLike) -> np.ndarray:
        """The L2-normalised vector (D,) of any query: text, file, image, VideoArray, AudioArray, Composed, Arithmetic.

        A video or recording is embedded over all its windows, exactly as ``add`` indexes them, and
        pooled into one whole-file vector (``mmretrieve.embedding.pool_windows``: the mean of the
        normalised window vectors, renormalised) - the vector evaluation scores for that file.
        """
        q = as_query(query)
        if isinstance(q, Composed):
            return self._embed_inversion(q)
        if isinstance(q, Arithmetic):
            vecs = np.stack([self._embed_one(term) for _, term in q.terms])
            return fuse(vecs, [w for w, _ in q.terms])
        return self._embed_one(q)

    def inversion_network(self, source: Any = None):
        """The textual-inversion network for composed queries: ``source`` (a path or a network), or the one
        shipped for this index's preset; loaded once, checked against the encoder's text tower."""
        from .models.inversion import load_inversion, shipped_inversion

        cache = self._inversions
        key = os.fspath(source) if isinstance(source, os.PathLike) else source  # a network object keys by identity
        if key not in cache:
            net = shipped_inversion(self.encoder.preset.name) if source is None else load_inversion(source)
            net.check_encoder(self.encoder)
            cache[key] = net.to(self.encoder.device).eval()
        return cache[key]

    def _embed_inversion(self, q: Composed) -> np.ndarray:
        import torch

        from .models.inversion import reference_features

        net = self.inversion_network(q.inversion)
        ref = q.reference
        if net.config.input == "raw":
            if ref.modality is not Modality.IMAGE:
                raise ValueError(f"inversion network {net.source}: it takes raw image-tower features (Pic2Word), so "
                                 f"it composes image references only; for a {ref.modality.value} reference use one "
                                 f"trained on normalised vectors (mmretrieve train --recipe pic2word)")
            tensors = self._prepare(ref)
            with torch.inference_mode():
                vec = reference_features(self.encoder, torch.stack(list(tensors)[:1]), "raw")
        else:
            vec = torch.from_numpy(self._embed_one(ref)).unsqueeze(0)
        with torch.inference_mode():
            out = net.compose(self.encoder, vec.to(self.encoder.device), [q.text], q.template)
        return out[0].float().cpu().numpy()

    def _prepare(self, q: Query) -> list:
        value = q.value
        path = os.path.expanduser(os.fspath(value)) if isinstance(value, (str, os.PathLike)) else None
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: query file not found")
        source = Source(q.modality, path, None if path else value)
        prep = Preparer(self.encoder, self.sampling)(0, source)
        if prep.error is not None:
            raise MediaError(path, prep.error)
        return prep.tensors

    def _embed_one(self, q: Query) -> np.ndarray:
        import torch

        if q.modality is Modality.TEXT:
            with torch.inference_mode(), autocast(self.encoder.device):
                return to_numpy(encode_texts(self.encoder, [q.value]))[0]
        tensors = self._prepare(q)
        with torch.inference_mode(), autocast(self.encoder.device):
            vecs = encode_windows(self.encoder, q.modality, tensors, self.batch_size)
            return to_numpy(pool_windows(vecs))

    def search(
        self,
        query: QueryLike | Sequence[QueryLike],
        *,
        modality: str | Modality | Sequence[str | Modality] | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        dedup: float | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Top-``k`` hits for a query, or a list of hit lists for a list of queries.

        ``modality`` restricts the results (one or several); ``where`` filters on user metadata
        (``{"album": "2023"}``, a list value means any of). ``dedup=T`` drops hits at least cosine ``T``
        similar to a better hit (near-identical copies; see :mod:`mmretrieve.duplicates`).
        """
        if k < 1:
            raise ValueError(f"k={k} must be >= 1")
        batch = isinstance(query, list)
        queries = query if batch else [query]
        if not queries:
            return []
        vectors = np.stack([self.embed(q) for q in queries]).astype(np.float32)
        if dedup is None:
            results = self.index.search(vectors, k, modality=modality, where=where)
        else:
            results = dedup_search(self.index, vectors, k, dedup, modality=modality, where=where)
        return results if batch else results[0]

    def duplicates(self, threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
                   modality: str | Modality | Sequence[str | Modality] | None = None) -> list[DuplicateGroup]:
        """Groups of near-identical files (cosine >= ``threshold``), found by range search over the index."""
        return find_duplicates(self.index, threshold, modality)

    def info(self) -> dict:
        """What the index holds and which encoder made it."""
        fp = self.index.fingerprint
        return {
            "path": self.index.path,
            "preset": self.encoder.preset.name,
            "encoder_id": self.encoder.fingerprint_id(),
            "dim": self.index.dim,
            "factory": self.index.factory,
            "structure": self.index.structure(),
            "vector_dtype": getattr(self.index, "vector_dtype", "float32"),
            "counts": self.index.stats(),
            "files": len(self.index.paths()),
            "video_head": video_head_of(fp["encoder"]),
            "video_sampling": fp["video_sampling"],
            "audio_window": fp["audio_window"],
            "audio_trained": bool(self.encoder.audio_trained),
            "searchable": searchable_modalities(self.encoder),
            "device": str(self.encoder.device),
        }

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"Retriever(preset={self.encoder.preset.name!r}, entries={len(self.index)}, path={self.index.path!r})"


def searchable_modalities(encoder) -> list[str]:
    """Modalities whose vectors are meaningful in this encoder's space (towers it has, trained)."""
    untrained = set(getattr(encoder, "untrained_modalities", ()))
    has = set(getattr(encoder, "modalities", [m.value for m in Modality]))
    return [m.value for m in Modality if m.value in has and m.value not in untrained]


def untrained_guard(encoder, sources: Sequence[Source], failed: list[tuple[str, str]], *,
                    allow_untrained: bool = False) -> list[Source]:
    """Sources the encoder has a trained tower for; the others are appended to ``failed`` with the reason.

    A modality the encoder has no tower for is always refused; an untrained one unless ``allow_untrained``.
    """
    untrained = set() if allow_untrained else set(getattr(encoder, "untrained_modalities", ()))
    has = set(getattr(encoder, "modalities", [m.value for m in Modality]))
    name = encoder.preset.name
    kept = []
    for pos, s in enumerate(sources):
        m = s.modality.value
        if m not in has:
            failed.append((s.path or f"<in-memory #{pos}>",
                           f"preset {name} embeds {' and '.join(sorted(has))} only (no {m} tower); "
                           f"index {m} files with another preset, e.g. languagebind"))
        elif m in untrained:
            failed.append((s.path or f"<in-memory #{pos}>",
                           f"preset {name} has no trained {m} tower; use --preset languagebind, or train one "
                           f"(allow_untrained=True / --allow-untrained indexes it anyway)"))
        else:
            kept.append(s)
    return kept


def expand_inputs(source: Any, modality: Modality | None, meta: Mapping[str, Any], recursive: bool = True) -> tuple[list[Source], list[tuple[str, str]]]:
    """Sources for ``add``: folders walked (stable order, by extension), files, in-memory media, texts.

    Returns (sources, failed) where failed holds (path, reason) for inputs that can't be used.
    """
    sources: list[Source] = []
    failed: list[tuple[str, str]] = []
    if isinstance(source, (list, tuple)) and not (modality is not None and modality is not Modality.TEXT and _is_array(source)):
        for item in source:
            s, f = expand_inputs(item, modality, meta, recursive)
            sources += s
            failed += f
        return sources, failed
    if modality is Modality.TEXT:
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"modality='text' needs non-empty strings, got {type(source).__name__}")
        return [Source(Modality.TEXT, None, source, meta)], failed
    if isinstance(source, (str, os.PathLike)):
        path = os.path.realpath(os.path.expanduser(os.fspath(source)))
        if os.path.isdir(path):
            for file in _walk(path, recursive, failed):
                m = modality_of_path(file)
                if m is not None and (modality is None or m is modality):
                    if _undecodable(file):
                        failed.append((printable_path(file), _NOT_UTF8))
                    else:
                        sources.append(Source(m, file, None, meta))
            return sources, failed
        if not os.path.exists(path):
            raise FileNotFoundError(f"{printable_path(os.fspath(source))}: no such file or directory")
        m = modality or modality_of_path(path)
        if _undecodable(path):
            failed.append((printable_path(path), _NOT_UTF8))
        elif m is None:
            failed.append((path, "unknown media extension (say modality=... to force one)"))
        else:
            sources.append(Source(m, path, None, meta))
        return sources, failed
    if isinstance(source, VideoArray):
        return [Source(Modality.VIDEO, None, source, meta)], failed
    if isinstance(source, AudioArray):
        return [Source(Modality.AUDIO, None, source, meta)], failed
    from PIL import Image

    if isinstance(source, Image.Image) or (modality is Modality.IMAGE and _is_array(source)):
        return [Source(Modality.IMAGE, None, source, meta)], failed
    raise TypeError(
        f"cannot add a {type(source).__name__}: pass a path, a directory, a PIL image, an array with "
        "modality='image', VideoArray/AudioArray, or strings with modality='text'"
    )


_NOT_UTF8 = "file name is not valid UTF-8 (the index stores paths as text); rename the file to index it"


def _undecodable(path: str) -> bool:
    """True for a path whose bytes are not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable_path(path: str) -> str:
    """The path with undecodable bytes shown as \\xNN, safe to print and to store."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def video_head_of(encoder_fingerprint: Mapping[str, Any]) -> str | None:
    """The temporal head ("mean", "transformer") an encoder fingerprint records."""
    video = encoder_fingerprint.get("video")
    return video.get("head") if isinstance(video, Mapping) else None


def index_fingerprint(encoder, sampling: Sampling, weights_path: str | None = None) -> dict:
    """What an index records about how its vectors were made: the encoder, the sampling, the weights file,
    and the preset's whole definition when it came from a file (so the index reopens without that file)."""
    from .models import preset_record

    definition = preset_record(encoder.preset)
    return {
        "format": _INDEX_FORMAT,
        "encoder": encoder.fingerprint(),
        "encoder_id": encoder.fingerprint_id(),
        **sampling.record(),
        "weights_path": weights_path,
        **({"preset_definition": definition} if definition is not None else {}),
    }


def recorded_weights(weights_path: str | None) -> str | None:
    """The weights file an index's ``weights_path`` names. Indexes record absolute paths; a relative one
    comes from releases that read it inside the package, and is read there still."""
    if weights_path is None or os.path.isabs(os.path.expanduser(weights_path)):
        return weights_path
    return str(resources.files("mmretrieve").joinpath(weights_path))


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _walk(root: str, recursive: bool, failed: list) -> Iterable[str]:
    """Files below root in a stable order; unreadable folders are reported; symlink loops can't recur."""
    visited: set[tuple[int, int]] = set()

    def onerror(err: OSError) -> None:
        failed.append((printable_path(os.fspath(err.filename or root)), f"cannot list folder: {err.strerror or err}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            dirnames[:] = []
            continue
        visited.add(key)
        dirnames.sort()
        if not recursive:
            dirnames[:] = []
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)
