"""CLAP (LAION, Apache-2.0) through ``transformers``' ``ClapModel``: text and audio in CLAP's own space.

For collections that are sound: a ``clap`` preset embeds text and audio only (its space is not the
CLIP/LanguageBind one, so images and videos are refused with the reason). Weights come from a local
directory in the transformers layout or the Hugging Face cache (``laion/clap-htsat-unfused``,
``laion/clap-htsat-fused``); loading reports every missing, unexpected or mis-shaped tensor.

Preprocessing is the publisher's ``ClapFeatureExtractor`` (48 kHz, 64 mel bins, 1024-point FFT,
hop 480, 10 s with repeat-padding), made deterministic: a window longer than 10 s is cut to its
first 10 s before the extractor sees it (the extractor would crop at random), and ``is_longer`` is
set as the extractor sets it for one clip of at most 10 s (True for the fused model, where the
extractor's rule is to pick a clip at random when none is longer; unused by the unfused model).
Requires the ``clap`` extra (``transformers``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointMismatchError, MediaError, MissingExtraError, WeightsUnavailableError
from ..modality import Modality
from .dispatch import encode_modality
from .presets import Preset
from .weights import hf_cache_dir, hf_endpoint, host_reachable, hub_offline, sha256_file

__all__ = ["ClapEncoder", "ClapAudioFrontend", "create_clap_encoder", "CLAP_WEIGHTS_NAMES"]

CLAP_WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")
_FILES = ("config.json", "preprocessor_config.json", "tokenizer_config.json")
_IGNORABLE = ("position_ids",)
FINGERPRINT_FORMAT = 1


def _require_transformers():
    try:
        import transformers
    except ImportError:
        raise MissingExtraError("the clap presets need transformers: pip install 'mmretrieve[clap]'") from None
    return transformers


@dataclass(frozen=True)
class ClapAudioFrontend:
    """Mono float samples at 48 kHz -> CLAP's input features (C, 1001, 64), deterministically."""

    directory: str

    @cached_property
    def _extractor(self) -> Any:
        return _require_transformers().ClapFeatureExtractor.from_pretrained(self.directory)

    @property
    def max_samples(self) -> int:
        return int(self._extractor.nb_max_samples)

    def __call__(self, samples: Any) -> torch.Tensor:
        if isinstance(samples, torch.Tensor):
            samples = samples.detach().cpu().numpy()
        x = np.asarray(samples)
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        if x.ndim != 1 or x.size == 0:
            raise MediaError(None, f"audio samples must be mono 1-D and non-empty, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
            raise MediaError(None, "audio samples must be finite floats")
        fe = self._extractor
        x = np.ascontiguousarray(x[: self.max_samples], dtype=np.float32)  # never the extractor's random crop
        feats = fe(x, sampling_rate=fe.sampling_rate, return_tensors="pt")["input_features"]
        return feats[0].to(torch.float32)

    def describe(self) -> dict:
        fe = self._extractor
        return {"kind": "clap-feature-extractor", "sampling_rate": fe.sampling_rate, "feature_size": fe.feature_size,
                "fft_window_size": fe.fft_window_size, "hop_length": fe.hop_length, "max_samples": self.max_samples,
                "truncation": fe.truncation, "padding": fe.padding, "frequency_min": fe.frequency_min,
                "frequency_max": fe.frequency_max, "longer": "cut to the first max_samples"}


class _NoVisual:
    """Stands where a visual preprocessor would: CLAP has no image or video tower."""

    size = 0

    def __call__(self, image: Any) -> torch.Tensor:
        raise MediaError(None, "preset clap embeds text and audio only; index images with another preset")

    def frames(self, frames: Any) -> torch.Tensor:
        raise MediaError(None, "preset clap embeds text and audio only; index videos with another preset")

    def describe(self) -> dict:
        return {}


class ClapEncoder(nn.Module):
    """Text and audio in CLAP's space. Build it with :func:`create_clap_encoder`."""

    modalities = ("text", "audio")
    audio_trained = True
    random_weights = False
    untrained_modalities: tuple[str, ...] = ()

    def __init__(self, preset: Preset, model: nn.Module, tokenizer: Any, directory: str, weights: str,
                 source: str) -> None:
        super().__init__()
        self.preset = preset
        self.model = model
        self.dim = int(model.config.projection_dim)
        self.fused = bool(model.config.audio_config.enable_fusion)
        self.audio_frontend = ClapAudioFrontend(directory)
        self.image_preprocessor = _NoVisual()
        self._tokenizer = tokenizer
        self._weights = weights
        self._source = source
        self._sha: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess_audio(self, samples: np.ndarray) -> torch.Tensor:
        return self.audio_frontend(samples)

    def tokenize(self, texts: Sequence[str], *, max_words: int | None = None) -> Mapping[str, torch.Tensor]:
        """The checkpoint tokenizer's ids and attention mask, padded per batch; ``max_words`` caps the
        tokens per text (start and end included)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}]: expected str, got {type(t).__name__}")
        if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 2):
            raise ValueError(f"max_words={max_words!r}: an integer >= 2 (start and end token included)")
        return self._tokenizer(texts, padding=True, truncation=True, max_length=max_words, return_tensors="pt")

    def encode_text(self, texts: Sequence[str], *, max_words: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        tok = self.tokenize(texts, max_words=max_words)
        out = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                           attention_mask=tok["attention_mask"].to(self.device))
        return F.normalize(out.pooler_output.float(), dim=-1)

    def encode_audio(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, 1001, 64) input features -> (B, D) float32, L2-normalised."""
        if not isinstance(feats, torch.Tensor) or feats.ndim != 4:
            got = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise ValueError(f"feats: expected (B, C, frames, mel bins) CLAP input features, got {got}")
        if feats.shape[0] == 0:
            return torch.empty(0, self.dim, device=self.device)
        is_longer = torch.full((feats.shape[0], 1), self.fused, dtype=torch.bool, device=self.device)
        out = self.model.get_audio_features(input_features=feats.to(self.device, torch.float32), is_longer=is_longer)
        return F.normalize(out.pooler_output.float(), dim=-1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"preset {self.preset.name!r} embeds text and audio only (CLAP has no image tower)")

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        raise ValueError(f"preset {self.preset.name!r} embeds text and audio only (CLAP has no video tower)")

    def encode(self, modality: Modality | str, media: Any, *, max_words: int | None = None) -> torch.Tensor:
        return encode_modality(self, modality, media, max_words=max_words)

    def fingerprint(self) -> dict:
        if self._sha is None:
            self._sha = sha256_file(self._weights)
        fp = {"format": FINGERPRINT_FORMAT, "kind": "clap", "preset": self.preset.name, "dim": self.dim,
              "weights": {"source": self._source, "file": os.path.basename(self._weights), "sha256": self._sha},
              "config": self.model.config.to_diff_dict(), "fused": self.fused,
              "audio": {**self.audio_frontend.describe(), "trained": True}, "video": {"head": None}}
        return json.loads(json.dumps(fp, default=str))

    def fingerprint_id(self) -> str:
        canon = json.dumps(self.fingerprint(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def _unavailable(preset: Preset, repo: str, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"preset {preset.name!r}: cannot get the weights ({repo}): {why}. Either pass a local directory in the "
        f"transformers layout (config.json, {' or '.join(CLAP_WEIGHTS_NAMES)}, preprocessor_config.json and the "
        f"tokenizer files) — create_encoder({preset.name!r}, pretrained='/path/{repo.split('/')[-1]}') in Python or "
        f"`--pretrained DIR` on the command line — or copy a populated Hugging Face cache to this machine "
        f"(HF_HUB_CACHE={hf_cache_dir()}; set HF_HUB_OFFLINE=1 to never try the network).")


def _snapshot(preset: Preset, repo: str) -> str:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", *CLAP_WEIGHTS_NAMES]
    try:
        return snapshot_download(repo, cache_dir=hf_cache_dir(), local_files_only=True, allow_patterns=patterns)
    except Exception:
        pass
    if hub_offline():
        raise _unavailable(preset, repo, f"not in the Hugging Face cache ({hf_cache_dir()}) and HF_HUB_OFFLINE is set")
    ok, reason = host_reachable(hf_endpoint())
    if not ok:
        raise _unavailable(preset, repo, f"not in the Hugging Face cache and {hf_endpoint()} is unreachable ({reason})")
    try:
        return snapshot_download(repo, cache_dir=hf_cache_dir(), allow_patterns=patterns)
    except Exception as e:
        raise _unavailable(preset, repo, f"the download failed ({type(e).__name__}: {e})") from None


def _load_model(directory: str, weights: str) -> nn.Module:
    transformers = _require_transformers()
    try:
        model, info = transformers.ClapModel.from_pretrained(directory, output_loading_info=True)
    except RuntimeError as e:  # transformers names the tensor and both shapes on a size mismatch
        raise CheckpointMismatchError(f"{weights}: {' '.join(str(e).split())[:800]}") from None
    problems = []
    for what in ("missing_keys", "unexpected_keys"):
        keys = sorted(k for k in info.get(what, ()) if not k.endswith(_IGNORABLE))
        if keys:
            problems.append(f"{len(keys)} {what.replace('_', ' ')}, e.g. {keys[:5]}")
    mismatched = list(info.get("mismatched_keys", ()))
    if mismatched:
        problems.append(f"mis-shaped tensors {mismatched[:5]}")
    if problems:
        raise CheckpointMismatchError(f"{weights}: does not match its config.json: " + "; ".join(problems))
    return model.eval()


def create_clap_encoder(preset: Preset, *, device: str | torch.device | None = None,
                        pretrained: str | os.PathLike | None = None, weights: str | None = None,
                        video_head: str | None = None, frame_chunk: int = 32) -> ClapEncoder:
    """Load a CLAP preset: ``pretrained`` a local directory in the transformers layout, or None for the
    Hugging Face cache of the preset's repository (``towers["audio"]``)."""
    if weights is not None or video_head is not None:
        raise ValueError(f"preset {preset.name!r}: weights= and video_head= do not apply to CLAP")
    transformers = _require_transformers()
    repo = dict(preset.towers or {}).get("audio")
    if repo is None:
        raise ValueError(f"preset {preset.name!r}: towers must name the CLAP repository under 'audio'")
    if isinstance(pretrained, Mapping):
        raise ValueError(f"pretrained: preset {preset.name!r} takes one directory, not a mapping")
    if pretrained is not None:
        directory = os.path.expanduser(os.fspath(pretrained))
        if not os.path.isdir(directory):
            raise WeightsUnavailableError(f"pretrained: {directory} is not a directory (CLAP loads a transformers "
                                          f"directory: config.json, weights, preprocessor_config.json, tokenizer)")
        source = f"dir:{os.path.basename(os.path.normpath(directory))}"
    else:
        directory, source = _snapshot(preset, repo), f"hf-hub:{repo}"
    for name in _FILES:
        if not os.path.isfile(os.path.join(directory, name)):
            raise WeightsUnavailableError(f"{directory}: {name} missing (a CLAP directory holds config.json, "
                                          f"{' or '.join(CLAP_WEIGHTS_NAMES)}, preprocessor_config.json and the tokenizer)")
    found = [os.path.join(directory, n) for n in CLAP_WEIGHTS_NAMES if os.path.isfile(os.path.join(directory, n))]
    if not found:
        raise WeightsUnavailableError(f"{directory}: no weights file ({' or '.join(CLAP_WEIGHTS_NAMES)})")
    model = _load_model(directory, found[0])
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return ClapEncoder(preset, model, tokenizer, directory, found[0], source).to(dev).eval()
