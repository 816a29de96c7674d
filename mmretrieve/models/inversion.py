"""Textual inversion for composed queries: a reference vector becomes pseudo-word token embeddings.

A small mapping network (Pic2Word's IM2TEXT shape: ``layers`` blocks of Linear -> Dropout -> ReLU,
then ``fc_out``) turns the reference's vector into ``tokens`` embeddings of the text tower's input
space. They replace the marker ``*`` in a prompt ("a photo of * , that is red") and the frozen text
tower encodes the whole prompt: the change is written in words next to a word that *is* the reference.

Supported towers: open_clip's plain ``CLIP`` text tower (token embedding, positional embedding,
causal transformer, final norm, pooled token, projection), i.e. the presets ``sample``,
``tiny-random``, ``vit-b32-random``, ``clip-vit-b32``, ``clip-vit-b16`` and ``clip-vit-l14``.
Towers whose text side is a Hugging Face model (``CustomTextCLIP``) are refused with
:class:`InversionUnsupportedError`.

A network records its query: the template and how it composes (``COMPOSE_MODES``: the prompt's
vector, Pic2Word's query, or that plus the modification text's own vector). The ``sample`` preset ships
one (``SHIPPED_INVERSION``).

Two kinds of networks are read: our own (safetensors written by :meth:`TextualInversion.save`) and
Pic2Word's released checkpoint for OpenAI ViT-L/14 (:func:`load_pic2word`, ``torch.load`` with
``weights_only=True``; every key consumed or named as ignored, every shape checked).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from importlib import resources
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MMRError, WeightsUnavailableError
from .weights import load_safetensors, save_safetensors, torch_load_tensors

__all__ = [
    "InversionConfig",
    "InversionUnsupportedError",
    "MappingNetwork",
    "TextualInversion",
    "PIC2WORD_TEMPLATE",
    "PIC2WORD_TRAIN_PROMPT",
    "PIC2WORD_VIT_L14",
    "MARKER",
    "SHIPPED_INVERSION",
    "supports_inversion",
    "encode_text_with_pseudo_tokens",
    "reference_features",
    "load_pic2word",
    "load_inversion",
    "shipped_inversion",
    "has_shipped_inversion",
    "config_for",
    "check_template",
    "token_width",
    "PIC2WORD_IGNORED",
    "COMPOSE_MODES",
]

MARKER = "*"
#: Pic2Word's retrieval prompt (CIRR): the pseudo word, a comma, then the modification text.
PIC2WORD_TEMPLATE = "a photo of * , {text}"
#: Pic2Word's training prompt: the text tower's output for it is pulled towards the image vector.
PIC2WORD_TRAIN_PROMPT = "a photo of *"
_FORMAT = "mmretrieve-inversion/1"
_INPUTS = ("raw", "normalized")
#: How a query is composed: the prompt's vector (Pic2Word), or the prompt's vector plus the modification
#: text's own vector, summed with equal weights and renormalised (the change is stated twice: once
#: next to the pseudo words, once on its own, so a change the pseudo words would drown still counts).
COMPOSE_MODES = ("prompt", "prompt+text")

#: Networks shipped with the package, per preset name (package-relative safetensors paths). `sample`'s
#: is the network of the synthetic composed benchmark (recipe pic2word-sample, benchmarks/bench_composed.py),
#: ahead of the best arithmetic weight on held-out attribute combinations for images and clips.
SHIPPED_INVERSION: Mapping[str, str] = {"sample": "assets/sample-inversion.safetensors"}


class InversionUnsupportedError(MMRError, ValueError):
    """The encoder's text tower cannot take pseudo-token embeddings, or a network does not fit it."""


def check_template(template: str, where: str = "template") -> str:
    """A prompt template holds the marker ``*`` once and ``{text}`` once, in either order.

    With the marker last ("{text} a *") the pseudo words sit next to the pooled end token, so less of
    the reference is washed out by the modification's words in a small text tower."""
    if (not isinstance(template, str) or template.count("{text}") != 1 or template.count(MARKER) != 1):
        raise ValueError(f"{where}={template!r}: a prompt with one {MARKER!r} (the reference) and one '{{text}}' "
                         f"(the modification), e.g. {PIC2WORD_TEMPLATE!r}")
    return template


@dataclass(frozen=True)
class InversionConfig:
    """Shape and use of a mapping network.

    input: "raw" = the image tower's unnormalised output (Pic2Word's input), "normalized" = the
        L2-normalised vector the index stores (works for images and for a clip's pooled vector).
    template: the query prompt; ``*`` marks where the pseudo tokens go and ``{text}`` the
        modification. train_prompt: the prompt of the training loss (no ``{text}``).
    compose: "prompt" = the filled template's vector (Pic2Word); "prompt+text" = normalise(prompt
        vector + the modification text's own vector), equal weights (see ``COMPOSE_MODES``).
    """

    input_dim: int
    token_dim: int
    hidden_dim: int = 512
    layers: int = 2
    tokens: int = 1
    dropout: float = 0.1
    input: str = "normalized"
    template: str = PIC2WORD_TEMPLATE
    train_prompt: str = PIC2WORD_TRAIN_PROMPT
    preset: str | None = None
    compose: str = "prompt"

    def __post_init__(self) -> None:
        for name in ("input_dim", "token_dim", "hidden_dim", "layers", "tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"InversionConfig.{name}={v!r}: a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"InversionConfig.dropout={self.dropout}: must be in [0, 1)")
        if self.input not in _INPUTS:
            raise ValueError(f"InversionConfig.input={self.input!r}: choose one of {', '.join(_INPUTS)}")
        if self.compose not in COMPOSE_MODES:
            raise ValueError(f"InversionConfig.compose={self.compose!r}: choose one of {', '.join(COMPOSE_MODES)}")
        check_template(self.template, "template")
        if MARKER not in self.train_prompt:
            raise ValueError(f"InversionConfig.train_prompt={self.train_prompt!r}: must contain the marker {MARKER!r}")


#: Pic2Word's released network for OpenAI ViT-L/14: 768 -> 512 -> 512 -> 768 (their defaults).
PIC2WORD_VIT_L14 = InversionConfig(input_dim=768, token_dim=768, hidden_dim=512, layers=2, tokens=1, dropout=0.1,
                                   input="raw", preset="clip-vit-l14")


class MappingNetwork(nn.Module):
    """Reference vector (N, input_dim) -> pseudo tokens (N, tokens, token_dim).

    Parameter names follow Pic2Word's IM2TEXT (``layers.{i}.0``, ``fc_out``), so its published state
    dict loads key for key.
    """

    def __init__(self, config: InversionConfig) -> None:
        super().__init__()
        self.config = config
        blocks, dim = [], config.input_dim
        for _ in range(config.layers):
            blocks.append(nn.Sequential(nn.Linear(dim, config.hidden_dim), nn.Dropout(config.dropout), nn.ReLU()))
            dim = config.hidden_dim
        self.layers = nn.Sequential(*blocks)
        self.fc_out = nn.Linear(config.hidden_dim, config.token_dim * config.tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.layers(x)).view(x.shape[0], self.config.tokens, self.config.token_dim)


# ------------------------------------------------------------------------------------ text tower path
_TEXT_PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


def supports_inversion(encoder) -> bool:
    """True when the encoder's text tower is open_clip's plain CLIP text transformer."""
    return all(hasattr(encoder.clip, a) for a in _TEXT_PARTS)


def _require_support(encoder) -> None:
    if not supports_inversion(encoder):
        raise InversionUnsupportedError(
            f"preset {encoder.preset.name!r}: its text tower ({type(encoder.clip).__name__}) does not expose "
            f"{', '.join(_TEXT_PARTS)}; textual inversion needs an open_clip CLIP text tower "
            f"(presets sample, tiny-random, vit-b32-random, clip-vit-b32, clip-vit-b16, clip-vit-l14)")


def token_width(encoder) -> int:
    """Width of the text tower's token embeddings (the mapping network's output size)."""
    _require_support(encoder)
    return int(encoder.clip.token_embedding.weight.shape[1])


def _marker_id(encoder) -> int:
    ids = encoder.tokenize([MARKER])[0]
    return int(ids[1])  # [start, marker, end, pad...]


def encode_text_with_pseudo_tokens(encoder, prompts: Sequence[str], pseudo: torch.Tensor) -> torch.Tensor:
    """Encode ``prompts`` with the first ``n`` marker tokens of each replaced by ``pseudo[i]`` (N, n, W).

    Returns (N, D) float32, L2-normalised: the same maths as ``encoder.encode_text`` except for the
    substituted input embeddings (with the marker's own embedding it equals ``encode_text``).
    """
    _require_support(encoder)
    clip = encoder.clip
    prompts = list(prompts)
    if pseudo.ndim != 3 or pseudo.shape[0] != len(prompts) or pseudo.shape[2] != token_width(encoder):
        raise ValueError(f"pseudo tokens: expected ({len(prompts)}, n, {token_width(encoder)}), "
                         f"got {tuple(pseudo.shape)}")
    n = pseudo.shape[1]
    ids = encoder.tokenize(prompts).to(encoder.device)
    is_marker = ids == _marker_id(encoder)
    mask = is_marker & (is_marker.cumsum(dim=1) <= n)
    short = (mask.sum(dim=1) != n).nonzero().flatten().tolist()
    if short:
        i = short[0]
        raise ValueError(f"prompt {prompts[i]!r}: needs {n} marker token(s) {MARKER!r} inside the text tower's "
                         f"context of {ids.shape[1]} tokens (is it too long?)")
    cast = clip.transformer.get_cast_dtype() if hasattr(clip.transformer, "get_cast_dtype") else pseudo.dtype
    x = clip.token_embedding(ids).to(cast)
    x = x.masked_scatter(mask.unsqueeze(-1), pseudo.to(device=x.device, dtype=cast).reshape(-1, x.shape[-1]))
    x = x + clip.positional_embedding.to(cast)
    x = clip.transformer(x, attn_mask=getattr(clip, "attn_mask", None))
    x = clip.ln_final(x)
    from open_clip.transformer import text_global_pool

    x = text_global_pool(x, ids, getattr(clip, "text_pool_type", "argmax"),
                         eos_token_id=getattr(clip, "text_eos_id", None))
    proj = clip.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return F.normalize(x.float(), dim=-1)


def reference_features(encoder, pixels: torch.Tensor, input_kind: str) -> torch.Tensor:
    """Image-tower features of preprocessed images (N, 3, S, S) as a network of ``input_kind`` takes them."""
    if input_kind == "normalized":
        return encoder.encode_image(pixels)
    x = pixels.to(encoder.device, dtype=next(encoder.clip.parameters()).dtype)
    return encoder.clip.encode_image(x).float()


# ------------------------------------------------------------------------------------------ the module
class TextualInversion(nn.Module):
    """A mapping network with the prompt it was trained for; composes reference + text into one vector."""

    def __init__(self, config: InversionConfig) -> None:
        super().__init__()
        self.config = config
        self.mapper = MappingNetwork(config)
        self.source = "untrained"

    def pseudo_tokens(self, references: torch.Tensor) -> torch.Tensor:
        """(N, input_dim) reference vectors -> (N, tokens, token_dim)."""
        if references.ndim != 2 or references.shape[1] != self.config.input_dim:
            raise ValueError(f"reference vectors: expected (N, {self.config.input_dim}), got {tuple(references.shape)}")
        p = next(self.mapper.parameters())
        return self.mapper(references.to(device=p.device, dtype=p.dtype))

    def prompts(self, texts: Sequence[str], template: str | None = None) -> list[str]:
        """The filled prompts, with the marker repeated once per pseudo token."""
        t = check_template(template or self.config.template)
        texts = [s.strip() for s in texts]
        if t.index("{text}") < t.index(MARKER):  # the first markers of the prompt take the pseudo tokens
            bad = [s for s in texts if MARKER in s]
            if bad:
                raise ValueError(f"modification text {bad[0]!r} contains the marker {MARKER!r}, which template "
                                 f"{t!r} places after the text; remove it or use a template with the marker first")
        mark = " ".join([MARKER] * self.config.tokens)
        return [t.replace(MARKER, mark).replace("{text}", s) for s in texts]

    def with_query(self, *, template: str | None = None, compose: str | None = None) -> "TextualInversion":
        """The same network (weights shared) composing queries with another template or compose mode."""
        changes = {k: v for k, v in (("template", template), ("compose", compose)) if v is not None}
        other = TextualInversion(replace(self.config, **changes))
        other.mapper = self.mapper
        other.source = self.source
        return other.train(self.training)

    def check_encoder(self, encoder) -> None:
        """Refuse an encoder whose text tower does not fit this network."""
        width = token_width(encoder)
        if width != self.config.token_dim:
            raise InversionUnsupportedError(
                f"inversion network ({self.source}) writes {self.config.token_dim}-wide tokens but preset "
                f"{encoder.preset.name!r} has a {width}-wide text tower (made for preset {self.config.preset!r})")
        want = encoder.dim if self.config.input == "normalized" else None
        if want is not None and want != self.config.input_dim:
            raise InversionUnsupportedError(
                f"inversion network ({self.source}) takes {self.config.input_dim}-dim vectors but preset "
                f"{encoder.preset.name!r} makes {want}-dim ones (made for preset {self.config.preset!r})")

    def compose(self, encoder, references: torch.Tensor, texts: Sequence[str], template: str | None = None,
                ) -> torch.Tensor:
        """(N, D) L2-normalised composed query vectors for references (``config.input`` kind) and texts,
        composed as ``config.compose`` says."""
        self.check_encoder(encoder)
        if len(texts) != references.shape[0]:
            raise ValueError(f"compose: {references.shape[0]} references for {len(texts)} texts")
        q = encode_text_with_pseudo_tokens(encoder, self.prompts(texts, template), self.pseudo_tokens(references))
        if self.config.compose == "prompt+text":
            q = F.normalize(q + encoder.encode_text([s.strip() for s in texts]).to(q.device, q.dtype), dim=-1)
        return q

    def train_features(self, encoder, references: torch.Tensor) -> torch.Tensor:
        """Text-tower output for the training prompt with each reference's pseudo tokens (N, D)."""
        prompt = self.config.train_prompt.replace(MARKER, " ".join([MARKER] * self.config.tokens))
        return encode_text_with_pseudo_tokens(encoder, [prompt] * references.shape[0], self.pseudo_tokens(references))

    # ---------------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> str:
        """Write the network and its config to a safetensors file (atomically)."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_safetensors(path, self.mapper.state_dict(), {"format": _FORMAT, "config": json.dumps(asdict(self.config))})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TextualInversion":
        """Read a file written by :meth:`save`; every tensor name and shape is checked."""
        path = os.fspath(path)
        tensors, meta = load_safetensors(path)
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path}: not an mmretrieve inversion network (format {meta.get('format')!r}); "
                             f"Pic2Word's released checkpoint loads with load_pic2word()")
        try:
            config = InversionConfig(**json.loads(meta["config"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: malformed inversion config in the file's metadata ({e})") from None
        net = cls(config)
        _load_exact(net.mapper, tensors, path, ignored={})
        net.source = path
        return net.eval()


def _load_exact(module: nn.Module, tensors: Mapping[str, torch.Tensor], path: str, ignored: Mapping[str, str]) -> None:
    own = module.state_dict()
    unexpected = sorted(set(tensors) - set(own))
    missing = sorted(set(own) - set(tensors))
    if unexpected or missing:
        raise ValueError(f"{path}: keys do not match the mapping network: unexpected {unexpected[:5]}, "
                         f"missing {missing[:5]}" + (f" (ignored: {sorted(ignored)})" if ignored else ""))
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{path}: {k} is a {type(v).__name__}, not a tensor")
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, the mapping network expects {tuple(own[k].shape)}")
    module.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)


#: Top-level entries of Pic2Word's training checkpoint other than the mapping network, and why they are unused.
PIC2WORD_IGNORED = {
    "state_dict": "the CLIP towers (frozen OpenAI ViT-L/14 during Pic2Word's training; the preset's own weights are used)",
    "optimizer": "optimizer state of their training run",
    "epoch": "epoch counter of their training run",
    "name": "their run name",
}


def load_pic2word(path: str | os.PathLike, config: InversionConfig = PIC2WORD_VIT_L14) -> TextualInversion:
    """Pic2Word's released mapping network (``pic2word_model.pt``) or a bare IM2TEXT state dict.

    Read with ``torch.load(weights_only=True)`` (no code is unpickled). The training checkpoint's
    ``state_dict_img2text`` is the network; the entries of :data:`PIC2WORD_IGNORED` are left out; any
    other entry is an error. A ``module.`` prefix (their DistributedDataParallel) is stripped only when
    every key has it. Each key and shape must match ``config`` (default: OpenAI ViT-L/14).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: Pic2Word checkpoint not found")
    obj = torch_load_tensors(path)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a dict (a state dict or Pic2Word's checkpoint), got {type(obj).__name__}")
    if "state_dict_img2text" in obj:
        other = sorted(set(obj) - {"state_dict_img2text"} - set(PIC2WORD_IGNORED))
        if other:
            raise ValueError(f"{path}: unknown top-level entries {other} next to state_dict_img2text "
                             f"(known and ignored: {sorted(PIC2WORD_IGNORED)})")
        sd, ignored = obj["state_dict_img2text"], {k: PIC2WORD_IGNORED[k] for k in obj if k in PIC2WORD_IGNORED}
        if not isinstance(sd, Mapping):
            raise ValueError(f"{path}: state_dict_img2text is a {type(sd).__name__}, not a state dict")
    else:
        sd, ignored = obj, {}
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    elif any(k.startswith("module.") for k in keys):
        raise ValueError(f"{path}: some keys start with 'module.' and some do not, e.g. {keys[:3]}")
    net = TextualInversion(config)
    _load_exact(net.mapper, sd, path, ignored)
    net.source = path
    return net.eval()


def load_inversion(source: "str | os.PathLike | TextualInversion") -> TextualInversion:
    """A network from a path: our safetensors files, or Pic2Word's ``.pt`` checkpoint."""
    if isinstance(source, TextualInversion):
        return source
    path = os.fspath(source)
    if path.endswith(".safetensors"):
        return TextualInversion.load(path)
    if path.endswith((".pt", ".pth", ".bin")):
        return load_pic2word(path)
    raise ValueError(f"{path}: an inversion network is a .safetensors file (mmretrieve) or Pic2Word's .pt checkpoint")


def has_shipped_inversion(preset_name: str) -> bool:
    """Whether the package ships an inversion network for this preset."""
    return preset_name in SHIPPED_INVERSION


def shipped_inversion(preset_name: str) -> TextualInversion:
    """The network shipped for a preset; WeightsUnavailableError saying how to get one otherwise."""
    rel = SHIPPED_INVERSION.get(preset_name)
    if rel is None:
        raise WeightsUnavailableError(
            f"preset {preset_name!r} ships no inversion network: train one with `mmretrieve train --recipe pic2word "
            f"--preset {preset_name} --data IMAGES --out RUN` and pass it (inversion=RUN/inversion.safetensors), or "
            f"for clip-vit-l14 pass Pic2Word's released pic2word_model.pt")
    path = str(resources.files("mmretrieve").joinpath(rel))
    if not os.path.isfile(path):
        raise WeightsUnavailableError(f"preset {preset_name!r}: shipped inversion network missing: {path}")
    return TextualInversion.load(path)


def config_for(encoder, **overrides: Any) -> InversionConfig:
    """A config sized for ``encoder`` (normalised input of its dimension, its token width)."""
    base = InversionConfig(input_dim=encoder.dim, token_dim=token_width(encoder), preset=encoder.preset.name)
    return replace(base, **overrides)
