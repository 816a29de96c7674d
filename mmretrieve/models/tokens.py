"""Token-row helpers shared by the CLIP-tokenised encoders (open_clip presets and LanguageBind)."""
from __future__ import annotations

import torch

__all__ = ["truncate_tokens"]


def truncate_tokens(tokens: torch.Tensor, max_words: int) -> torch.Tensor:
    """CLIP token rows cut to ``max_words`` tokens: rows whose end token (the highest id, where CLIP
    pools) sits at or beyond ``max_words`` keep their first ``max_words - 1`` tokens and the end token."""
    if isinstance(max_words, bool) or not isinstance(max_words, int) or not 2 <= max_words:
        raise ValueError(f"max_words={max_words!r}: an integer >= 2 (start and end token included)")
    if max_words >= tokens.shape[1]:
        return tokens
    eot_pos = tokens.argmax(dim=1)
    long = eot_pos >= max_words
    if not bool(long.any()):
        return tokens
    out = tokens.clone()
    rows = long.nonzero().flatten()
    eot = tokens[rows, eot_pos[rows]]
    out[rows, max_words - 1] = eot
    out[rows, max_words:] = 0
    return out
