"""Loading a published LanguageBind checkpoint directory, verified key by key.

A directory holds ``config.json`` and one weights file (``model.safetensors`` or
``pytorch_model.bin``). Loading is never a guess: the file's tensor names and shapes are read first
(the safetensors header, or ``torch.load(weights_only=True, mmap=True)``), compared with the tower the
config describes — every tensor must be consumed or be one of :data:`IGNORED` — and only then are
the tensors copied in. Any difference is a :class:`CheckpointMismatchError` naming the file, the key
and both shapes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch

from ...errors import CheckpointMismatchError
from ..weights import describe_load_error, sha256_file
from .config import TowerConfig, read_config
from .modules import LanguageBindTower

__all__ = ["WEIGHTS_NAMES", "IGNORED", "Accounting", "TowerCheckpoint", "open_checkpoint", "account",
           "load_tower", "compare_text_towers", "TEXT_PREFIXES"]

WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")
IGNORED = {
    "logit_scale": "the contrastive temperature: a training-only scalar",
    "text_model.embeddings.position_ids": "a buffer holding 0..76, recomputed at run time",
    "vision_model.embeddings.position_ids": "a buffer holding 0..N, recomputed at run time",
}
TEXT_PREFIXES = ("text_model.", "text_projection.")


@dataclass(frozen=True)
class Accounting:
    """Which tensors of a file a tower consumes, and which it ignores (by name, with the reason)."""

    file: str
    consumed: tuple[str, ...]
    ignored: tuple[str, ...]


@dataclass(frozen=True)
class TowerCheckpoint:
    """A checkpoint directory: its parsed config and its weights file."""

    directory: str
    config: TowerConfig
    weights: str

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensor name -> shape, without reading tensor data where the format allows."""
        if self.weights.endswith(".safetensors"):
            from safetensors import safe_open

            try:
                with safe_open(self.weights, framework="pt", device="cpu") as f:
                    return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            except Exception as e:
                raise CheckpointMismatchError(f"{self.weights}: not a readable safetensors file ({e})") from None
        return {k: tuple(v.shape) for k, v in self._torch_state().items()}

    def tensors(self, names: "list[str] | None" = None) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) pairs, read lazily one at a time."""
        if self.weights.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(self.weights, framework="pt", device="cpu") as f:
                for k in (names if names is not None else list(f.keys())):
                    yield k, f.get_tensor(k)
            return
        state = self._torch_state()
        for k in (names if names is not None else list(state)):
            yield k, state[k]

    def _torch_state(self) -> dict[str, torch.Tensor]:
        try:
            obj = torch.load(self.weights, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise CheckpointMismatchError(f"{self.weights}: {describe_load_error(e)}") from None
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointMismatchError(f"{self.weights}: not a state dict of tensors")
        return obj

    def sha256(self) -> str:
        return sha256_file(self.weights)


def open_checkpoint(directory: str | os.PathLike, kind: str | None = None) -> TowerCheckpoint:
    """The config and weights file of a published checkpoint directory (no tensors are read)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: not a directory (a LanguageBind checkpoint directory holds "
                                f"config.json and {' or '.join(WEIGHTS_NAMES)})")
    cfg = read_config(os.path.join(directory, "config.json"), kind)
    for name in WEIGHTS_NAMES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return TowerCheckpoint(directory, cfg, path)
    raise FileNotFoundError(f"{directory}: no weights file ({' or '.join(WEIGHTS_NAMES)})")


def expected_shapes(cfg: TowerConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the tower ``cfg`` describes (built on the meta device: no memory)."""
    with torch.device("meta"):
        tower = LanguageBindTower(cfg)
    return {k: tuple(v.shape) for k, v in tower.state_dict().items()}


def account(ckpt: TowerCheckpoint) -> Accounting:
    """Check the file's tensors against the tower its config describes: every name and every shape."""
    want = expected_shapes(ckpt.config)
    have = ckpt.shapes()
    f = ckpt.weights
    lora = sorted(k for k in have if ".lora_" in k or ".base_model.model." in k)
    if lora:
        raise CheckpointMismatchError(f"{f}: holds LoRA adapter tensors (e.g. {lora[:3]}): LoRA-tuned checkpoints are "
                                      f"not supported; use the fully fine-tuned repositories (LanguageBind_Audio_FT, "
                                      f"LanguageBind_Video_FT)")
    for k, shape in have.items():
        if k in want and want[k] != shape:
            raise CheckpointMismatchError(f"{f}: tensor {k!r} has shape {list(shape)}, the tower described by "
                                          f"config.json needs {list(want[k])}")
    unknown = sorted(k for k in have if k not in want and k not in IGNORED)
    if unknown:
        raise CheckpointMismatchError(f"{f}: {len(unknown)} tensor(s) the tower does not use and that are not "
                                      f"known to be ignorable, e.g. {unknown[:5]}")
    missing = sorted(k for k in want if k not in have)
    if missing:
        raise CheckpointMismatchError(f"{f}: {len(missing)} tensor(s) missing, e.g. "
                                      + ", ".join(f"{k!r} {list(want[k])}" for k in missing[:5]))
    return Accounting(f, tuple(sorted(want)), tuple(sorted(k for k in have if k in IGNORED)))


def _check_position_ids(name: str, value: torch.Tensor, f: str) -> None:
    flat = value.reshape(-1)
    if not torch.equal(flat.to(torch.long), torch.arange(flat.numel())):
        raise CheckpointMismatchError(f"{f}: {name!r} is not 0..{flat.numel() - 1}; positions are not the "
                                      f"standard ones, so this tower cannot be reproduced")


def load_tower(ckpt: TowerCheckpoint, *, text: bool = True) -> tuple[LanguageBindTower, Accounting]:
    """Build the tower on CPU in float32 and load every tensor after :func:`account` passed.

    ``text=False`` leaves the text transformer out (its tensors are still accounted for): the preset
    uses one text tower and compares the others with it (:func:`compare_text_towers`).
    """
    acc = account(ckpt)
    with torch.device("meta"):
        tower = LanguageBindTower(ckpt.config)
    if not text:
        tower.text_model = None  # type: ignore[assignment]
        tower.text_projection = None  # type: ignore[assignment]
    wanted = [k for k in acc.consumed if text or not k.startswith(TEXT_PREFIXES)]
    state = {}
    for k, v in ckpt.tensors(wanted + list(acc.ignored)):
        if k in IGNORED:
            if k.endswith("position_ids"):
                _check_position_ids(k, v, ckpt.weights)
            continue
        state[k] = v.to(torch.float32) if v.is_floating_point() else v
    tower.load_state_dict(state, strict=True, assign=True)
    return tower.eval(), acc


def compare_text_towers(reference: TowerCheckpoint, others: list[TowerCheckpoint]) -> None:
    """The language tower is shared (frozen during the publisher's training): the text tensors of every
    checkpoint must equal the reference's. Raises CheckpointMismatchError listing the ones that differ."""
    ref_shapes = {k: s for k, s in reference.shapes().items() if k.startswith(TEXT_PREFIXES)}
    names = sorted(ref_shapes)
    for other in others:
        shapes = {k: s for k, s in other.shapes().items() if k.startswith(TEXT_PREFIXES)}
        if set(shapes) != set(names):
            diff = sorted(set(shapes) ^ set(names))
            raise CheckpointMismatchError(f"{other.weights}: its text tower has other tensors than {reference.weights} "
                                          f"({diff[:5]}); the towers do not share one language space")
        differ = []
        for (k, a), (_, b) in zip(reference.tensors(names), other.tensors(names)):
            if a.shape != b.shape or not torch.equal(a, b):
                differ.append(k)
        if differ:
            raise CheckpointMismatchError(
                f"{other.weights}: {len(differ)} text-tower tensor(s) differ from {reference.weights}, e.g. "
                f"{differ[:5]}; LanguageBind towers share one frozen language tower, so these checkpoints do not "
                f"belong together (check that both come from the LanguageBind repositories the preset names)")
