"""Weights: finding open_clip checkpoints (local path, Hugging Face cache, download) and
reading/writing mmretrieve's own safetensors files.

Finding weights never hangs: the Hugging Face cache is checked first with ``local_files_only``;
only when it misses is the hub contacted, and only after a 3-second reachability probe says the
host answers. Offline (``HF_HUB_OFFLINE=1``, no DNS, no route) the caller gets a
``WeightsUnavailableError`` at once, naming the preset and how to pass a local file.
Untrusted files are never unpickled: safetensors, or ``torch.load(weights_only=True)`` for
open_clip's ``.bin``/``.pt`` checkpoints.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import torch

from ..errors import WeightsUnavailableError

__all__ = [
    "ResolvedWeights",
    "resolve_pretrained",
    "sha256_file",
    "save_safetensors",
    "load_safetensors",
    "load_checkpoint_tensors",
    "hf_cache_dir",
    "hub_offline",
    "cached_pretrained",
    "host_reachable",
    "hf_endpoint",
]

_CHECKPOINT_NAMES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "model.pth",
)
_PROBE_TIMEOUT = 3.0
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the CLIP weights of an encoder come from.

    checkpoint: a local file to load (None for random weights).
    model_config: open_clip architecture read next to the checkpoint (hf-hub / open_clip dirs), if any.
    preprocess: open_clip preprocess config (mean, std, ...) from the tag or the directory, if any.
    source: what the user asked for, for the fingerprint ("laion2b_s34b_b79k", "hf-hub:org/repo",
        "file:<name>").
    quick_gelu: the tag's activation, when the tag says.
    """

    checkpoint: str | None
    source: str | None
    model_config: Mapping[str, Any] | None = None
    preprocess: Mapping[str, Any] | None = None
    local_dir: str | None = None
    quick_gelu: bool | None = None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, read now (not at import time as huggingface_hub does)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> str:
    """The Hugging Face hub cache directory, honouring HF_HUB_CACHE / HF_HOME as set now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(home, "hub")


def _hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def _reachable(url: str, timeout: float = _PROBE_TIMEOUT) -> tuple[bool, str]:
    """Can we open a TCP connection to the URL's host within ``timeout``? (DNS included.)"""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    result: list[tuple[bool, str]] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append((True, ""))
        except OSError as e:
            result.append((False, f"{type(e).__name__}: {e}"))

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    if not result:
        return False, f"no answer from {host} within {timeout:.0f} s"
    return result[0]


def host_reachable(url: str, timeout: float = _PROBE_TIMEOUT) -> tuple[bool, str]:
    """(True, "") when a TCP connection to the URL's host opens within ``timeout``, else (False, why)."""
    return _reachable(url, timeout)


def hf_endpoint() -> str:
    """The Hugging Face endpoint (HF_ENDPOINT or huggingface.co), read now."""
    return _hf_endpoint()


def _unavailable(preset: str, what: str, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"preset {preset!r}: cannot get the weights {what}: {why}. Either pass a local checkpoint — "
        f"create_encoder({preset!r}, pretrained='/path/open_clip_model.safetensors') in Python or "
        f"`--pretrained PATH` on the command line (a .safetensors/.bin file, an open_clip directory with "
        f"open_clip_config.json, or 'hf-hub:org/repo') — or copy a populated Hugging Face cache to this "
        f"machine (HF_HUB_CACHE={hf_cache_dir()}; set HF_HUB_OFFLINE=1 to never try the network).")


def _cached_hf_file(repo: str, filenames: list[str]) -> str | None:
    """The first of ``filenames`` in ``repo`` found in the Hugging Face cache (never the network)."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        # a pure cache lookup: hf_hub_download(local_files_only=True) still builds request headers,
        # and huggingface_hub 2.x may fetch a registry from the hub while doing so
        found = try_to_load_from_cache(repo, name, cache_dir=hf_cache_dir())
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _hf_file(repo: str, filenames: list[str], preset: str, what: str) -> str:
    """The first of ``filenames`` in ``repo``: from the cache, else downloaded if the hub answers."""
    from huggingface_hub import hf_hub_download

    cache = hf_cache_dir()
    cached = _cached_hf_file(repo, filenames)
    if cached is not None:
        return cached
    if hub_offline():
        raise _unavailable(preset, what, f"not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set")
    ok, reason = _reachable(_hf_endpoint())
    if not ok:
        raise _unavailable(preset, what, f"not in the Hugging Face cache ({cache}) and "
                                         f"{_hf_endpoint()} is unreachable ({reason})")
    errors = []
    for name in filenames:
        try:
            return hf_hub_download(repo, name, cache_dir=cache)
        except Exception as e:  # e.g. this repo has only the .bin: try the next name
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise _unavailable(preset, what, "download failed (" + "; ".join(errors) + ")")


def _url_cache_file(url: str) -> str:
    """Where open_clip keeps a checkpoint it downloaded from a plain URL."""
    return os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(urlparse(url).path))


def _url_file(url: str, preset: str, what: str) -> str:
    from open_clip.pretrained import download_pretrained_from_url

    cache = os.path.expanduser("~/.cache/clip")
    target = _url_cache_file(url)
    if os.path.isfile(target):
        return target
    ok, reason = _reachable(url)
    if hub_offline() or not ok:
        raise _unavailable(preset, what, f"not in {cache} and {url} is unreachable ({reason or 'offline'})")
    try:
        return download_pretrained_from_url(url, cache_dir=cache)
    except Exception as e:
        raise _unavailable(preset, what, f"download from {url} failed ({e})") from e


def _checkpoint_in_dir(path: Path) -> str | None:
    for name in _CHECKPOINT_NAMES:
        if (path / name).is_file():
            return str(path / name)
    found = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) + sorted(path.glob("*.pt*"))
    return str(found[0]) if found else None


def _read_open_clip_config(path: str) -> tuple[dict, dict]:
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    return cfg.get("model_cfg", cfg), cfg.get("preprocess_cfg", {})


def resolve_pretrained(model: str | None, pretrained: str | None, preset: str) -> ResolvedWeights:
    """Find (and, when the hub answers, download) the checkpoint for ``pretrained``.

    ``pretrained``: None (random), a local file, a local directory, "hf-hub:org/repo", or an
    open_clip tag of ``model``. Raises WeightsUnavailableError at once when the weights are neither
    local nor reachable, ValueError for an unknown tag.
    """
    if pretrained is None:
        return ResolvedWeights(None, None)
    text = os.path.expanduser(os.fspath(pretrained))
    if text.startswith("hf-hub:"):
        repo = text[len("hf-hub:"):].strip("/")
        what = f"from {text}"
        cfg_path = _hf_file(repo, ["open_clip_config.json"], preset, what)
        model_cfg, pre = _read_open_clip_config(cfg_path)
        ckpt = _hf_file(repo, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"], preset, what)
        return ResolvedWeights(ckpt, text, model_cfg, pre, os.path.dirname(cfg_path))
    if os.path.exists(text):  # a local file or folder: relative to the current directory, recorded absolute
        text = os.path.abspath(text)
    if os.path.isdir(text):
        d = Path(text)
        ckpt = _checkpoint_in_dir(d)
        if ckpt is None:
            raise WeightsUnavailableError(f"pretrained: no checkpoint (.safetensors/.bin/.pt) in directory {text}")
        model_cfg = pre = None
        if (d / "open_clip_config.json").is_file():
            model_cfg, pre = _read_open_clip_config(str(d / "open_clip_config.json"))
        return ResolvedWeights(ckpt, f"file:{os.path.basename(ckpt)}", model_cfg, pre, text if model_cfg else None)
    if os.path.isfile(text):
        return ResolvedWeights(text, f"file:{os.path.basename(text)}")
    if model is None:
        raise WeightsUnavailableError(f"pretrained: {text} is not a file, a directory nor 'hf-hub:org/repo' "
                                      f"(preset {preset!r} has no open_clip model name, so tags do not apply)")
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, text)
    if not cfg:
        if os.sep in text or text.endswith((".safetensors", ".bin", ".pt", ".pth")):
            raise WeightsUnavailableError(f"pretrained: checkpoint file not found: {text}")
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ValueError(f"pretrained: {text!r} is neither a local path nor an open_clip tag of {model}; "
                         f"tags: {', '.join(tags) or '(none)'}")
    pre = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    what = f"for {model} / {text}"
    if cfg.get("file"):
        ckpt = cfg["file"]
    elif cfg.get("hf_hub"):
        repo, names = _hf_names(cfg["hf_hub"])
        ckpt = _hf_file(repo, names, preset, what)
    elif cfg.get("url"):
        ckpt = _url_file(cfg["url"], preset, what)
    else:
        raise _unavailable(preset, what, "open_clip lists no download location for this tag")
    return ResolvedWeights(ckpt, text, None, pre, None, bool(cfg.get("quick_gelu", False)))


def _hf_names(hf_hub: str) -> tuple[str, list[str]]:
    """open_clip's ``hf_hub`` field -> (repo, checkpoint names to try, safetensors first)."""
    repo, filename = os.path.split(hf_hub)  # "org/repo/" (default file) or "org/repo/file.bin"
    if filename:
        return repo, [n for n in (_safe_name(filename), filename) if n]
    return repo, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


def cached_pretrained(model: str | None, pretrained: str | None) -> str | None:
    """The local file ``pretrained`` (an open_clip tag of ``model``, ``hf-hub:org/repo`` or a path)
    would load from, if it is already on this machine; None when it would have to be downloaded.
    Never touches the network."""
    if pretrained is None:
        return None
    text = os.path.expanduser(os.fspath(pretrained))
    if text.startswith("hf-hub:"):
        return _cached_hf_file(text[len("hf-hub:"):].strip("/"), ["open_clip_model.safetensors",
                                                                  "open_clip_pytorch_model.bin"])
    if os.path.isdir(text):
        return _checkpoint_in_dir(Path(text))
    if os.path.isfile(text):
        return text
    if model is None:
        return None
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, text) or {}
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    if cfg.get("hf_hub"):
        return _cached_hf_file(*_hf_names(cfg["hf_hub"]))
    if cfg.get("url"):
        target = _url_cache_file(cfg["url"])
        return target if os.path.isfile(target) else None
    return None


def _safe_name(filename: str) -> str | None:
    if filename == "open_clip_pytorch_model.bin":
        return "open_clip_model.safetensors"
    if filename.endswith(".bin"):
        return filename[: -len(".bin")] + ".safetensors"
    return None


def sha256_file(path: str) -> str:
    """SHA-256 of a file. Hugging Face cache blobs are named by it: then it is free."""
    real = os.path.realpath(path)
    name = os.path.basename(real)
    if _SHA_RE.match(name) and os.path.basename(os.path.dirname(real)) == "blobs":
        return name
    h = hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def describe_load_error(exc: BaseException) -> str:
    """One readable line for a failed weights load; a refused pickle says why instead of torch's advice."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in str(exc):
        return ("it holds pickled Python objects besides tensors, which mmretrieve never unpickles "
                "(untrusted code could run); save the weights as .safetensors")
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:600]}{'...' if len(text) > 600 else ''}"


def torch_load_tensors(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` on CPU; a refused or unreadable file is a ValueError naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:
        raise ValueError(f"{os.fspath(path)}: {describe_load_error(e)}") from None


def load_checkpoint_tensors(path: str) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or a .bin/.pt via ``torch.load(weights_only=True)``."""
    if str(path).endswith(".safetensors"):
        return load_safetensors(path)[0]
    obj = torch_load_tensors(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict (got {type(obj).__name__})")
    return obj


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                     metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    flat = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(flat, tmp, metadata=dict(metadata or {}))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; ValueError naming the file if it is not one."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    return tensors, meta
