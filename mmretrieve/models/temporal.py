"""Temporal heads: pool per-frame vectors (B, T, D) into one vector per video (B, D).

Inputs are L2-normalised frame vectors; outputs are NOT normalised (the encoder does that).
``mask`` (B, T) is True for real frames; padded frames never influence the result.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MeanHead", "TransformerHead", "make_head", "HEADS", "masked_mean"]

HEADS = ("mean", "transformer")


def _check_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if x.ndim != 3:
        raise ValueError(f"frame features must be (B, T, D), got shape {tuple(x.shape)}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    mask = mask.to(device=x.device, dtype=torch.bool)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask must be (B, T) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"mask: video(s) {empty} of the batch have no real frames")
    return mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real frames only."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1)


class MeanHead(nn.Module):
    """Parameter-free masked mean (CLIP4Clip meanP): the zero-shot default."""

    name = "mean"

    def __init__(self, dim: int, **_: object) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return masked_mean(x, _check_mask(x, mask))


class _Block(nn.Module):
    """Pre-LN transformer block whose residual branches start at zero (identity at init)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        for p in (self.attn.out_proj.weight, self.attn.out_proj.bias, self.mlp[2].weight, self.mlp[2].bias):
            nn.init.zeros_(p)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, key_padding_mask=pad, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TransformerHead(nn.Module):
    """CLIP4Clip seqTransf: frame position embeddings, a small transformer, residual, masked mean.

    Position embeddings and the output projections of every residual branch start at zero, so
    before training the transformer is the identity and the head returns 2 x the mean-pooled
    vector: exactly the mean head's direction.
    """

    name = "transformer"

    def __init__(self, dim: int, layers: int = 4, heads: int | None = None, max_frames: int = 64) -> None:
        super().__init__()
        if heads is None:
            heads = dim // 64 if dim % 64 == 0 and dim >= 64 else 1
        if dim % heads:
            raise ValueError(f"heads: {heads} does not divide the dimension {dim}")
        self.dim, self.max_frames = dim, max_frames
        self.position = nn.Parameter(torch.zeros(max_frames, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check_mask(x, mask)
        t = x.shape[1]
        if t > self.max_frames:
            raise ValueError(f"frames: {t} frames exceed the head's max_frames={self.max_frames}")
        h = x + self.position[:t].to(x.dtype)
        pad = ~mask
        for block in self.blocks:
            h = block(h, pad)
        return masked_mean(h + x, mask)


def make_head(name: str, dim: int, *, layers: int = 4, max_frames: int = 64) -> nn.Module:
    """A temporal head by name ("mean" or "transformer")."""
    if name == "mean":
        return MeanHead(dim)
    if name == "transformer":
        return TransformerHead(dim, layers=layers, max_frames=max_frames)
    raise ValueError(f"video_head: unknown temporal head {name!r}; choose one of {', '.join(HEADS)}")
