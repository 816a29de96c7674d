"""Embedding on a Ray cluster with Ray Data: reader -> prepare (map tasks) -> encode (actor pool) -> writer.

- reader: the driver lists inputs with the Retriever's own walking and extension rules.
- prepare: stateless Ray Data map tasks run :class:`~mmretrieve.embedding.Preparer` (decode, sample
  frames/windows, preprocess) and emit one row per window (tensor bytes + shape).
- encode: an actor pool; each actor builds the encoder ONCE from the preset name and weights and
  encodes batches of windows with ``mmretrieve.embedding.encode_windows`` (grouped by modality, the
  same batching rules as ``Retriever.add``).
- writer: the driver is the single writer; it reassembles each file's windows and hands the files to
  ``Retriever.add``'s own commit loop (:func:`mmretrieve.indexing.commit_files`: batches of whole
  files, one ``index.batch()`` transaction each).

The same stages run on a laptop (``ray.init()`` local) or a cluster (``address="ray://..."`` or
``"auto"``); nothing here starts or manages a cluster. Vectors equal ``Retriever.add``'s up to float
rounding of different batch compositions (deterministic preprocessing, eval-mode towers).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import EncoderMismatchError
from ..indexing import AddReport, commit_files
from ..modality import Modality
from ..embedding import (Embedded, Failure, Preparer, Sampling, Source, autocast, encode_texts, encode_windows,
                         to_numpy)

__all__ = ["embed_with_ray", "embed_dataset", "index_with_ray", "RayIndexReport"]


@dataclass(frozen=True)
class RayIndexReport:
    """What ``index_with_ray`` did: the AddReport plus throughput figures."""

    report: AddReport
    seconds: float
    files_per_second: float


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("embedding with Ray needs Ray Data: pip install 'mmretrieve[ray]'") from None
    return ray


def _init_ray(address: str | None) -> None:
    ray = _require_ray()
    if not ray.is_initialized():
        # address None: a local Ray (or the cluster named by RAY_ADDRESS); left running for later calls
        ray.init(address=address, include_dashboard=False, log_to_driver=False)


# ------------------------------------------------------------------------------------------ reader
def _list_sources(inputs: Any, modality: Any, metadata: Mapping | None, recursive: bool):
    """Sources and (path, reason) failures, by Retriever.add's rules (folders walked, modality by extension)."""
    from ..modality import parse_modality
    from ..retriever import expand_inputs

    mod = None if modality is None else parse_modality(modality)
    sources, failed = expand_inputs(inputs, mod, dict(metadata or {}), recursive)
    for s in sources:
        if s.path is None and s.modality is not Modality.TEXT:
            raise TypeError("embedding with Ray takes files, folders and strings with modality='text'; "
                            "add in-memory images, videos and recordings with Retriever.add")
    return sources, failed


def _local_path(value: str | None, *, file_only: bool = False) -> str | None:
    """A user's local path made absolute for actors, whose working directory is not the driver's
    (``file_only``: always a path; otherwise only when it exists here, so tags pass through)."""
    if value is None:
        return None
    path = os.path.expanduser(os.fspath(value))
    return os.path.abspath(path) if file_only or os.path.exists(path) else value


# ------------------------------------------------------------------------------------------ prepare
_NAN = float("nan")


def _opt(value: float | None) -> float:
    return _NAN if value is None else float(value)


class _Prepare:
    """Ray Data flat_map stage: one source row -> one row per window (or one error row)."""

    def __init__(self, preparer: Preparer):
        self.preparer = preparer

    def __call__(self, row: dict) -> list[dict]:
        modality = Modality(row["modality"])
        base = {"position": int(row["position"]), "path": row["path"], "modality": modality.value,
                "text": row["text"], "content_hash": "", "mtime": _NAN, "size": -1, "error": "",
                "start": _NAN, "end": _NAN, "window": 0, "n_windows": 1, "data": b"", "shape": [0]}
        if modality is Modality.TEXT:
            return [base]
        import torch

        torch.set_num_threads(1)
        prep = self.preparer(int(row["position"]), Source(modality, row["path"] or None))
        base.update(content_hash=prep.content_hash or "", mtime=_opt(prep.mtime),
                    size=-1 if prep.size is None else int(prep.size))
        if prep.error is not None:
            return [{**base, "error": prep.error}]
        out = []
        for w, (tensor, (start, end)) in enumerate(zip(prep.tensors, prep.windows)):
            arr = tensor.detach().cpu().numpy().astype(np.float32, copy=False)
            out.append({**base, "start": _opt(start), "end": _opt(end), "window": w,
                        "n_windows": len(prep.tensors), "data": arr.tobytes(), "shape": list(arr.shape)})
        return out


# ------------------------------------------------------------------------------------------ encode
class _Encode:
    """Ray Data actor: builds the encoder once, then encodes batches of prepared windows."""

    def __init__(self, preset: str, weights: str | None, pretrained: str | None, video_head: str | None,
                 device: str | None, batch_size: int):
        from ..models import create_encoder

        self.encoder = create_encoder(preset, device=device, pretrained=pretrained, weights=weights,
                                      video_head=video_head)
        self.encoder_id = self.encoder.fingerprint_id()
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        n = len(batch["position"])
        vectors = np.zeros((n, self.encoder.dim), np.float32)
        groups: dict[str, list[int]] = {}
        for i in range(n):
            if not batch["error"][i]:
                groups.setdefault(str(batch["modality"][i]), []).append(i)
        with torch.inference_mode(), autocast(self.encoder.device):
            for name, rows in groups.items():
                m = Modality(name)
                if m is Modality.TEXT:
                    vecs = encode_texts(self.encoder, [str(batch["text"][i]) for i in rows], self.batch_size)
                else:
                    tensors = [torch.from_numpy(np.frombuffer(batch["data"][i], dtype=np.float32)
                                                .reshape([int(d) for d in batch["shape"][i]]).copy()) for i in rows]
                    vecs = encode_windows(self.encoder, m, tensors, self.batch_size)
                vectors[rows] = to_numpy(vecs)
        out = {k: v for k, v in batch.items() if k not in ("data", "shape")}
        out["vector"] = vectors
        out["encoder_id"] = np.array([self.encoder_id] * n, dtype=object)
        return out


# ------------------------------------------------------------------------------------------ runner
def _build(sources: list[Source], preparer: Preparer, *, preset: str, weights: str | None,
           pretrained: str | None, video_head: str | None, device: str | None, num_actors: int,
           batch_size: int, num_cpus_per_actor: float, num_gpus_per_actor: float):
    import ray.data

    items = [{"position": i, "path": s.path or "", "modality": s.modality.value,
              "text": str(s.value) if s.modality is Modality.TEXT else ""} for i, s in enumerate(sources)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 256)))
    ds = ds.flat_map(_Prepare(preparer))
    return ds.map_batches(
        _Encode,
        fn_constructor_kwargs={"preset": preset, "weights": weights, "pretrained": pretrained,
                               "video_head": video_head, "device": device, "batch_size": batch_size},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus_per_actor, num_gpus=num_gpus_per_actor,
    )


def _check_args(num_actors: int, batch_size: int) -> None:
    if isinstance(num_actors, bool) or not isinstance(num_actors, int) or num_actors < 1:
        raise ValueError(f"num_actors={num_actors!r} must be an int >= 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")


def _none(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and value == "":
        return None
    return value


def _public_row(row: Mapping) -> dict:
    error = _none(row.get("error"))
    size = row.get("size")
    return {
        "path": _none(row.get("path")), "modality": str(row["modality"]),
        "text": _none(row.get("text")),
        "start": _none(float(row["start"])), "end": _none(float(row["end"])),
        "window": int(row["window"]), "n_windows": int(row["n_windows"]),
        "vector": None if error else np.asarray(row["vector"], dtype=np.float32),
        "content_hash": _none(row.get("content_hash")), "mtime": _none(float(row["mtime"])),
        "size": None if size is None or int(size) < 0 else int(size),
        "error": error, "encoder_id": _none(row.get("encoder_id")), "position": int(row["position"]),
    }


def embed_dataset(inputs: Any, *, preset: str = "clip-vit-b32", weights: str | None = None,
                  pretrained: str | None = None, video_head: str | None = None, video=None,
                  audio_window: float | None = ..., modality: Any = None,  # type: ignore[assignment]
                  recursive: bool = True, address: str | None = None, num_actors: int = 1,
                  batch_size: int = 32, device: str | None = None, num_cpus_per_actor: float = 1.0,
                  num_gpus_per_actor: float = 0.0):
    """The lazy Ray Dataset of embedded windows (and the listing failures), for writing at scale.

    Returns ``(dataset, failed)``: rows have position, path, modality, text, start, end, window,
    n_windows, vector, content_hash, mtime, size, error, encoder_id ("" / NaN / -1 mean none).
    Write it anywhere Ray Data writes (``ds.write_parquet("s3://...")``) or iterate it.
    """
    from ..models import create_encoder

    _check_args(num_actors, batch_size)
    weights, pretrained = _local_path(weights, file_only=True), _local_path(pretrained)
    sources, failed = _list_sources(inputs, modality, None, recursive)
    # the driver needs the preprocessors (they depend on the weights' mean/std) and nothing else
    driver_enc = create_encoder(preset, device="cpu", pretrained=pretrained, weights=weights, video_head=video_head)
    sampling = Sampling.from_preset(driver_enc.preset).override(video=video)
    if audio_window is not ...:
        sampling = sampling.override(audio_window=audio_window)
    preparer = Preparer(driver_enc, sampling)
    del driver_enc
    _init_ray(address)
    if not sources:
        return None, failed
    ds = _build(sources, preparer, preset=preset, weights=weights, pretrained=pretrained, video_head=video_head,
                device=device, num_actors=num_actors, batch_size=batch_size,
                num_cpus_per_actor=num_cpus_per_actor, num_gpus_per_actor=num_gpus_per_actor)
    return ds, failed


def embed_with_ray(inputs: Any, **kwargs: Any) -> Iterator[dict]:
    """Embed files/folders (or strings with ``modality="text"``) on Ray; yields one dict per window.

    Keys: path, modality, text, start, end, window, n_windows, vector ((D,) float32, None on error),
    content_hash, mtime, size, error, encoder_id. A file that failed yields one row with ``error``.
    Keyword arguments are those of :func:`embed_dataset` (preset, weights, address, num_actors, ...).
    """
    ds, failed = embed_dataset(inputs, **kwargs)
    for path, reason in failed:
        yield {"path": path, "modality": None, "text": None, "start": None, "end": None, "window": 0,
               "n_windows": 0, "vector": None, "content_hash": None, "mtime": None, "size": None,
               "error": reason, "encoder_id": None, "position": -1}
    if ds is not None:
        for row in ds.iter_rows():
            yield _public_row(row)


# ------------------------------------------------------------------------------------------ writer
def _assemble_files(rows: Iterator[Mapping], to_embed: list[Source], expected_id: str) -> Iterator[Embedded | Failure]:
    """Embedded files from the encoded window rows (a file once all its windows arrived), or failures."""
    partial: dict[int, list[dict]] = {}
    for raw in rows:
        row = _public_row(raw)
        pos = row["position"]
        source = to_embed[pos]
        if row["error"]:
            yield Failure(source, row["error"])
            continue
        if row["encoder_id"] != expected_id:
            raise EncoderMismatchError(
                f"a Ray worker built encoder {row['encoder_id']} but the index needs {expected_id}; "
                "make the same weights available on every node (pretrained=, weights=)")
        got = partial.setdefault(pos, [])
        got.append(row)
        if len(got) < row["n_windows"]:
            continue
        del partial[pos]
        got.sort(key=lambda r: r["window"])
        yield Embedded(source, np.stack([r["vector"] for r in got]).astype(np.float32),
                       tuple((r["start"], r["end"]) for r in got), row["content_hash"], row["mtime"], row["size"])
    for pos in partial:  # cannot happen unless rows were lost
        yield Failure(to_embed[pos], "incomplete: some windows were not returned")


def index_with_ray(inputs: Any, target: Any, *, modality: Any = None, metadata: Mapping | None = None,
                   recursive: bool = True, address: str | None = None, num_actors: int = 1,
                   batch_size: int | None = None, device: str | None = None, pretrained: str | None = None,
                   num_cpus_per_actor: float = 1.0, num_gpus_per_actor: float = 0.0,
                   allow_untrained: bool = False) -> RayIndexReport:
    """Embed on Ray and commit into a Retriever's index (or the index directory at ``target``).

    The driver is the single writer: unchanged files (same state as ``Retriever.add`` checks) are
    skipped, changed ones replaced, and files are committed ``batch_size`` at a time in one
    ``index.batch()`` each, by ``Retriever.add``'s commit loop. Every actor's encoder must match the
    index's (EncoderMismatchError). Files of a modality whose tower is untrained are skipped and
    reported unless ``allow_untrained``.
    """
    from ..retriever import Retriever, recorded_weights, untrained_guard, video_head_of

    owned = not isinstance(target, Retriever)
    retriever = Retriever.load(os.fspath(target)) if owned else target
    t0 = time.perf_counter()
    try:
        bs = batch_size or retriever.batch_size
        _check_args(num_actors, bs)
        sources, failed = _list_sources(inputs, modality, metadata, recursive)
        sources = untrained_guard(retriever.encoder, sources, failed, allow_untrained=allow_untrained)
        plan = retriever.plan(sources)  # the same skip/replace decisions as Retriever.add
        to_embed = list(plan.to_embed)
        if to_embed:
            _init_ray(address)
            fp = retriever.index.fingerprint
            enc_fp = fp.get("encoder") or {}
            ds = _build(to_embed, Preparer(retriever.encoder, retriever.sampling),
                        preset=enc_fp.get("preset") or retriever.encoder.preset.name,
                        weights=recorded_weights(retriever.weights_path), pretrained=_local_path(pretrained),
                        video_head=video_head_of(enc_fp), device=device, num_actors=num_actors,
                        batch_size=bs, num_cpus_per_actor=num_cpus_per_actor,
                        num_gpus_per_actor=num_gpus_per_actor)
            files = _assemble_files(ds.iter_rows(), to_embed, retriever.encoder.fingerprint_id())
            report = commit_files(retriever.index, files, batch_size=bs, replacing=plan.replacing,
                                  unchanged=plan.unchanged, failed=failed)
        else:
            report = AddReport(unchanged=tuple(plan.unchanged), failed=tuple(failed))
    finally:
        if owned:
            retriever.close()
    seconds = time.perf_counter() - t0
    n_files = len(report.added) + len(report.updated)
    return RayIndexReport(report, seconds, n_files / seconds if seconds > 0 else 0.0)
