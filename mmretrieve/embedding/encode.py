"""From preprocessed windows to vectors: collation, mixed precision, the chunked forward pass, and
the pooling rule that turns a long item's window vectors into its whole-item vector.

The modality dispatch itself is ``MultiModalEncoder.encode(modality, batch)``; everything here calls
it, with or without grad (training calls :func:`encode_windows` under grad, inference under
``torch.inference_mode()``).
"""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..modality import Modality
from ..models.preprocess import pad_frames

__all__ = ["AMP_MODES", "autocast", "collate", "encode_batch", "encode_windows", "encode_texts", "pool_windows", "to_numpy",
           "video_chunk"]

AMP_MODES = ("auto", "bf16", "fp16", "none")


def autocast(device: torch.device | str, amp: str = "auto") -> contextlib.AbstractContextManager:
    """Mixed precision for a forward pass. ``auto``: bf16 on CUDA when supported, else fp16, and none on
    the CPU (inference); ``bf16`` / ``fp16`` / ``none``: as named (a training config's ``run.amp``)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp: expected one of {AMP_MODES}, got {amp!r}")
    device = torch.device(device)
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    if amp == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def collate(modality: Modality, tensors: Sequence[torch.Tensor]) -> Any:
    """Stack windows of one modality into the batch ``encoder.encode`` takes; video windows are padded
    to the longest with a frame mask."""
    if modality is Modality.VIDEO:
        return pad_frames(list(tensors))
    if modality in (Modality.IMAGE, Modality.AUDIO):
        return torch.stack(list(tensors))
    raise ValueError(f"collate: cannot stack {modality.value} inputs (text is a list of strings)")


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, tuple):
        return tuple(t.to(device, non_blocking=True) for t in batch)
    return batch.to(device, non_blocking=True)


def video_chunk(batch_size: int) -> int:
    """Videos per forward pass: a quarter of ``batch_size`` (each video is many frames)."""
    return max(1, batch_size // 4)


def encode_batch(encoder: Any, modality: Modality, batch: Any, *, max_words: int | None = None) -> torch.Tensor:
    """One forward pass over a collated batch (moved to the encoder's device) -> (B, D) float32,
    L2-normalised in float32 after a reduced-precision pass. Grad mode and autocast are the caller's.
    ``max_words`` cuts texts to that many tokens (see ``MultiModalEncoder.tokenize``)."""
    if modality is not Modality.TEXT:
        return F.normalize(encoder.encode(modality, _to_device(batch, encoder.device)).float(), dim=-1)
    return F.normalize(encoder.encode(modality, batch, max_words=max_words).float(), dim=-1)


def encode_windows(encoder: Any, modality: Modality, tensors: Sequence[torch.Tensor],
                   batch_size: int | None = None) -> torch.Tensor:
    """Encode preprocessed windows of one modality -> (N, D) float32, L2-normalised, on the encoder's device.

    ``batch_size`` windows per forward pass (videos: :func:`video_chunk` of it); None: all at once.
    Grad mode and autocast are the caller's.
    """
    n = len(tensors)
    if n == 0:
        return torch.zeros(0, encoder.dim, device=encoder.device)
    step = n if batch_size is None else (video_chunk(batch_size) if modality is Modality.VIDEO else batch_size)
    out = [encode_batch(encoder, modality, collate(modality, tensors[lo:lo + step])) for lo in range(0, n, max(1, step))]
    return out[0] if len(out) == 1 else torch.cat(out)


def encode_texts(encoder: Any, texts: Sequence[str], batch_size: int | None = None, *,
                 max_words: int | None = None) -> torch.Tensor:
    """Encode strings -> (N, D) float32, L2-normalised (grad mode and autocast are the caller's)."""
    texts = list(texts)
    if not texts:
        return torch.zeros(0, encoder.dim, device=encoder.device)
    step = len(texts) if batch_size is None else batch_size
    out = [encode_batch(encoder, Modality.TEXT, texts[lo:lo + step], max_words=max_words)
           for lo in range(0, len(texts), step)]
    return out[0] if len(out) == 1 else torch.cat(out)


def to_numpy(vectors: torch.Tensor) -> np.ndarray:
    """(N, D) float32 numpy on the CPU."""
    return vectors.detach().float().cpu().numpy().astype(np.float32, copy=False)


def pool_windows(vectors: Any, owners: Sequence[int] | None = None, n_items: int | None = None) -> Any:
    """The whole-item vector of a long item: the mean of its L2-normalised window vectors, renormalised.

    ``vectors`` (W, D), numpy or torch (differentiable). Without ``owners`` all rows belong to one item
    and a (D,) vector comes back; with ``owners`` (the item index of each row) an (n_items, D) matrix.
    A one-window item's vector is its window's vector.
    """
    if isinstance(vectors, np.ndarray):
        pooled = pool_windows(torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)), owners, n_items)
        return pooled.numpy()
    v = F.normalize(vectors.float(), dim=-1)
    if owners is None:
        if v.shape[0] == 0:
            raise ValueError("pool_windows: no window vectors to pool")
        return F.normalize(v.mean(dim=0), dim=-1)
    idx = torch.as_tensor(list(owners), dtype=torch.long, device=v.device)
    if idx.shape[0] != v.shape[0]:
        raise ValueError(f"pool_windows: {v.shape[0]} vectors but {idx.shape[0]} owners")
    n = int(n_items if n_items is not None else (int(idx.max()) + 1 if len(idx) else 0))
    sums = torch.zeros(n, v.shape[1], dtype=v.dtype, device=v.device).index_add(0, idx, v)
    counts = torch.bincount(idx, minlength=n).clamp(min=1).to(v.dtype).unsqueeze(1)
    return F.normalize(sums / counts, dim=-1)
