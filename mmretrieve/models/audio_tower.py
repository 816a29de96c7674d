"""Audio tower: a ViT over log-mel patches (AST / ImageBind style) projected into the shared space.

``AudioTower.from_visual`` initialises it from an open_clip image tower: the transformer blocks,
layer norms and projection are copied; the patch-embedding conv is averaged over RGB and resized
to the audio patch; the position embeddings are interpolated to the spectrogram's patch grid.
Without training the tower maps sounds to arbitrary directions: it must be trained (see the
training workstream) before audio results mean anything.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .presets import AudioSpec

__all__ = ["AudioTower"]


class AudioTower(nn.Module):
    """(B, 1, n_mels, target_frames) log-mel -> (B, D) (not normalised)."""

    def __init__(self, spec: AudioSpec, width: int, transformer: nn.Module, dim: int,
                 ln_pre: nn.Module | None = None, ln_post: nn.Module | None = None) -> None:
        super().__init__()
        if spec.n_mels % spec.patch or spec.target_frames % spec.patch:
            raise ValueError(f"audio: n_mels ({spec.n_mels}) and target_frames ({spec.target_frames}) "
                             f"must be multiples of patch ({spec.patch})")
        self.spec = spec
        self.grid = (spec.n_mels // spec.patch, spec.target_frames // spec.patch)
        self.conv = nn.Conv2d(1, width, kernel_size=spec.patch, stride=spec.patch, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid[0] * self.grid[1] + 1, width))
        self.ln_pre = ln_pre if ln_pre is not None else nn.LayerNorm(width)
        self.transformer = transformer
        self.ln_post = ln_post if ln_post is not None else nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, dim))

    @classmethod
    def from_scratch(cls, spec: AudioSpec, dim: int, *, width: int = 768, layers: int = 12, heads: int = 12) -> "AudioTower":
        """A randomly initialised tower, for image towers that are not open_clip ViTs."""
        from open_clip.transformer import Transformer

        return cls(spec, width, Transformer(width, layers, heads), dim)

    @classmethod
    def from_visual(cls, spec: AudioSpec, visual: nn.Module, dim: int) -> "AudioTower":
        """Initialise from an open_clip ``VisionTransformer`` (see the module docstring)."""
        width = visual.conv1.out_channels
        tower = cls(spec, width, copy.deepcopy(visual.transformer), dim,
                    copy.deepcopy(visual.ln_pre), copy.deepcopy(visual.ln_post))
        with torch.no_grad():
            w = visual.conv1.weight.detach().float().mean(dim=1, keepdim=True)  # (width, 1, P, P)
            p_img, p_aud = w.shape[-1], spec.patch
            if p_img != p_aud:
                # keep the response to a flat patch unchanged: scale by the ratio of kernel areas
                w = F.interpolate(w, size=(p_aud, p_aud), mode="bilinear", align_corners=False)
                w = w * (p_img * p_img) / (p_aud * p_aud)
            tower.conv.weight.copy_(w)
            tower.class_embedding.copy_(visual.class_embedding.detach())
            pos = visual.positional_embedding.detach().float()
            gh, gw = visual.grid_size
            grid = pos[1:].reshape(1, gh, gw, width).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=tower.grid, mode="bicubic", align_corners=False)
            tower.positional_embedding.copy_(torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(-1, width)]))
            tower.proj.copy_(visual.proj.detach())
        return tower

    @staticmethod
    def supports(visual: nn.Module) -> bool:
        """Whether ``from_visual`` can initialise from this image tower."""
        from open_clip.transformer import VisionTransformer

        return (isinstance(visual, VisionTransformer) and visual.attn_pool is None
                and visual.pool_type == "tok" and visual.proj is not None
                and visual.conv1.kernel_size[0] == visual.conv1.kernel_size[1])

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        a = self.spec
        if mels.ndim != 4 or tuple(mels.shape[1:]) != (1, a.n_mels, a.target_frames):
            raise ValueError(f"mels must be (B, 1, {a.n_mels}, {a.target_frames}), got {tuple(mels.shape)}")
        x = self.conv(mels.to(self.conv.weight.dtype))  # (B, width, gh, gw)
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj
