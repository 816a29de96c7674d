"""Encoder presets: data, not code. One JSON file per preset in ``mmretrieve/presets/`` (package data).

A preset fixes everything that changes the vectors: the CLIP backbone and its weights, image
preprocessing, video sampling and temporal head, and the audio front-end. ``get_preset`` also
accepts the path of a JSON file with the same fields, so users can add presets without editing
the package.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any, Mapping

__all__ = ["ClipSpec", "VideoSpec", "AudioSpec", "Preset", "PRESET_KINDS", "list_presets", "get_preset",
           "preset_from_dict"]

PRESET_KINDS = ("open_clip", "languagebind", "clap")
"""open_clip: CLIP towers from open_clip plus our video head and audio tower. languagebind: the
publisher's towers (``towers`` maps modality -> Hugging Face repository). clap: LAION-CLAP through
transformers, text and audio only (``towers["audio"]`` names the repository)."""



@dataclass(frozen=True)
class ClipSpec:
    """The open_clip backbone.

    model: open_clip model name ("ViT-B-32"), or None when ``config`` is given inline.
    pretrained: open_clip tag ("laion2b_s34b_b79k"), a local checkpoint file or directory,
        "hf-hub:org/repo", or None for random weights (seeded by ``Preset.seed``).
    config: inline open_clip architecture (embed_dim, vision_cfg, text_cfg) for tiny presets.
    quick_gelu: the activation the weights were trained with (True for OpenAI's checkpoints).
    """

    model: str | None = None
    pretrained: str | None = None
    config: Mapping[str, Any] | None = None
    quick_gelu: bool = False


@dataclass(frozen=True)
class VideoSpec:
    """Frame sampling per window and the temporal head that pools frame vectors.

    The sampling fields (num_frames, fps, window, max_frames, min_tail, keyframe_snap, backend) become
    ``mmretrieve.embedding.Sampling.from_preset``'s video sampling, the one config indexing, training
    and evaluation share.
    """

    num_frames: int = 12
    fps: float | None = None
    window: float | None = 10.0
    head: str = "mean"
    head_layers: int = 4
    max_frames: int = 64
    min_tail: float = 1.0
    keyframe_snap: bool = False
    backend: str = "auto"


@dataclass(frozen=True)
class AudioSpec:
    """Log-mel front-end and spectrogram-ViT patching.

    Log-mel values are normalised as ``(log(max(mel, mel_floor)) - norm_mean) / (2 * norm_std)``
    (AST-style constants); spectrograms are cut or padded (with the floor value) to
    ``target_frames`` frames.
    """

    sample_rate: int = 16000
    n_mels: int = 128
    n_fft: int = 1024  # 400 (25 ms) leaves some of 128 HTK mel filters empty at 16 kHz
    hop_length: int = 160
    window: float | None = 10.0
    target_frames: int = 1024
    patch: int = 16
    mel_floor: float = 1e-10
    norm_mean: float = -4.27
    norm_std: float = 4.57


@dataclass(frozen=True)
class Preset:
    """A named, complete encoder recipe (see the module docstring)."""

    name: str
    description: str
    clip: ClipSpec
    video: VideoSpec
    audio: AudioSpec
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str | None = None
    licence: str = ""
    source: str = ""
    seed: int = 0
    kind: str = "open_clip"
    towers: Mapping[str, str] | None = None

    @property
    def random_weights(self) -> bool:
        """True when the CLIP towers start from seeded random weights (no checkpoint)."""
        return self.kind == "open_clip" and self.clip.pretrained is None


def _build(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(known)}")
    return cls(**data)


def preset_from_dict(data: Mapping[str, Any], where: str = "<dict>") -> Preset:
    """Build a Preset from its JSON form; ``where`` names the source in error messages."""
    data = dict(data)
    kind = data.get("kind", "open_clip")
    if kind not in PRESET_KINDS:
        raise ValueError(f"{where}: unknown kind {kind!r}; expected one of {PRESET_KINDS}")
    required = ("name", "clip", "image_size", "mean", "std") if kind == "open_clip" else ("name", "towers", "image_size",
                                                                                          "mean", "std")
    for key in required:
        if key not in data:
            raise ValueError(f"{where}: preset is missing the required field {key!r}")
    clip = _build(ClipSpec, data.pop("clip", None), f"{where}: clip")
    if kind == "open_clip" and clip.model is None and clip.config is None:
        raise ValueError(f"{where}: clip needs a 'model' name or an inline 'config'")
    if data.get("towers") is not None:
        towers = data["towers"]
        if not isinstance(towers, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in towers.items()):
            raise ValueError(f"{where}: towers must map modality names to weight repositories")
        data["towers"] = _freeze(dict(towers))
    if clip.config is not None:
        clip = ClipSpec(clip.model, clip.pretrained, _freeze(clip.config), clip.quick_gelu)
    video = _build(VideoSpec, data.pop("video", None), f"{where}: video")
    audio = _build(AudioSpec, data.pop("audio", None), f"{where}: audio")
    mean = tuple(float(v) for v in data.pop("mean"))
    std = tuple(float(v) for v in data.pop("std"))
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"{where}: mean and std need 3 values each (std > 0), got {mean} and {std}")
    data.setdefault("description", "")
    return _build(Preset, {**data, "clip": clip, "video": video, "audio": audio, "mean": mean, "std": std}, where)


class _FrozenDict(dict):
    """A read-only dict, so a frozen Preset's inline config cannot be mutated by accident."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("preset configs are read-only; copy them with dict(...) first")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True))

    # immutable, so copies may share it (copy/deepcopy/pickle would otherwise call the blocked setters)
    def __copy__(self) -> "_FrozenDict":
        return self

    def __deepcopy__(self, memo: dict) -> "_FrozenDict":
        return self

    def __reduce__(self):
        return (_FrozenDict, (dict(self),))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain (mutable, JSON-able) copy of a frozen preset config."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def _presets_dir() -> Any:
    return resources.files("mmretrieve").joinpath("presets")


def list_presets() -> list[str]:
    """Names of the presets shipped with the package, sorted."""
    root = _presets_dir()
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


OPEN_CLIP_PREFIX = "open_clip:"


def open_clip_preset(model: str, tag: str) -> Preset:
    """A preset for any open_clip model name and pretrained tag (``open_clip.list_pretrained()``).

    Video, audio and seed settings are those of the default preset; image size, mean/std and
    QuickGELU come from open_clip's own records for that model and tag. Named
    ``open_clip:MODEL/TAG``, which :func:`get_preset` and every ``--preset`` accept.
    """
    import open_clip

    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise ValueError(f"preset: {model!r} is not an open_clip model name (see open_clip.list_models())")
    tags = open_clip.list_pretrained_tags_by_model(model)
    if tag not in tags:
        raise ValueError(f"preset: open_clip has no pretrained tag {tag!r} for {model}; "
                         f"its tags: {', '.join(tags) or 'none'}")
    pcfg = open_clip.get_pretrained_cfg(model, tag) or {}
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    data = json.loads(_presets_dir().joinpath("clip-vit-b32.json").read_text(encoding="utf-8"))
    hub = (pcfg.get("hf_hub") or "").strip("/")
    data.update({
        "name": f"{OPEN_CLIP_PREFIX}{model}/{tag}",
        "description": f"open_clip {model} with the {tag!r} weights; video and audio as the default preset.",
        "clip": {"model": model, "pretrained": tag, "quick_gelu": bool(pcfg.get("quick_gelu", False))},
        "image_size": int(size[0] if isinstance(size, (list, tuple)) else size),
        "mean": list(pcfg.get("mean", data["mean"])),
        "std": list(pcfg.get("std", data["std"])),
        "licence": "see the weights' source",
        "source": f"https://huggingface.co/{hub}" if hub else (pcfg.get("url") or ""),
    })
    return preset_from_dict(data, f"preset {data['name']!r}")


def get_preset(name_or_path: str) -> Preset:
    """A shipped preset by name, ``open_clip:MODEL/TAG`` for any open_clip model and pretrained
    tag, or a preset JSON file by path (read from the current directory when relative; a relative
    ``weights`` in it is read from the JSON file's folder).

    Raises ValueError listing the available presets for an unknown name.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"preset: expected a preset name or a JSON path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if text.startswith(OPEN_CLIP_PREFIX):
        model, sep, tag = text[len(OPEN_CLIP_PREFIX):].partition("/")
        if not sep or not model or not tag:
            raise ValueError(f"preset {text!r}: write open_clip:MODEL/TAG, e.g. open_clip:ViT-B-16/laion2b_s34b_b88k")
        return open_clip_preset(model, tag)
    if text.endswith(".json") and os.path.isfile(text):
        with open(text, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{text}: not a valid preset JSON file ({e})") from e
        weights = data.get("weights") if isinstance(data, dict) else None
        if isinstance(weights, str) and not os.path.isabs(os.path.expanduser(weights)):
            # a preset file's own weights sit beside it (only shipped presets read package assets)
            data["weights"] = os.path.join(os.path.dirname(os.path.abspath(text)), weights)
        return preset_from_dict(data, text)
    names = list_presets()
    if text not in names:
        raise ValueError(f"preset: unknown preset {text!r}; available: {', '.join(names)}, "
                         f"open_clip:MODEL/TAG for any open_clip model, or a path to a preset .json file")
    data = json.loads(_presets_dir().joinpath(f"{text}.json").read_text(encoding="utf-8"))
    preset = preset_from_dict(data, f"preset {text!r}")
    if preset.name != text:
        raise ValueError(f"preset {text!r}: its JSON says name {preset.name!r}; file name and name must agree")
    return preset


def preset_record(preset: Preset) -> dict[str, Any] | None:
    """The preset's whole definition (JSON-able, for :func:`preset_from_dict`) when its name alone would
    not rebuild it: a preset JSON file given by path, or one whose name shadows a shipped preset. None for
    shipped and ``open_clip:`` presets, which their name rebuilds."""
    try:
        if get_preset(preset.name) == preset:
            return None
    except ValueError:
        pass
    return thaw(asdict(preset))

