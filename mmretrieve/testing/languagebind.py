"""Generated LanguageBind checkpoints for tests and benchmarks (no download, no network).

Writes directories laid out as the publisher's Hugging Face repositories (``config.json``, a weights
file, ``vocab.json`` and ``merges.txt``) with the publisher's tensor names and shapes and seeded random values: the
text tower is drawn from one seed shared by every tower, as in the published checkpoints, whose
language tower was frozen. ``narrow=True`` keeps the structure (layers with temporal attention, the
112 x 1036 fbank grid, 224-pixel images, 8 frames) at a tiny width and depth.
``write_header_only_checkpoint`` writes a full-size safetensors file whose data region is a sparse
hole, so the full-size key/shape accounting runs without gigabytes of memory or disk.
"""
from __future__ import annotations

import copy
import json
import os
import struct

import torch

from ..models.languagebind.config import read_config
from ..models.languagebind.modules import LanguageBindTower
from ..models.weights import save_safetensors

__all__ = ["published_config", "write_checkpoint", "write_header_only_checkpoint", "write_languagebind_dirs",
           "REPOS"]

REPOS = {"image": "LanguageBind_Image", "video": "LanguageBind_Video_FT", "audio": "LanguageBind_Audio_FT"}

_TEXT = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
         "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "gelu", "layer_norm_eps": 1e-05,
         "projection_dim": 768, "model_type": "clip_text_model", "bos_token_id": 49406, "eos_token_id": 49407,
         "pad_token_id": 1, "attention_dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02}
_VISION = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
           "num_channels": 3, "image_size": 224, "patch_size": 14, "hidden_act": "gelu", "layer_norm_eps": 1e-05,
           "add_time_attn": False, "num_frames": 1, "force_patch_dropout": 0.0, "lora_r": 0, "lora_alpha": 16,
           "lora_dropout": 0.0, "num_mel_bins": 0, "target_length": 0, "video_decode_backend": "decord",
           "audio_sample_rate": 16000, "audio_mean": 0.5, "audio_std": 0.5, "projection_dim": 512,
           "model_type": "clip_vision_model", "attention_dropout": 0.0, "initializer_factor": 1.0,
           "initializer_range": 0.02}
_KIND = {"image": {"model_type": "LanguageBindImage"},
         "video": {"model_type": "LanguageBindVideo", "vision": {"add_time_attn": True, "num_frames": 8}},
         "audio": {"model_type": "LanguageBindAudio",
                   "vision": {"num_mel_bins": 112, "target_length": 1036, "audio_mean": -4.2677393,
                              "audio_std": 4.5689974}}}
_NARROW_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "projection_dim": 16}
_NARROW_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


def published_config(kind: str, *, narrow: bool = False) -> dict:
    """The config.json of a published tower (``narrow``: same structure, tiny width and depth)."""
    text, vision = copy.deepcopy(_TEXT), copy.deepcopy(_VISION)
    extra = _KIND[kind]
    vision.update(extra.get("vision", {}))
    projection = 768
    if narrow:
        text.update(_NARROW_TEXT)
        vision.update(_NARROW_VISION)
        projection = 16
    return {"architectures": [extra["model_type"]], "model_type": extra["model_type"], "projection_dim": projection,
            "logit_scale_init_value": 2.6592, "initializer_factor": 1.0, "torch_dtype": "float32",
            "transformers_version": "4.45.2", "text_config": text, "vision_config": vision}


def _random_state(tower: LanguageBindTower, seed: int, text_seed: int) -> dict[str, torch.Tensor]:
    """Seeded values for every parameter; text-tower tensors from ``text_seed`` (shared across towers)."""
    state = {}
    gens = {"text": torch.Generator().manual_seed(text_seed), "other": torch.Generator().manual_seed(seed)}
    for name, p in tower.state_dict().items():
        g = gens["text" if name.startswith(("text_model.", "text_projection.")) else "other"]
        leaf = name.rsplit(".", 1)[-1]
        if "norm" in name and leaf == "weight":
            value = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif leaf == "bias":
            value = 0.02 * torch.randn(p.shape, generator=g)
        else:
            fan_in = p[0].numel() if p.ndim > 1 else p.shape[-1]
            value = torch.randn(p.shape, generator=g) / max(1.0, fan_in) ** 0.5
        state[name] = value.float()
    return state


def _extras(cfg) -> dict[str, torch.Tensor]:
    """Tensors the published files carry besides the parameters (ignored by the loader by name)."""
    return {"logit_scale": torch.tensor(4.6052),
            "text_model.embeddings.position_ids": torch.arange(cfg.text.max_position_embeddings)[None],
            "vision_model.embeddings.position_ids": torch.arange(cfg.vision.num_positions)[None]}


def _write_tokenizer(directory: str) -> None:
    """vocab.json and merges.txt as the publisher's directories carry them (CLIP's BPE)."""
    import open_clip

    tok = open_clip.tokenizer.SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(t, t): i for t, i in tok.encoder.items()}
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    merges = sorted(tok.bpe_ranks, key=tok.bpe_ranks.get)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def write_checkpoint(directory: str | os.PathLike, kind: str, *, narrow: bool = True, seed: int = 0,
                     text_seed: int = 1234, fmt: str = "safetensors") -> str:
    """A checkpoint directory of a ``kind`` tower ("image", "video", "audio"); returns its path."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(published_config(kind, narrow=narrow), f, indent=2)
    cfg = read_config(os.path.join(directory, "config.json"), kind)
    tower = LanguageBindTower(cfg)
    state = {**_random_state(tower, seed, text_seed), **_extras(cfg)}
    if fmt == "safetensors":
        save_safetensors(os.path.join(directory, "model.safetensors"), state, {"format": "pt"})
    elif fmt == "bin":
        torch.save(state, os.path.join(directory, "pytorch_model.bin"))
    else:
        raise ValueError(f"fmt: expected 'safetensors' or 'bin', got {fmt!r}")
    _write_tokenizer(directory)
    return directory


def write_languagebind_dirs(parent: str | os.PathLike, *, narrow: bool = True, fmt: str = "safetensors") -> dict[str, str]:
    """The three towers of the ``languagebind`` preset under ``parent``, named as the repositories."""
    parent = os.fspath(parent)
    return {kind: write_checkpoint(os.path.join(parent, name), kind, narrow=narrow, seed=i + 1, fmt=fmt)
            for i, (kind, name) in enumerate(REPOS.items())}


def write_header_only_checkpoint(directory: str | os.PathLike, kind: str, *,
                                 overrides: dict[str, list[int]] | None = None, drop: tuple[str, ...] = (),
                                 add: dict[str, list[int]] | None = None) -> str:
    """A full-size checkpoint whose ``model.safetensors`` has the real header (names, dtypes, shapes,
    offsets) and a sparse, all-zero data region: gigabytes on paper, a few kilobytes on disk.

    ``overrides`` changes shapes, ``drop`` removes tensors and ``add`` adds float32 tensors, to
    write deliberately wrong files.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(published_config(kind), f, indent=2)
    cfg = read_config(os.path.join(directory, "config.json"), kind)
    with torch.device("meta"):
        tower = LanguageBindTower(cfg)
    entries = {k: ("F32", list(v.shape)) for k, v in tower.state_dict().items()}
    entries.update({k: ("I64" if v.dtype == torch.int64 else "F32", list(v.shape)) for k, v in _extras(cfg).items()})
    for k in drop:
        entries.pop(k)
    for k, shape in (overrides or {}).items():
        entries[k] = (entries[k][0], list(shape))
    for k, shape in (add or {}).items():
        entries[k] = ("F32", list(shape))
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for k in sorted(entries):
        dtype, shape = entries[k]
        n = 8 if dtype == "I64" else 4
        for s in shape:
            n *= s
        header[k] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    path = os.path.join(directory, "model.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + offset)
    return directory
