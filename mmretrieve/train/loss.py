"""Symmetric InfoNCE with a learnable temperature, aware of duplicate items in a batch.

With several captions per item, one batch can hold the same item twice (or two items sharing a
caption). Plain InfoNCE would then push apart a true pair. Here every pair (i, j) whose item keys
or caption texts are equal counts as a positive, and each row's target is the uniform distribution
over its positives (soft-target cross-entropy); with no duplicates this is exactly CLIP's loss.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LogitScale", "positives_matrix", "contrastive_loss"]


class LogitScale(nn.Module):
    """log(1 / temperature), learnable; the scale is clamped at ``max_scale`` (CLIP: 100)."""

    def __init__(self, temperature: float = 0.07, max_scale: float = 100.0, learnable: bool = True) -> None:
        super().__init__()
        if not 0 < temperature:
            raise ValueError(f"temperature={temperature}: must be > 0")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable)
        self.max_log = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log).exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self().detach())


def positives_matrix(item_keys: Sequence[int] | torch.Tensor, captions: Sequence[str] | None = None,
                     device: torch.device | None = None) -> torch.Tensor:
    """(N, N) bool: True where pair i's text also describes pair j's item (same item or same caption)."""
    keys = torch.as_tensor(item_keys, device=device)
    pos = keys[:, None] == keys[None, :]
    if captions is not None:
        ids: dict[str, int] = {}
        cap = torch.tensor([ids.setdefault(c, len(ids)) for c in captions], device=keys.device)
        pos |= cap[:, None] == cap[None, :]
    return pos


def contrastive_loss(text: torch.Tensor, media: torch.Tensor, scale: torch.Tensor,
                     positives: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of text->media and media->text soft-target cross-entropy over L2-normalised features."""
    logits = scale * text.float() @ media.float().t()
    n = logits.shape[0]
    if positives is None:
        positives = torch.eye(n, dtype=torch.bool, device=logits.device)
    target = positives.float()
    target = target / target.sum(dim=1, keepdim=True)
    t2m = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    target_t = positives.t().float()
    target_t = target_t / target_t.sum(dim=1, keepdim=True)
    m2t = -(target_t * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (t2m + m2t)
