"""LanguageBindEncoder: LanguageBind's published towers behind the encoder interface.

Text, image, video and audio land in LanguageBind's one space (768-d for the ViT-L towers): the
image, video and audio towers were each trained against one frozen language tower, which every
published checkpoint carries. The text tower is taken from one checkpoint and the copies in the
others are checked to be identical.

Weights come from local directories laid out as published (config.json + weights file) or from
the Hugging Face cache (``huggingface_hub``'s layout; ``HF_HUB_OFFLINE`` honoured).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import WeightsUnavailableError
from ...modality import Modality
from ..dispatch import encode_modality
from ..presets import Preset
from ..tokens import truncate_tokens
from ..weights import hf_cache_dir, hf_endpoint, host_reachable, hub_offline
from .checkpoint import WEIGHTS_NAMES, TowerCheckpoint, compare_text_towers, load_tower, open_checkpoint
from .modules import LanguageBindTower
from .preprocess import LanguageBindAudioFrontend, LanguageBindVisualPreprocessor

__all__ = ["LanguageBindEncoder", "create_languagebind_encoder", "resolve_towers", "cached_towers", "TEXT_ORDER"]

FINGERPRINT_FORMAT = 1
TEXT_ORDER = ("image", "video", "audio")
"""The checkpoint whose text tower is used: the first of these the preset has."""


class LanguageBindEncoder(nn.Module):
    """Text, image, video and audio in LanguageBind's space. Build it with :func:`create_languagebind_encoder`."""

    audio_trained = True
    random_weights = False
    untrained_modalities: tuple[str, ...] = ()

    def __init__(self, preset: Preset, towers: Mapping[str, LanguageBindTower], checkpoints: Mapping[str, TowerCheckpoint],
                 sources: Mapping[str, str], text_from: str, *, frame_chunk: int = 32) -> None:
        super().__init__()
        self.preset = preset
        self.towers = nn.ModuleDict(dict(towers))
        self.text_from = text_from
        self.frame_chunk = frame_chunk
        self._checkpoints = dict(checkpoints)
        self._sources = dict(sources)
        self._sha: dict[str, str] = {}
        text = self.towers[text_from]
        self.dim = int(text.config.projection_dim)
        self.context_length = int(text.config.text.max_position_embeddings)
        image_size = int(self.towers["image"].config.vision.image_size) if "image" in self.towers else preset.image_size
        self.image_preprocessor = LanguageBindVisualPreprocessor(image_size, tuple(preset.mean), tuple(preset.std))
        if "audio" in self.towers:
            v = self.towers["audio"].config.vision
            self.audio_frontend = LanguageBindAudioFrontend(int(v.audio_sample_rate), int(v.num_mel_bins),
                                                            int(v.target_length), float(v.audio_mean), float(v.audio_std))
        else:
            self.audio_frontend = LanguageBindAudioFrontend()
        self._tokenizer: Any = None

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def image_size(self) -> int:
        return self.image_preprocessor.size

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities this encoder can embed (text always)."""
        return ("text",) + tuple(m for m in ("image", "video", "audio") if m in self.towers)

    @property
    def num_frames(self) -> int:
        """Frames the video tower takes per window."""
        return self.towers["video"].frames if "video" in self.towers else 0

    # -------------------------------------------------------------- preprocessing
    def preprocess_image(self, image: Any) -> torch.Tensor:
        return self.image_preprocessor(image)

    def preprocess_frames(self, frames: np.ndarray) -> torch.Tensor:
        return self.image_preprocessor.frames(frames)

    def preprocess_audio(self, samples: np.ndarray) -> torch.Tensor:
        """Mono float32 at 16 kHz -> (3, 112, 1036) normalised fbank chunks."""
        return self.audio_frontend(samples)

    def tokenize(self, texts: Sequence[str], *, max_words: int | None = None) -> torch.Tensor:
        """Token ids (N, 77): CLIP's byte-pair vocabulary, start and end tokens, zero padding; ``max_words``
        keeps at most that many tokens per text, start and end included (see ``truncate_tokens``)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}]: expected str, got {type(t).__name__}")
        if self._tokenizer is None:
            import open_clip

            self._tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=self.context_length)
        tokens = self._tokenizer(texts)
        return tokens if max_words is None else truncate_tokens(tokens, max_words)

    # ------------------------------------------------------------------- encoders
    def _tower(self, modality: str) -> LanguageBindTower:
        if modality not in self.towers:
            raise ValueError(f"preset {self.preset.name!r} has no {modality} tower (it has: {', '.join(self.modalities)})")
        return self.towers[modality]

    def encode_text(self, texts: Sequence[str], *, max_words: int | None = None) -> torch.Tensor:
        """(N, D) float32, L2-normalised (texts cut to ``max_words`` tokens when given)."""
        ids = self.tokenize(texts, max_words=max_words)
        if ids.shape[0] == 0:
            return torch.empty(0, self.dim, device=self.device)
        return F.normalize(self.towers[self.text_from].encode_text(ids.to(self.device)).float(), dim=-1)

    def _pixels(self, x: torch.Tensor, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected (N, {', '.join(map(str, shape))}) preprocessed input, got {got}")
        return x.to(self.device, dtype=torch.float32)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, 224, 224) -> (N, D) float32, L2-normalised."""
        tower = self._tower("image")
        s = self.image_size
        x = self._pixels(pixels, "pixels", (3, s, s))
        if x.shape[0] == 0:
            return torch.empty(0, self.dim, device=self.device)
        return F.normalize(tower.encode_vision(x).float(), dim=-1)

    def encode_audio(self, mels: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 1036) fbank chunks -> (N, D) float32, L2-normalised."""
        tower = self._tower("audio")
        x = self._pixels(mels, "mels", (3, *tower.input_size))
        if x.shape[0] == 0:
            return torch.empty(0, self.dim, device=self.device)
        return F.normalize(tower.encode_vision(x).float(), dim=-1)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor | None = None, *,
                     chunk_size: int | None = None) -> torch.Tensor:
        """(B, T, 3, S, S) frames, mask (B, T) True = real frame -> (B, D) float32, L2-normalised.

        The tower takes exactly ``num_frames`` (8) frames per clip: the real frames of each clip are
        picked at ``linspace(0, n - 1, 8)`` (rounded down), repeating frames of clips with fewer.
        """
        tower = self._tower("video")
        s = self.image_size
        if not isinstance(frames, torch.Tensor) or frames.ndim != 5 or tuple(frames.shape[2:]) != (3, s, s):
            got = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ValueError(f"frames: expected (B, T, 3, {s}, {s}) preprocessed frames, got {got}")
        b, t = frames.shape[:2]
        mask = torch.ones(b, t, dtype=torch.bool) if mask is None else mask.to(torch.bool).cpu()
        if tuple(mask.shape) != (b, t):
            raise ValueError(f"mask: expected shape ({b}, {t}), got {tuple(mask.shape)}")
        if b == 0:
            return torch.empty(0, self.dim, device=self.device)
        n_frames = tower.frames
        picks = []
        for i in range(b):
            real = mask[i].nonzero().flatten()
            if real.numel() == 0:
                raise ValueError(f"frames: clip {i} has no real frame (mask is all False)")
            picks.append(real[np.linspace(0, real.numel() - 1, n_frames).astype(np.int64)])
        per_call = max(1, int(chunk_size or self.frame_chunk) // n_frames)
        out = []
        for start in range(0, b, per_call):
            idx = range(start, min(b, start + per_call))
            clip = torch.stack([frames[i, picks[i]] for i in idx]).to(self.device, dtype=torch.float32)
            out.append(tower.encode_vision(clip).float())
        return F.normalize(torch.cat(out), dim=-1)

    def encode(self, modality: Modality | str, media: Any, *, max_words: int | None = None) -> torch.Tensor:
        """One modality dispatch over a collated batch -> (B, D) float32, L2-normalised.

        text: a list of strings (cut to ``max_words`` tokens when given); image: (B, 3, 224, 224); video: ``(frames (B, T, 3, 224, 224), mask (B, T))``;
        audio: (B, 3, 112, 1036) fbank chunks.
        """
        return encode_modality(self, modality, media, max_words=max_words)

    # ---------------------------------------------------------------- fingerprint
    def fingerprint(self) -> dict:
        """Everything that decides the vectors, JSON-able."""
        towers = {}
        for m, ckpt in self._checkpoints.items():
            if m not in self._sha:
                self._sha[m] = ckpt.sha256()
            towers[m] = {"source": self._sources[m], "weights_file": os.path.basename(ckpt.weights),
                         "weights_sha256": self._sha[m], "config": asdict(ckpt.config.vision),
                         "projection_dim": ckpt.config.projection_dim}
        text_cfg = self._checkpoints[self.text_from].config.text
        v = self.preset.video
        fp = {
            "format": FINGERPRINT_FORMAT,
            "kind": "languagebind",
            "preset": self.preset.name,
            "dim": self.dim,
            "towers": towers,
            "text": {"from": self.text_from, "config": asdict(text_cfg), "tokenizer": "clip-bpe-49408"},
            "image": self.image_preprocessor.describe(),
            "video": {"num_frames": self.num_frames, "fps": v.fps, "window": v.window, "max_frames": v.max_frames,
                      "head": None, "pooling": "mean of post-norm class tokens, then projection"},
            "audio": {**self.audio_frontend.describe(), "trained": "audio" in self.towers},
        }
        return json.loads(json.dumps(fp))

    def fingerprint_id(self) -> str:
        canon = json.dumps(self.fingerprint(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]

    def extra_repr(self) -> str:
        return f"preset={self.preset.name!r}, dim={self.dim}, towers={list(self.towers)}"


# ------------------------------------------------------------------ weights resolution
def _unavailable(preset: Preset, modality: str, repo: str, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"preset {preset.name!r}: cannot get the {modality} tower weights ({repo}): {why}. Either pass local "
        f"directories laid out as published (config.json + {' or '.join(WEIGHTS_NAMES)}) — "
        f"create_encoder({preset.name!r}, pretrained={{'{modality}': '/path/{repo.split('/')[-1]}', ...}}) in Python, "
        f"or `--pretrained DIR` on the command line with DIR holding {', '.join(r.split('/')[-1] for r in (preset.towers or {}).values())} "
        f"as subdirectories — or copy a populated Hugging Face cache to this machine "
        f"(HF_HUB_CACHE={hf_cache_dir()}; set HF_HUB_OFFLINE=1 to never try the network).")


def _cached_snapshot(repo: str) -> str | None:
    """The cached snapshot directory of ``repo`` with config.json and a weights file, or None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    # pure cache lookups: hf_hub_download(local_files_only=True) may still reach the hub (request headers)
    cache = hf_cache_dir()
    cfg = try_to_load_from_cache(repo, "config.json", cache_dir=cache)
    if not (isinstance(cfg, str) and os.path.isfile(cfg)):
        return None
    for name in WEIGHTS_NAMES:
        found = try_to_load_from_cache(repo, name, cache_dir=cache)
        if isinstance(found, str) and os.path.isfile(found):
            return os.path.dirname(cfg)
    return None


def cached_towers(preset: Preset) -> dict[str, str | None]:
    """modality -> cached snapshot directory (None when not on this machine). Never touches the network."""
    return {m: _cached_snapshot(repo) for m, repo in (preset.towers or {}).items()}


def _from_hub(preset: Preset, modality: str, repo: str) -> str:
    """The snapshot directory of ``repo`` holding config.json and a weights file: cache first, then the hub."""
    from huggingface_hub import hf_hub_download

    cache = hf_cache_dir()
    found = _cached_snapshot(repo)
    if found is not None:
        return found
    if hub_offline():
        raise _unavailable(preset, modality, repo, f"not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set")
    ok, reason = host_reachable(hf_endpoint())
    if not ok:
        raise _unavailable(preset, modality, repo, f"not in the Hugging Face cache ({cache}) and {hf_endpoint()} "
                                                   f"is unreachable ({reason})")
    errors = []
    try:
        cfg = hf_hub_download(repo, "config.json", cache_dir=cache)
    except Exception as e:
        raise _unavailable(preset, modality, repo, f"the download of config.json failed ({e})") from None
    for name in WEIGHTS_NAMES:
        try:
            hf_hub_download(repo, name, cache_dir=cache)
            return os.path.dirname(cfg)
        except Exception as e:  # the repository may hold only the other format
            errors.append(f"{name}: {type(e).__name__}")
    raise _unavailable(preset, modality, repo, "the download failed (" + "; ".join(errors) + ")")


def resolve_towers(preset: Preset, pretrained: str | os.PathLike | Mapping[str, str] | None) -> dict[str, tuple[str, str]]:
    """modality -> (checkpoint directory, source label) for every tower of the preset.

    ``pretrained``: None (Hugging Face cache), a mapping modality -> directory (towers it leaves out
    come from the cache), or one parent directory holding a subdirectory per tower, named after the
    repository (``LanguageBind_Audio_FT``) or after the modality (``audio``).
    """
    towers = dict(preset.towers or {})
    if isinstance(pretrained, Mapping):
        unknown = sorted(set(pretrained) - set(towers))
        if unknown:
            raise ValueError(f"pretrained: preset {preset.name!r} has no tower(s) {unknown}; its towers: {sorted(towers)}")
        local = {m: os.path.expanduser(os.fspath(d)) for m, d in pretrained.items()}
    elif pretrained is not None:
        parent = os.path.expanduser(os.fspath(pretrained))
        if not os.path.isdir(parent):
            raise WeightsUnavailableError(f"pretrained: {parent} is not a directory; preset {preset.name!r} needs a "
                                          f"directory holding {', '.join(r.split('/')[-1] for r in towers.values())}")
        local = {}
        for m, repo in towers.items():
            for name in (repo.split("/")[-1], m):
                if os.path.isdir(os.path.join(parent, name)):
                    local[m] = os.path.join(parent, name)
                    break
            else:
                raise WeightsUnavailableError(f"pretrained: {parent} has no subdirectory {repo.split('/')[-1]!r} "
                                              f"(or {m!r}) for the {m} tower of preset {preset.name!r}")
    else:
        local = {}
    out = {}
    for m, repo in towers.items():
        if m in local:
            out[m] = (local[m], f"dir:{os.path.basename(os.path.normpath(local[m]))}")
        else:
            out[m] = (_from_hub(preset, m, repo), f"hf-hub:{repo}")
    return out


def _check_tokenizer(directory: str) -> None:
    """The published directories may carry ``vocab.json`` and ``merges.txt``; they must be CLIP's byte-pair
    vocabulary and merges, which our tokenizer (open_clip's) uses, else the text vectors would differ."""
    import open_clip

    ours = None
    path = os.path.join(directory, "vocab.json")
    if os.path.isfile(path):
        ours = open_clip.tokenizer.SimpleTokenizer()
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)
        special = {"<|startoftext|>": "<start_of_text>", "<|endoftext|>": "<end_of_text>"}
        wrong = [t for t, i in vocab.items() if ours.encoder.get(special.get(t, t)) != i]
        if wrong or len(vocab) != len(ours.encoder):
            raise ValueError(f"{path}: the vocabulary differs from CLIP's byte-pair vocabulary ({len(vocab)} vs "
                             f"{len(ours.encoder)} entries; e.g. {wrong[:5]}); this tokenizer cannot be reproduced")
    path = os.path.join(directory, "merges.txt")
    if os.path.isfile(path):
        ours = ours or open_clip.tokenizer.SimpleTokenizer()
        with open(path, encoding="utf-8") as f:
            merges = [tuple(line.split()) for line in f.read().splitlines() if line and not line.startswith("#version")]
        wrong = [m for i, m in enumerate(merges) if ours.bpe_ranks.get(m) != i]
        if wrong or len(merges) != len(ours.bpe_ranks):
            raise ValueError(f"{path}: the merges differ from CLIP's ({len(merges)} vs {len(ours.bpe_ranks)}; "
                             f"e.g. {wrong[:3]}); this tokenizer cannot be reproduced")


def create_languagebind_encoder(preset: Preset, *, device: str | torch.device | None = None,
                                pretrained: str | os.PathLike | Mapping[str, str] | None = None,
                                weights: str | None = None, video_head: str | None = None,
                                frame_chunk: int = 32) -> LanguageBindEncoder:
    """Load a LanguageBind preset's towers (verified: every key, every shape, one shared text tower)."""
    if weights is not None:
        raise ValueError(f"weights: preset {preset.name!r} loads the publisher's checkpoints; "
                         f"extra encoder weights do not apply")
    if video_head is not None:
        raise ValueError(f"video_head: preset {preset.name!r} pools frames inside its video tower; "
                         f"a temporal head does not apply")
    dirs = resolve_towers(preset, pretrained)
    ckpts = {m: open_checkpoint(d, m) for m, (d, _) in dirs.items()}
    text_from = next((m for m in TEXT_ORDER if m in ckpts), None)
    if text_from is None:
        raise ValueError(f"preset {preset.name!r}: no image, video or audio tower listed")
    compare_text_towers(ckpts[text_from], [c for m, c in ckpts.items() if m != text_from])
    for d, _ in dirs.values():
        _check_tokenizer(d)
    towers = {m: load_tower(c, text=(m == text_from))[0] for m, c in ckpts.items()}
    dims = {m: t.config.projection_dim for m, t in towers.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f"preset {preset.name!r}: the towers project to different dimensions {dims}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    enc = LanguageBindEncoder(preset, towers, ckpts, {m: s for m, (_, s) in dirs.items()}, text_from,
                              frame_chunk=frame_chunk)
    return enc.to(dev).eval()
