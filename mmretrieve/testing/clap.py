"""Generated CLAP checkpoints in the transformers layout (no download): a randomly initialised, narrow
``ClapModel`` with ``config.json``, ``model.safetensors``, ``preprocessor_config.json`` and a byte-level
BPE tokenizer of the RoBERTa kind over single bytes (no merges), as ``save_pretrained`` writes them."""
from __future__ import annotations

import json
import os

__all__ = ["write_clap_checkpoint"]


def _byte_symbols() -> list[str]:
    """The 256 symbols byte-level BPE uses for bytes: printable Latin-1 bytes stand for themselves, the
    others are shifted past 255 in byte order."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), 256))
    out, shift = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + shift))
            shift += 1
    return out


def _byte_vocab() -> dict[str, int]:
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(_byte_symbols()):
        vocab[ch] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return vocab


def write_clap_checkpoint(directory: str | os.PathLike, *, fused: bool = False, seed: int = 0) -> str:
    """A narrow CLAP directory as published (random weights); returns its path."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, RobertaTokenizer

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    vocab = _byte_vocab()
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    tok = RobertaTokenizer(os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt"),
                           model_max_length=77)
    tok.save_pretrained(directory)
    text = {"vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 80, "projection_dim": 16}
    audio = {"depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 2, 2], "patch_embeds_hidden_size": 16,
             "hidden_size": 128, "projection_dim": 16, "enable_fusion": fused}
    cfg = ClapConfig(text_config=text, audio_config=audio, projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(cfg).eval()
    model.save_pretrained(directory)
    ClapFeatureExtractor(truncation="fusion" if fused else "rand_trunc").save_pretrained(directory)
    return directory
