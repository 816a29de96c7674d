"""Checkpoints for exact resume, in safe formats only.

A checkpoint is a folder ``checkpoints/step-NNNNNNN/`` holding
  model.safetensors    the encoder (``MultiModalEncoder.save_weights`` format: loadable with
                       ``create_encoder(preset, weights=...)``); LoRA deltas merged in, original keys
  lora.safetensors     only for runs with LoRA: the adapters and the SHA-256 of each frozen base
                       weight. A resume rebuilds the base from the config (it is frozen), checks the
                       hashes, and restores the adapters: the exact pre-merge state
  trainer.safetensors  the learnable temperature and the torch / numpy RNG states
  optimizer.pt         ``optimizer.state_dict()`` (plain tensors and numbers; read back with
                       ``torch.load(weights_only=True)``, which refuses arbitrary pickles)
  state.json           step, scheduler and scaler state, the Python RNG state, the config
It is written to a temporary folder then renamed, and ``LATEST`` (a one-line text file naming the
newest checkpoint) is replaced atomically afterwards: a run killed at any moment resumes from the
last complete checkpoint.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from mmretrieve.models.weights import torch_load_tensors

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "CheckpointState", "copy_checkpoint",
           "encoder_weights_meta"]

_FORMAT = "mmretrieve-train-checkpoint/1"
_WEIGHTS_FORMAT = "mmretrieve-encoder-weights/1"  # MultiModalEncoder.save_weights's


def encoder_weights_meta(encoder) -> dict[str, str]:
    """The safetensors metadata ``MultiModalEncoder.save_weights`` writes."""
    return {"format": _WEIGHTS_FORMAT, "preset": encoder.preset.name, "video_head": encoder.video_head_name,
            "dim": str(encoder.dim)}


def _save_encoder(encoder, folder: str) -> None:
    from mmretrieve.models.weights import save_safetensors

    from .lora import has_lora, lora_state, merged_state_dict

    if not has_lora(encoder):
        encoder.save_weights(os.path.join(folder, "model.safetensors"))
        return
    save_safetensors(os.path.join(folder, "model.safetensors"), merged_state_dict(encoder),
                     encoder_weights_meta(encoder))
    tensors, meta = lora_state(encoder)
    save_safetensors(os.path.join(folder, "lora.safetensors"), tensors, meta)


def _load_encoder(encoder, folder: str) -> None:
    from mmretrieve.models.weights import load_safetensors

    from .lora import has_lora, load_lora_state, lora_base_keys

    model_path, lora_path = os.path.join(folder, "model.safetensors"), os.path.join(folder, "lora.safetensors")
    saved_lora = os.path.isfile(lora_path)
    if saved_lora != has_lora(encoder):
        raise ValueError(f"{folder}: the checkpoint was written {'with' if saved_lora else 'without'} LoRA adapters "
                         f"but this run has lora.enabled={not saved_lora}; resume with the run's own config")
    if not saved_lora:
        encoder.load_weights(model_path)
        return
    tensors, meta = load_safetensors(lora_path)
    load_lora_state(encoder, tensors, meta, where=lora_path)  # checks the frozen bases too
    merged, _ = load_safetensors(model_path)
    bases = set(lora_base_keys(encoder))
    rest = {k: v for k, v in merged.items() if k not in bases}  # the merged LoRA'd weights: rebuilt instead
    own = {k: v for k, v in encoder.state_dict().items() if ".parametrizations." not in k}
    if set(rest) != set(own) or bases - set(merged):
        diff = sorted((set(rest) ^ set(own)) | (bases - set(merged)))
        raise ValueError(f"{model_path}: tensors do not match this encoder's, e.g. {diff[:5]}")
    wrong = [k for k, v in rest.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError(f"{model_path}: shape mismatch for {wrong[:5]}")
    encoder.load_state_dict(rest, strict=False)
    if any(k.startswith("audio.") for k in rest):
        encoder.audio_trained = True


@dataclass(frozen=True)
class CheckpointState:
    path: str
    step: int
    state: dict


def _rng_tensors() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py = random.getstate()
    meta = {"numpy": [name, int(pos), int(has_gauss), float(cached)], "python": [py[0], list(py[1]), py[2]]}
    return tensors, meta


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    v, state, g = meta["python"]
    random.setstate((v, tuple(state), g))


def save_checkpoint(out: str, step: int, encoder, logit_scale: torch.nn.Module, optimizer, scheduler,
                    scaler, extra: dict[str, Any], keep_last: int = 2, *,
                    modules: Mapping[str, torch.nn.Module] | None = None, save_encoder: bool = True) -> str:
    """Write the checkpoint of ``step`` under ``out/checkpoints`` and point ``out/LATEST`` at it.

    ``modules`` are extra trained modules (e.g. an inversion network), each written to
    ``NAME.safetensors``; ``save_encoder=False`` leaves out a frozen encoder (rebuilt from the config)."""
    from mmretrieve.models.weights import save_safetensors

    root = os.path.join(out, "checkpoints")
    os.makedirs(root, exist_ok=True)
    name = f"step-{step:07d}"
    final = os.path.join(root, name)
    tmp = final + f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if save_encoder:
        _save_encoder(encoder, tmp)
    for name, module in (modules or {}).items():
        save_safetensors(os.path.join(tmp, f"{name}.safetensors"), module.state_dict(), {"format": _FORMAT})
    tensors, rng_meta = _rng_tensors()
    tensors["logit_scale.log_scale"] = logit_scale.log_scale.detach()
    save_safetensors(os.path.join(tmp, "trainer.safetensors"), tensors, {"format": _FORMAT})
    torch.save(optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
    state = {
        "format": _FORMAT,
        "step": step,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_meta,
        "encoder_saved": save_encoder,
        "modules": sorted(modules or {}),
        **extra,
    }
    with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, default=float)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = os.path.join(out, f"LATEST.tmp-{os.getpid()}")
    with open(latest_tmp, "w", encoding="utf-8") as f:
        f.write(name + "\n")
    os.replace(latest_tmp, os.path.join(out, "LATEST"))
    if keep_last > 0:
        old = sorted(d for d in os.listdir(root) if d.startswith("step-") and ".tmp-" not in d)
        for d in old[:-keep_last]:
            shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    return final


def latest_checkpoint(out: str) -> str | None:
    """The newest complete checkpoint folder of a run, or None."""
    marker = os.path.join(out, "LATEST")
    if not os.path.isfile(marker):
        return None
    with open(marker, encoding="utf-8") as f:
        name = f.read().strip()
    path = os.path.join(out, "checkpoints", name)
    return path if os.path.isfile(os.path.join(path, "state.json")) else None


def load_checkpoint(path: str, encoder, logit_scale: torch.nn.Module, optimizer, scheduler, scaler, *,
                    modules: Mapping[str, torch.nn.Module] | None = None) -> CheckpointState:
    """Restore everything ``save_checkpoint`` wrote into live objects; returns the step."""
    from mmretrieve.models.weights import load_safetensors

    with open(os.path.join(path, "state.json"), encoding="utf-8") as f:
        state = json.load(f)
    if state.get("format") != _FORMAT:
        raise ValueError(f"{path}: not an mmretrieve training checkpoint (format {state.get('format')!r})")
    saved = sorted(state.get("modules", []))
    if saved != sorted(modules or {}):
        raise ValueError(f"{path}: the checkpoint holds modules {saved} but this run has {sorted(modules or {})}; "
                         f"resume with the run's own config")
    if state.get("encoder_saved", True):
        _load_encoder(encoder, path)
    for name, module in (modules or {}).items():
        file = os.path.join(path, f"{name}.safetensors")
        tensors, _ = load_safetensors(file)
        own = module.state_dict()
        wrong = sorted(set(tensors) ^ set(own)) + [k for k in tensors if k in own and tensors[k].shape != own[k].shape]
        if wrong:
            raise ValueError(f"{file}: tensors do not match this run's {name} module, e.g. {wrong[:5]}")
        module.load_state_dict(tensors)
    tensors, _ = load_safetensors(os.path.join(path, "trainer.safetensors"))
    with torch.no_grad():
        logit_scale.log_scale.copy_(tensors["logit_scale.log_scale"])
    opt_state = torch_load_tensors(os.path.join(path, "optimizer.pt"))  # never unpickles objects
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    _restore_rng(tensors, state["rng"])
    return CheckpointState(path, int(state["step"]), state)


def copy_checkpoint(src: str, dst: str) -> None:
    """Copy a checkpoint folder atomically (e.g. to ``out/best``)."""
    tmp = dst + f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
