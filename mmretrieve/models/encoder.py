"""MultiModalEncoder: text, image, video and audio into one L2-normalised space of dimension D.

text, image: the open_clip towers. video: the image tower per frame (in chunks, so memory stays
bounded), then a temporal head (``temporal.py``). audio: a spectrogram ViT (``audio_tower.py``)
projected into D. Preprocessing is deterministic and lives in ``preprocess.py``.

The encoder does not switch grad modes: callers wrap inference in ``torch.inference_mode()`` (and
``torch.autocast`` on CUDA if they like); training calls the same ``encode_*`` with grad.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from dataclasses import replace
from importlib import resources
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsUnavailableError
from ..modality import Modality
from .audio_tower import AudioTower
from .clap import ClapEncoder, create_clap_encoder
from .dispatch import encode_modality
from .languagebind import LanguageBindEncoder, create_languagebind_encoder
from .preprocess import AudioFrontend, ImagePreprocessor
from .presets import Preset, get_preset, thaw
from .temporal import HEADS, make_head
from .tokens import truncate_tokens
from .weights import (ResolvedWeights, describe_load_error, load_safetensors, resolve_pretrained, save_safetensors,
                      sha256_file)

__all__ = ["MultiModalEncoder", "create_encoder", "truncate_tokens", "UntrainedAudioWarning", "FINGERPRINT_FORMAT"]

FINGERPRINT_FORMAT = 1
_WEIGHTS_FORMAT = "mmretrieve-encoder-weights/1"


class UntrainedAudioWarning(UserWarning):
    """The audio tower has no trained weights: audio vectors are not aligned with the others yet."""


class MultiModalEncoder(nn.Module):
    """Four towers, one space. Build it with :func:`create_encoder`."""

    def __init__(self, preset: Preset, clip: nn.Module, audio: AudioTower, video_head: nn.Module, *,
                 dim: int, model_config: dict, image: ImagePreprocessor, audio_frontend: AudioFrontend,
                 tokenizer_factory: Callable[[], Any], clip_info: dict, audio_tower_init: str,
                 frame_chunk: int = 32) -> None:
        super().__init__()
        self.preset = preset
        self.clip = clip
        self.audio = audio
        self.video_head = video_head
        self.dim = dim
        self.audio_trained = False
        self.frame_chunk = frame_chunk
        self.image_preprocessor = image
        self.audio_frontend = audio_frontend
        self._model_config = model_config
        self._tokenizer_factory = tokenizer_factory
        self._tokenizer: Any = None
        self._clip_info = clip_info
        self._audio_tower_init = audio_tower_init
        self._extra_weights: list[str] = []

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    @property
    def image_size(self) -> int:
        return self.image_preprocessor.size

    @property
    def video_head_name(self) -> str:
        return self.video_head.name

    @property
    def random_weights(self) -> bool:
        """True when the CLIP towers are seeded random weights (no checkpoint was loaded)."""
        return self._clip_info["checkpoint"] is None

    @property
    def untrained_modalities(self) -> tuple[str, ...]:
        """Modalities whose tower is untrained while the others carry trained weights: their vectors
        would sit beside meaningful ones as noise. (All-random test presets are random throughout.)"""
        return ("audio",) if not self.audio_trained and not self.random_weights else ()

    # -------------------------------------------------------------- preprocessing
    def preprocess_image(self, image: Any) -> torch.Tensor:
        """PIL image / HWC array / tensor -> (3, S, S) float32 on the CPU."""
        return self.image_preprocessor(image)

    def preprocess_frames(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (T, 3, S, S) float32 on the CPU (same maths as images)."""
        return self.image_preprocessor.frames(frames)

    def preprocess_audio(self, samples: np.ndarray) -> torch.Tensor:
        """Mono float32 at ``preset.audio.sample_rate`` -> (1, n_mels, target_frames) on the CPU."""
        return self.audio_frontend(samples)

    def tokenize(self, texts: Sequence[str], *, max_words: int | None = None) -> torch.Tensor:
        """Token ids (N, context_length) on the CPU. ``max_words`` keeps at most that many tokens per
        text, start and end tokens included (CLIP4Clip's ``max_words``): a longer text keeps its first
        ``max_words - 1`` tokens and its end token, the rest is padding, which the causal text tower
        never attends to, so the vector equals that of a ``max_words``-token context."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}]: expected str, got {type(t).__name__}")
        if self._tokenizer is None:
            self._tokenizer = self._tokenizer_factory()
        tokens = self._tokenizer(texts)
        if max_words is not None:
            tokens = truncate_tokens(tokens, max_words)
        return tokens

    # ------------------------------------------------------------------- encoders
    def _param_dtype(self) -> torch.dtype:
        return next(self.clip.parameters()).dtype

    def encode_text(self, texts: Sequence[str], *, max_words: int | None = None) -> torch.Tensor:
        """(N, D) float32, L2-normalised (texts cut to ``max_words`` tokens when given, see ``tokenize``)."""
        tokens = self.tokenize(texts, max_words=max_words)
        if tokens.shape[0] == 0:
            return torch.empty(0, self.dim, device=self.device)
        feats = self.clip.encode_text(tokens.to(self.device))
        return F.normalize(feats.float(), dim=-1)

    def _check_pixels(self, pixels: torch.Tensor, name: str, ndim: int) -> None:
        s = self.image_size
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != ndim or tuple(pixels.shape[-3:]) != (3, s, s):
            shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            lead = "(N, " if ndim == 4 else "(B, T, "
            raise ValueError(f"{name}: expected {lead}3, {s}, {s}) preprocessed pixels, got {shape}")

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.device, dtype=self._param_dtype(), non_blocking=True)
        return F.normalize(self.clip.encode_image(x).float(), dim=-1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, D) float32, L2-normalised."""
        self._check_pixels(pixels, "pixels", 4)
        if pixels.shape[0] == 0:
            return torch.empty(0, self.dim, device=self.device)
        return self._image_features(pixels)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor | None = None, *,
                     chunk_size: int | None = None) -> torch.Tensor:
        """(B, T, 3, S, S) frames, mask (B, T) True = real frame -> (B, D) float32, L2-normalised.

        Only real frames go through the image tower, ``chunk_size`` (default ``frame_chunk``) at a
        time, so memory on the device stays bounded whatever B x T is.
        """
        self._check_pixels(frames, "frames", 5)
        b, t = frames.shape[:2]
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool)
        mask = mask.to(dtype=torch.bool)
        if tuple(mask.shape) != (b, t):
            raise ValueError(f"mask: expected shape ({b}, {t}), got {tuple(mask.shape)}")
        if b == 0:
            return torch.empty(0, self.dim, device=self.device)
        chunk = max(1, int(chunk_size or self.frame_chunk))
        flat_mask = mask.reshape(-1).to(frames.device)
        real = frames.reshape(b * t, *frames.shape[2:])[flat_mask]
        parts = [self._image_features(real[i : i + chunk]) for i in range(0, real.shape[0], chunk)]
        dev = self.device
        feats = torch.zeros(b * t, self.dim, device=dev, dtype=torch.float32)
        if parts:
            idx = flat_mask.nonzero().flatten().to(dev)
            feats = feats.index_put((idx,), torch.cat(parts))
        pooled = self.video_head(feats.view(b, t, self.dim), mask.to(dev))
        return F.normalize(pooled.float(), dim=-1)

    def encode_audio(self, mels: torch.Tensor) -> torch.Tensor:
        """(B, 1, n_mels, target_frames) log-mel -> (B, D) float32, L2-normalised."""
        if not isinstance(mels, torch.Tensor):
            raise ValueError(f"mels: expected a tensor, got {type(mels).__name__}")
        if mels.ndim == 4 and mels.shape[0] == 0:
            return torch.empty(0, self.dim, device=self.device)
        x = mels.to(self.device, dtype=self.audio.conv.weight.dtype, non_blocking=True)
        return F.normalize(self.audio(x).float(), dim=-1)

    def encode(self, modality: Modality | str, media: Any, *, max_words: int | None = None) -> torch.Tensor:
        """The one modality dispatch: a collated batch of one modality -> (B, D) float32, L2-normalised.

        text: a list of strings (cut to ``max_words`` tokens when given); image: (B, 3, S, S) pixels;
        video: ``(frames (B, T, 3, S, S), mask (B, T))``; audio: (B, 1, n_mels, target_frames) log-mel
        (``mmretrieve.embedding.collate`` builds them). Grad mode is the caller's: inference wraps it
        in ``torch.inference_mode()``, training does not.
        """
        return encode_modality(self, modality, media, max_words=max_words)

    # ---------------------------------------------------------------- fingerprint
    def fingerprint(self) -> dict:
        """Everything that decides the vectors, JSON-able. Two encoders with the same fingerprint
        give the same vector for the same input."""
        info = self._clip_info
        if info["checkpoint"] is not None and info.get("sha256") is None:
            info["sha256"] = sha256_file(info["checkpoint"])
        v = self.preset.video
        fp = {
            "format": FINGERPRINT_FORMAT,
            "preset": self.preset.name,
            "dim": self.dim,
            "clip": {
                "model": info["model"],
                "pretrained": info["source"],
                "weights_sha256": info.get("sha256"),
                "random_seed": self.preset.seed if info["checkpoint"] is None else None,
                "quick_gelu": info["quick_gelu"],
                "architecture": self._model_config,
            },
            "extra_weights_sha256": list(self._extra_weights),
            "seed": self.preset.seed,
            "image": self.image_preprocessor.describe(),
            "video": {"num_frames": v.num_frames, "fps": v.fps, "window": v.window, "max_frames": v.max_frames,
                      "head": self.video_head.name,
                      "head_layers": v.head_layers if self.video_head.name == "transformer" else None,
                      "frame_l2_before_head": True},
            "audio": {**self.audio_frontend.describe(), "tower_init": self._audio_tower_init,
                      "trained": self.audio_trained},
        }
        return json.loads(json.dumps(fp))

    def fingerprint_id(self) -> str:
        """16 hex digits of SHA-256 over the canonical JSON of :meth:`fingerprint`."""
        canon = json.dumps(self.fingerprint(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]

    # -------------------------------------------------------------------- weights
    def save_weights(self, path: str | os.PathLike, *, parts: Sequence[str] | None = None) -> None:
        """Write the state dict (or only the given top-level parts: "clip", "audio", "video_head")
        to a safetensors file, atomically."""
        state = self.state_dict()
        if parts is not None:
            bad = sorted(set(parts) - {"clip", "audio", "video_head"})
            if bad:
                raise ValueError(f"parts: unknown part(s) {bad}; choose from clip, audio, video_head")
            state = {k: v for k, v in state.items() if k.split(".", 1)[0] in parts}
        meta = {"format": _WEIGHTS_FORMAT, "preset": self.preset.name, "video_head": self.video_head.name,
                "dim": str(self.dim)}
        save_safetensors(path, state, meta)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load a safetensors file written by :meth:`save_weights` (all or some parts).

        Every tensor in the file must match a parameter of this encoder by name and shape.
        """
        path = os.fspath(path)
        if not path.endswith(".safetensors"):
            raise ValueError(f"{path}: encoder weights must be a .safetensors file")
        tensors, meta = load_safetensors(path)
        own = self.state_dict()
        unexpected = sorted(k for k in tensors if k not in own)
        if unexpected:
            hint = ""
            if any(k.startswith("video_head.") for k in unexpected):
                hint = (f" (the file has a {meta.get('video_head', 'different')!r} video head; this encoder's "
                        f"is {self.video_head.name!r}: create it with video_head={meta.get('video_head')!r})")
            raise ValueError(f"{path}: {len(unexpected)} tensor(s) this encoder does not have, e.g. "
                             f"{unexpected[:5]}{hint}")
        wrong = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in tensors.items()
                 if tuple(v.shape) != tuple(own[k].shape)]
        if wrong:
            raise ValueError(f"{path}: shape mismatch for {len(wrong)} tensor(s), e.g. {wrong[:5]} "
                             f"(made for preset {meta.get('preset', '?')!r}, this is {self.preset.name!r})")
        if not tensors:
            raise ValueError(f"{path}: the file holds no tensors")
        self.load_state_dict(tensors, strict=False)
        self._extra_weights.append(sha256_file(path))
        if any(k.startswith("audio.") for k in tensors):
            self.audio_trained = True

    def extra_repr(self) -> str:
        return f"preset={self.preset.name!r}, dim={self.dim}, head={self.video_head.name!r}"


# ---------------------------------------------------------------------- factory
def _plain_clip_config(cfg: dict) -> bool:
    return not ("timm_model_name" in cfg.get("vision_cfg", {}) or "hf_model_name" in cfg.get("text_cfg", {})
                or cfg.get("custom_text") or "multimodal_cfg" in cfg)


def _build_clip(preset: Preset, resolved: ResolvedWeights) -> tuple[nn.Module, dict, str, bool]:
    """(model, model_config, model label, quick_gelu); random weights come from the current RNG."""
    import open_clip
    from open_clip.factory import load_checkpoint
    from open_clip.model import CLIP

    quick_gelu = bool(resolved.quick_gelu) if resolved.quick_gelu is not None else preset.clip.quick_gelu
    if resolved.local_dir is not None:
        model = open_clip.create_model(f"local-dir:{resolved.local_dir}", device="cpu")
        cfg = dict(resolved.model_config or {})
        return model, cfg, resolved.source or "local-dir", bool(cfg.get("quick_gelu", False))
    if preset.clip.config is not None:
        cfg, label = thaw(preset.clip.config), preset.clip.model or f"{preset.name}-config"
    else:
        cfg = open_clip.get_model_config(preset.clip.model)
        if cfg is None:
            raise ValueError(f"preset {preset.name!r}: {preset.clip.model!r} is not an open_clip model name "
                             f"(see open_clip.list_models())")
        label = preset.clip.model
    quick_gelu = quick_gelu or bool(cfg.pop("quick_gelu", False))
    cfg_out = {**copy.deepcopy(cfg), "quick_gelu": quick_gelu}
    if _plain_clip_config(cfg):
        model = CLIP(**cfg, quick_gelu=quick_gelu)
        if resolved.checkpoint is not None:
            try:
                load_checkpoint(model, resolved.checkpoint, strict=True, weights_only=True)
            except Exception as e:
                raise WeightsUnavailableError(f"{resolved.checkpoint}: cannot load it into {label} for preset "
                                              f"{preset.name!r} ({describe_load_error(e)})") from None
    else:
        if preset.clip.model is None:
            raise ValueError(f"preset {preset.name!r}: inline configs must be plain open_clip CLIP configs")
        model = open_clip.create_model(preset.clip.model, pretrained=resolved.checkpoint,
                                       force_quick_gelu=quick_gelu, device="cpu")
    return model, cfg_out, label, quick_gelu


def _tokenizer_factory(preset: Preset, resolved: ResolvedWeights, cfg: dict) -> Callable[[], Any]:
    import open_clip

    if resolved.local_dir is not None:
        return lambda: open_clip.get_tokenizer(f"local-dir:{resolved.local_dir}")
    if preset.clip.config is None and preset.clip.model is not None:
        return lambda: open_clip.get_tokenizer(preset.clip.model)
    ctx = int(cfg.get("text_cfg", {}).get("context_length", 77))
    return lambda: open_clip.tokenizer.SimpleTokenizer(context_length=ctx)


def _weights_file(preset: Preset, weights: str | os.PathLike, *, user: bool) -> str:
    """The weights file to load. A path the user passes (``weights=``, ``--weights``) is read from the
    current directory when relative; only a preset's own ``weights`` (a bundled asset such as
    ``assets/sample.safetensors``) resolves inside the package."""
    path = os.path.expanduser(os.fspath(weights))
    if os.path.isabs(path):
        pass
    elif user:
        path = os.path.abspath(path)
    else:
        path = str(resources.files("mmretrieve").joinpath(path))
    if not os.path.isfile(path):
        what = "weights" if user else f"preset {preset.name!r}"
        raise WeightsUnavailableError(f"{what}: encoder weights file not found: {path}")
    return path


def create_encoder(preset: str | Preset = "clip-vit-b32", *, device: str | torch.device | None = None,
                   pretrained: str | Mapping[str, str] | None = None, weights: str | None = None,
                   video_head: str | None = None,
                   frame_chunk: int = 32) -> MultiModalEncoder | LanguageBindEncoder | ClapEncoder:
    """Build a :class:`MultiModalEncoder` (for ``kind: languagebind`` presets a
    :class:`~mmretrieve.models.languagebind.LanguageBindEncoder`, for ``kind: clap`` a
    :class:`~mmretrieve.models.clap.ClapEncoder`) in eval mode.

    preset: a preset name (:func:`list_presets`), a preset JSON path, or a :class:`Preset`.
    device: None -> "cuda" if available, else "cpu".
    pretrained: overrides the preset's CLIP weights: an open_clip tag, a local file or directory,
        or "hf-hub:org/repo". Weights come from the local path or the Hugging Face cache; the hub is
        contacted only if it answers a quick probe, otherwise WeightsUnavailableError at once.
        LanguageBind presets: a mapping modality -> checkpoint directory, or one directory holding
        a subdirectory per tower (see :func:`~mmretrieve.models.languagebind.resolve_towers`).
    weights: a safetensors file of trained encoder parts (audio tower, video head, or all),
        overriding the preset's ``weights``; a relative path is read from the current directory.
    video_head: "mean" or "transformer", overriding the preset.
    frame_chunk: frames per image-tower call in :meth:`MultiModalEncoder.encode_video`.

    Random-weight presets are seeded inside ``torch.random.fork_rng``: identical every run, and the
    global RNG is left untouched.
    """
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    if p.kind in ("languagebind", "clap"):
        make = create_languagebind_encoder if p.kind == "languagebind" else create_clap_encoder
        return make(p, device=device, pretrained=pretrained, weights=weights, video_head=video_head,
                    frame_chunk=frame_chunk)
    if video_head is not None:
        if video_head not in HEADS:
            raise ValueError(f"video_head: unknown temporal head {video_head!r}; choose one of {', '.join(HEADS)}")
        p = replace(p, video=replace(p.video, head=video_head))
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    source = pretrained if pretrained is not None else p.clip.pretrained
    resolved = resolve_pretrained(p.clip.model, source, p.name)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seed)
        clip, cfg, label, quick_gelu = _build_clip(p, resolved)
        dim = int(cfg.get("embed_dim") or clip.text_projection.shape[-1])
        if AudioTower.supports(clip.visual):
            audio, tower_init = AudioTower.from_visual(p.audio, clip.visual, dim), "vit-from-image-tower"
        else:
            audio, tower_init = AudioTower.from_scratch(p.audio, dim), "vit-random"
        head = make_head(p.video.head, dim, layers=p.video.head_layers, max_frames=p.video.max_frames)

    size = getattr(clip.visual, "image_size", p.image_size)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    pre = dict(resolved.preprocess or {})
    mean = tuple(float(v) for v in pre.get("mean", p.mean))
    std = tuple(float(v) for v in pre.get("std", p.std))
    info = {"model": label, "source": resolved.source, "checkpoint": resolved.checkpoint,
            "quick_gelu": quick_gelu, "sha256": None}
    enc = MultiModalEncoder(
        p, clip, audio, head, dim=dim, model_config=cfg,
        image=ImagePreprocessor(size, mean, std), audio_frontend=AudioFrontend(p.audio),
        tokenizer_factory=_tokenizer_factory(p, resolved, cfg), clip_info=info,
        audio_tower_init=tower_init, frame_chunk=frame_chunk)
    enc.to(dev).eval()
    if weights is not None:
        enc.load_weights(_weights_file(p, weights, user=True))
    elif p.weights is not None:
        enc.load_weights(_weights_file(p, p.weights, user=False))
    if not enc.audio_trained and not enc.random_weights:
        warnings.warn(f"preset {p.name!r}: the audio tower is untrained (initialised from the image tower, "
                      f"random projection to the shared space); audio results are meaningless until it is "
                      f"trained or trained weights are passed with weights=...", UntrainedAudioWarning, stacklevel=2)
    return enc
