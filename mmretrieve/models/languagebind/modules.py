"""LanguageBind's towers as plain torch modules, with the publisher's parameter names.

Parameter names and shapes follow the published checkpoints (Hugging Face CLIP naming:
``text_model.encoder.layers.N.self_attn.q_proj.weight`` ...), so a checkpoint's state dict loads by
name. The computation follows the publisher's modelling code: pre-norm transformer layers; video
layers first add a temporal embedding, then attend over the frames at every patch position, then
attend over the patches of each frame; the video vector is the mean over frames of the
post-normalised class tokens, projected.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextConfig, TowerConfig, VisionConfig

__all__ = ["LanguageBindTower", "TextTransformer", "VisionTransformer", "EncoderLayer"]


def _activation(name: str):
    if name == "gelu":
        return F.gelu
    if name == "gelu_new":
        return lambda x: F.gelu(x, approximate="tanh")
    return lambda x: x * torch.sigmoid(1.702 * x)  # quick_gelu


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (all with bias)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                             is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, act: str) -> None:
        super().__init__()
        self.act = _activation(act)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer; with ``frames`` > 0 a temporal block runs first (video towers)."""

    def __init__(self, width: int, heads: int, hidden: int, act: str, eps: float, frames: int = 0) -> None:
        super().__init__()
        self.self_attn = Attention(width, heads)
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, hidden, act)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.frames = frames
        if frames:
            self.temporal_embedding = nn.Parameter(torch.zeros(1, frames, width))
            self.temporal_attn = Attention(width, heads)
            self.temporal_layer_norm1 = nn.LayerNorm(width, eps=eps)
            self.temporal_mlp = MLP(width, hidden, act)
            self.temporal_layer_norm2 = nn.LayerNorm(width, eps=eps)

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        bt, n, d = x.shape
        t = self.frames
        x = x.view(bt // t, t, n, d)
        if t != 1:
            x = x + self.temporal_embedding[0, :t, None, :]
        x = x.permute(0, 2, 1, 3).reshape(-1, t, d)  # (b n) t d: attend across frames at each position
        x = x + self.temporal_attn(self.temporal_layer_norm1(x))
        x = x + self.temporal_mlp(self.temporal_layer_norm2(x))
        return x.view(bt // t, n, t, d).permute(0, 2, 1, 3).reshape(bt, n, d)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        if self.frames:
            x = self._temporal(x)
        x = x + self.self_attn(self.layer_norm1(x), causal=causal)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, layers: list[EncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, causal=causal)
        return x


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.token_embedding(ids) + self.position_embedding(pos)[None]


class TextTransformer(nn.Module):
    """Causal text transformer; the sequence vector is the final-normalised state at the end-of-text
    token (the largest id in CLIP's vocabulary, so ``argmax`` of the ids finds it)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.context_length = cfg.max_position_embeddings
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder([EncoderLayer(cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
                                             cfg.hidden_act, cfg.layer_norm_eps) for _ in range(cfg.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.final_layer_norm(self.encoder(self.embeddings(ids), causal=True))
        return x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]


class VisionEmbeddings(nn.Module):
    """Class token + patches + learned positions. ``frames_3d``: a (1, p, p) 3-D patch kernel and one
    class token per frame (the publisher's "vl_new" video towers)."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        d, p = cfg.hidden_size, cfg.patch_size
        self.frames_3d = cfg.frames_3d
        if self.frames_3d:
            self.class_embedding = nn.Parameter(torch.zeros(cfg.num_frames, d))
            self.patch_embedding = nn.Conv3d(cfg.num_channels, d, (1, p, p), stride=(1, p, p), bias=False)
        else:
            self.class_embedding = nn.Parameter(torch.zeros(d))
            self.patch_embedding = nn.Conv2d(cfg.num_channels, d, p, stride=p, bias=False)
        self.position_embedding = nn.Embedding(cfg.num_positions, d)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """(B*T, C, H, W) -> (B*T, 1 + patches, D)."""
        if self.frames_3d:
            bt = x.shape[0]
            weight = self.patch_embedding.weight[:, :, 0]  # kernel depth 1: a 2-D convolution per frame
            patches = F.conv2d(x, weight, stride=self.patch_embedding.stride[1:]).flatten(2).transpose(1, 2)
            cls = self.class_embedding[None, :frames].expand(bt // frames, -1, -1).reshape(bt, 1, -1)
        else:
            patches = self.patch_embedding(x).flatten(2).transpose(1, 2)
            cls = self.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1)
        return torch.cat([cls.to(patches.dtype), patches], dim=1) + self.position_embedding.weight[None]


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.frames = int(cfg.num_frames) if cfg.add_time_attn else 1
        t = self.frames if cfg.add_time_attn else 0
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)  # sic: the publisher's name
        self.encoder = Encoder([EncoderLayer(cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
                                             cfg.hidden_act, cfg.layer_norm_eps, frames=t)
                                for _ in range(cfg.num_hidden_layers)])
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, C, H, W) with T = ``self.frames`` consecutive rows per item -> (B, D) pooled."""
        t = self.frames
        h = self.encoder(self.pre_layrnorm(self.embeddings(x, t)))
        cls = self.post_layernorm(h[:, 0])
        return cls.view(-1, t, cls.shape[-1]).mean(1)


class LanguageBindTower(nn.Module):
    """One published LanguageBind model: text and modality transformers with their projections."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.text_model = TextTransformer(cfg.text)
        self.vision_model = VisionTransformer(cfg.vision)
        self.visual_projection = nn.Linear(cfg.vision.hidden_size, cfg.projection_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text.hidden_size, cfg.projection_dim, bias=False)

    @property
    def frames(self) -> int:
        return self.vision_model.frames

    @property
    def input_size(self) -> tuple[int, int]:
        return self.config.vision.input_size

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids -> (N, projection_dim), not normalised."""
        return self.text_projection(self.text_model(ids))

    def encode_vision(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images / fbank images, or (N, T, C, H, W) frames with T = ``frames`` -> (N, projection_dim)."""
        if x.ndim == 5:
            x = x.reshape(-1, *x.shape[2:])
        return self.visual_projection(self.vision_model(x))

