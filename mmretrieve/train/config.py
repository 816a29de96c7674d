"""Typed training configuration and recipe loading.

A recipe is a YAML file (shipped ones live in ``mmretrieve/recipes/``, package data) whose top-level
sections map one to one onto the frozen dataclasses below::

    model: {preset: tiny-random, video_head: mean}
    data:  {kind: synthetic, root: ..., tasks: [image, video, audio]}
    optim: {lr: 1e-3, lr_pretrained: 1e-4, epochs: 5, batch_size: 32}
    lock:  {text: true}
    lora:  {enabled: true, towers: [image], rank: 8}
    run:   {seed: 0, amp: none}

Unknown keys are errors (naming the section and the key), so a typo never silently trains the
wrong thing. ``override(config, {"optim.lr": 1e-4})`` applies dotted overrides (the CLI's ``--set``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any, Mapping

from mmretrieve.models.inversion import InversionConfig

__all__ = [
    "TEST_SPLITS",
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "LockConfig",
    "LoraConfig",
    "RunConfig",
    "InversionTrainConfig",
    "TrainConfig",
    "list_recipes",
    "load_recipe",
    "config_from_dict",
    "config_to_dict",
    "override",
]

_AMP = ("none", "bf16", "fp16")
_DATA_KINDS = ("synthetic", "manifest", "coco", "msrvtt", "clotho", "shards", "folder", "index")
_TASKS = ("image", "video", "audio")
_LORA_TOWERS = ("image", "text", "audio")
_LORA_TARGETS = ("attn", "q", "k", "v", "out", "mlp")
_LORA_INITS = ("kaiming", "gaussian")


@dataclass(frozen=True)
class ModelConfig:
    """Which encoder to fine-tune. ``weights`` loads a previous checkpoint (safetensors) first;
    ``preset_weights: false`` ignores the preset's own trained weights (to retrain a shipped model
    from its seed, as the synthetic-sample recipe does)."""

    preset: str = "tiny-random"
    pretrained: str | None = None
    weights: str | None = None
    video_head: str | None = None
    preset_weights: bool = True


@dataclass(frozen=True)
class DataConfig:
    """Where the (caption, media) pairs come from.

    kind: synthetic (generated under ``root`` with ``synthetic``'s sizes), folder (``root`` is a folder of
        media walked recursively by extension, no captions: for ``inversion`` runs), manifest (``root`` is the
        manifest file), coco / msrvtt / clotho (``root`` is the dataset folder; see datasets/*.md),
        shards (``root`` is a pattern of webdataset-style tar shards, ``/data/shards-{0000..0099}.tar``, a
        glob or a list; indexed once, media read in place by offset, nothing extracted; see
        datasets/shards.md), index (``root`` is a saved mmretrieve index: inversion runs train from the image
        and clip vectors it stores, nothing decoded; the run's encoder must be the index's).
    tasks: the modalities paired with text (each a contrastive task on its own batch).
    train_split / val_split: reader split names (ignored for synthetic, manifest and shards). The
        validation split selects the ``best`` checkpoint, so it is never a test split (COCO karpathy-test,
        MSR-VTT 1k-A / full-test, Clotho evaluation: refused). Defaults: COCO karpathy-val, Clotho
        validation, MSR-VTT ``none`` (MSR-VTT has no validation split disjoint from train-9k).
        ``none``: no validation (no ``best`` checkpoint; evaluate ``last``); ``holdout``: a seeded
        ``val_fraction`` of the training split's items is held out of training.
    epoch: what one epoch visits. ``items``: every item once, with one of its captions drawn per step;
        ``captions``: every (item, caption) pair once, as CLIP4Clip's ``expand_msrvtt_sentences`` does
        (MSR-VTT 9k: 180,000 pairs, not 9,000 videos, per epoch). Pairs of the same item that meet in a
        batch are positives of each other.
    max_words: captions are cut to this many tokens, start and end included (CLIP4Clip: 32), in
        training, in validation and in ``mmretrieve eval`` of the checkpoint; None keeps the tokenizer's
        full context (77 for CLIP).
    val_root: shards only - a pattern of validation shards (no file may also be in ``root``); when
        unset, a seeded ``val_fraction`` of each task's samples in ``root`` is held out.
    val_fraction: held-out share for synthetic / manifest data, and for shards without ``val_root``
        (deterministic by seed).
    num_frames: frames per video window (None = the preset's); a shorthand for sampling.num_frames.
    sampling: overrides of the preset's sampling (``mmretrieve.embedding.Sampling``: num_frames, fps,
        window, max_frames, min_tail, keyframe_snap, backend, audio_window), used for training and
        validation alike and recorded in every checkpoint.
    augment: seeded training augmentation (``mmretrieve.embedding.Augment``): each step hears one
        random window-long audio crop and sees one random video window with random frame times. Off:
        every window of a long item is encoded and their vectors pooled. Validation never augments.
    cache: keep preprocessed tensors in memory after the first epoch (small datasets; every item is
        decoded once before the first step - set it false for shard sets larger than memory).
    skip_missing: leave out items the reader finds unusable (absent files; for shards: samples without
        media or captions, unknown or empty media members, truncated shards) instead of failing; for
        shards they are reported in a warning. Corrupt media bytes still fail when decoded, naming the file
        (``<shard>#<member>`` for shards).
    """

    kind: str = "synthetic"
    root: str | None = None
    tasks: tuple[str, ...] = _TASKS
    train_split: str | None = None
    val_split: str | None = None
    epoch: str = "items"
    max_words: int | None = None
    val_root: str | None = None
    val_fraction: float = 0.25
    synthetic: Mapping[str, Any] = field(default_factory=dict)
    num_frames: int | None = None
    sampling: Mapping[str, Any] = field(default_factory=dict)
    augment: bool = False
    cache: bool = True
    num_workers: int = 0
    skip_missing: bool = False
    max_val_items: int | None = 1000


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to 0 at the last step.

    lr applies to new modules (temporal head, audio tower, LoRA adapters); lr_pretrained to the
    pretrained CLIP towers (CLIP4Clip: 1e-7 vs 1e-4); None means the same as lr. lr_temperature is the
    learnable temperature's (None = lr; CLIP4Clip trains CLIP's logit_scale with the CLIP weights,
    at lr_pretrained). Warm-up is ``warmup_steps`` steps, or ``warmup_fraction`` of all steps
    (CLIP4Clip: 0.1); not both. schedule: ``cosine`` decays over the steps after warm-up;
    ``cosine-whole-run`` is CLIP4Clip's BertAdam ``warmup_cosine``: the factor is step / warm-up steps
    during warm-up, then 0.5 * (1 + cos(pi * step / all steps)) (so it leaves warm-up at 0.976, not 1).
    """

    lr: float = 1e-4
    lr_pretrained: float | None = None
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 0
    warmup_fraction: float | None = None
    schedule: str = "cosine"
    lr_temperature: float | None = None
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    init_temperature: float = 0.07
    learn_temperature: bool = True
    max_logit_scale: float = 100.0


@dataclass(frozen=True)
class LockConfig:
    """Towers kept frozen (LanguageBind-style: lock the text tower, train the others).

    ``audio_from_pretrained`` counts the audio tower as pretrained (lower LR) when it was initialised
    from a pretrained image tower; False treats it as a new module.
    """

    text: bool = False
    image: bool = False
    token_embedding: bool = False
    audio_from_pretrained: bool = False


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters (``lora.py``) instead of full fine-tuning for some towers.

    For each tower in ``towers`` (image, text, audio) the base weights are frozen and low-rank
    adapters (``W + alpha / rank * B @ A``, B = 0 at the start) on ``targets`` of every transformer
    block train instead: q, k, v, out (attention output), attn (= q k v out), mlp (both MLP Linears).
    ``train_projection`` keeps that tower's output projection trainable (at ``lr_pretrained``);
    adapters train at ``lr``. A tower cannot be both locked and LoRA-adapted. Checkpoints and exports
    hold merged weights under the original keys (``lora.safetensors`` next to them keeps the
    adapters for resuming).
    """

    enabled: bool = False
    towers: tuple[str, ...] = ("image",)
    targets: tuple[str, ...] = ("attn", "mlp")
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    init: str = "kaiming"
    train_projection: bool = True


@dataclass(frozen=True)
class RunConfig:
    """Run-time choices: output folder, seed, precision, logging and checkpoint cadence.

    export: also write the final weights there, leaving out frozen tensors that a random-weight
    preset regenerates from its seed (e.g. a locked token embedding) - how the bundled sample
    model stays a few MB.
    best_metric: what picks the ``best`` checkpoint on the validation split: ``t2x_R@1`` (text->item
    R@1, averaged over tasks) or ``mAP@10`` (the mean of both directions' mAP@10, as LAION-CLAP
    selects on Clotho).
    """

    out: str | None = None
    seed: int = 0
    device: str | None = None
    amp: str = "none"
    grad_checkpointing: bool = False
    log_every: int = 10
    eval_every: int | None = None
    save_every: int | None = None
    keep_last: int = 2
    progress: bool = True
    tensorboard: bool = False
    export: str | None = None
    best_metric: str = "t2x_R@1"


@dataclass(frozen=True)
class InversionTrainConfig:
    """Textual inversion (Pic2Word): train only a mapping network from reference vectors to ``tokens``
    pseudo-word embeddings, the encoder frozen, with a contrastive loss between each image (or clip)
    vector and the text tower's output for ``prompt`` holding its pseudo tokens. Captions are unused.

    input: "normalized" (the stored vectors; images and clips) or "raw" (the image tower's unnormalised
    output, as Pic2Word; images only). template: the query prompt recorded in the exported network.
    compose: how the exported network composes a query (``InversionConfig.compose``): "prompt"
    (Pic2Word) or "prompt+text".
    The network is written to ``run.out/inversion.safetensors`` (and ``run.export`` when set).
    """

    enabled: bool = False
    tokens: int = 1
    hidden_dim: int = 512
    layers: int = 2
    dropout: float = 0.1
    input: str = "normalized"
    prompt: str = "a photo of *"
    template: str = "a photo of * , {text}"
    compose: str = "prompt"


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run; ``name`` is the recipe name (for the log)."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lock: LockConfig = field(default_factory=LockConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    run: RunConfig = field(default_factory=RunConfig)
    inversion: InversionTrainConfig = field(default_factory=InversionTrainConfig)

    def __post_init__(self) -> None:
        _validate(self)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "lock": LockConfig,
             "lora": LoraConfig, "run": RunConfig, "inversion": InversionTrainConfig}


def _validate(c: TrainConfig) -> None:
    if c.run.amp not in _AMP:
        raise ValueError(f"run.amp={c.run.amp!r}: choose one of {', '.join(_AMP)}")
    if c.data.kind not in _DATA_KINDS:
        raise ValueError(f"data.kind={c.data.kind!r}: choose one of {', '.join(_DATA_KINDS)}")
    if c.data.val_root is not None and c.data.kind != "shards":
        raise ValueError(f"data.val_root={c.data.val_root!r}: only used with data.kind=shards "
                         f"(this run has data.kind={c.data.kind}; see data.val_split / data.val_fraction)")
    bad = [t for t in c.data.tasks if t not in _TASKS]
    if bad or not c.data.tasks:
        raise ValueError(f"data.tasks={list(c.data.tasks)!r}: a non-empty list of {', '.join(_TASKS)}")
    if c.optim.batch_size < 2:
        raise ValueError(f"optim.batch_size={c.optim.batch_size}: contrastive training needs at least 2")
    if c.optim.grad_accum < 1:
        raise ValueError(f"optim.grad_accum={c.optim.grad_accum}: must be >= 1")
    if c.optim.lr <= 0 or (c.optim.lr_pretrained is not None and c.optim.lr_pretrained < 0):
        raise ValueError("optim.lr must be > 0 and optim.lr_pretrained >= 0")
    if c.optim.epochs < 1 and c.optim.max_steps is None:
        raise ValueError(f"optim.epochs={c.optim.epochs}: must be >= 1 (or set optim.max_steps)")
    if not 0.0 <= c.data.val_fraction < 1.0:
        raise ValueError(f"data.val_fraction={c.data.val_fraction}: must be in [0, 1)")
    _validate_schedule(c)
    _validate_lora(c)
    _validate_inversion(c)


def _validate_inversion(c: TrainConfig) -> None:
    inv = c.inversion
    if not isinstance(inv.enabled, bool):
        raise ValueError(f"inversion.enabled={inv.enabled!r}: true or false")
    if c.data.kind == "folder" and not inv.enabled:
        raise ValueError("data.kind=folder has no captions: it trains inversion runs only (inversion.enabled: true)")
    if c.data.kind == "index" and not inv.enabled:
        raise ValueError("data.kind=index holds vectors, not captions: it trains inversion runs only "
                         "(inversion.enabled: true)")
    if not inv.enabled:
        return
    if c.data.kind == "index" and inv.input != "normalized":
        raise ValueError(f"data.kind=index: an index stores L2-normalised vectors, so inversion.input must be "
                         f"normalized (got {inv.input!r})")
    if c.data.kind == "index" and not c.data.root:
        raise ValueError("data.kind=index: data.root must be the index to train from")
    if c.lora.enabled:
        raise ValueError("inversion.enabled and lora.enabled: an inversion run keeps the encoder frozen; disable lora")
    bad = [t for t in c.data.tasks if t not in ("image", "video")]
    if bad:
        raise ValueError(f"data.tasks={list(c.data.tasks)!r}: inversion trains on image and video references only")
    if inv.input == "raw" and "video" in c.data.tasks:
        raise ValueError("inversion.input=raw takes the image tower's raw output: images only (use input: normalized "
                         "for clips)")
    try:  # the network's own checks (sizes, input kind, prompt and template markers)
        InversionConfig(input_dim=1, token_dim=1, hidden_dim=inv.hidden_dim, layers=inv.layers, tokens=inv.tokens,
                        dropout=inv.dropout, input=inv.input, template=inv.template, train_prompt=inv.prompt,
                        compose=inv.compose)
    except ValueError as e:
        raise ValueError(f"inversion: {e}") from None


_EPOCHS = ("items", "captions")
_SCHEDULES = ("cosine", "cosine-whole-run")
_BEST_METRICS = ("t2x_R@1", "mAP@10")
# splits that report figures: selecting checkpoints on them inflates what is reported
TEST_SPLITS = {"coco": ("karpathy-test",), "msrvtt": ("1k-A", "full-test"), "clotho": ("evaluation",)}
_VAL_CHOICES = {"coco": "karpathy-val", "msrvtt": "none or holdout", "clotho": "validation"}


def _validate_schedule(c: TrainConfig) -> None:
    o, d = c.optim, c.data
    if d.epoch not in _EPOCHS:
        raise ValueError(f"data.epoch={d.epoch!r}: choose one of {', '.join(_EPOCHS)}")
    if d.max_words is not None and (isinstance(d.max_words, bool) or not isinstance(d.max_words, int)
                                    or d.max_words < 2):
        raise ValueError(f"data.max_words={d.max_words!r}: an integer >= 2 (start and end token included), or null")
    if o.warmup_fraction is not None:
        if not 0.0 <= o.warmup_fraction < 1.0:
            raise ValueError(f"optim.warmup_fraction={o.warmup_fraction}: must be in [0, 1)")
        if o.warmup_steps:
            raise ValueError(f"optim.warmup_steps={o.warmup_steps} and optim.warmup_fraction={o.warmup_fraction}: "
                             f"set one of them")
    if o.schedule not in _SCHEDULES:
        raise ValueError(f"optim.schedule={o.schedule!r}: choose one of {', '.join(_SCHEDULES)}")
    if c.run.best_metric not in _BEST_METRICS:
        raise ValueError(f"run.best_metric={c.run.best_metric!r}: choose one of {', '.join(_BEST_METRICS)}")
    if o.lr_temperature is not None and o.lr_temperature < 0:
        raise ValueError(f"optim.lr_temperature={o.lr_temperature}: must be >= 0 (or null for optim.lr)")
    if d.val_split is not None and d.val_split in TEST_SPLITS.get(d.kind, ()):
        raise ValueError(f"data.val_split={d.val_split!r} is the {d.kind} test split: the validation split picks "
                         f"the best checkpoint, so validating on test inflates the reported figures; use "
                         f"{_VAL_CHOICES[d.kind]} (and evaluate on {d.val_split} with mmretrieve eval)")


def _validate_lora(c: TrainConfig) -> None:
    lo = c.lora
    if not isinstance(lo.enabled, bool):
        raise ValueError(f"lora.enabled={lo.enabled!r}: true or false")
    bad = [t for t in lo.towers if t not in _LORA_TOWERS]
    if bad or not lo.towers:
        raise ValueError(f"lora.towers={list(lo.towers)!r}: a non-empty list of {', '.join(_LORA_TOWERS)}")
    bad = [t for t in lo.targets if t not in _LORA_TARGETS]
    if bad or not lo.targets:
        raise ValueError(f"lora.targets={list(lo.targets)!r}: a non-empty list of {', '.join(_LORA_TARGETS)}")
    if isinstance(lo.rank, bool) or not isinstance(lo.rank, int) or lo.rank < 1:
        raise ValueError(f"lora.rank={lo.rank!r}: an integer >= 1")
    if not lo.alpha > 0:
        raise ValueError(f"lora.alpha={lo.alpha}: must be > 0")
    if not 0.0 <= lo.dropout < 1.0:
        raise ValueError(f"lora.dropout={lo.dropout}: must be in [0, 1)")
    if lo.init not in _LORA_INITS:
        raise ValueError(f"lora.init={lo.init!r}: choose one of {', '.join(_LORA_INITS)}")
    if lo.enabled:
        locked = [t for t in lo.towers if getattr(c.lock, t, False)]
        if locked:
            raise ValueError(f"lora.towers includes {locked} but lock.{locked[0]} is true: a locked tower is not "
                             f"trained at all; unlock it (LoRA then freezes its base weights) or drop it "
                             f"from lora.towers")


def _coerce(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    kwargs = {}
    for key, value in data.items():
        hint = str(known[key].type)
        if isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, str) and hint.startswith("tuple[str"):
            value = (value,)  # `--set lora.towers=image` means [image]
        elif "float" in hint and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:
                value = float(value)  # YAML reads 1e-4 (no dot) as a string
            except ValueError:
                raise ValueError(f"{where}: {key}={value!r} is not a number") from None
        kwargs[key] = value
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any], where: str = "<recipe>") -> TrainConfig:
    """Build a TrainConfig from nested mappings (a parsed recipe)."""
    data = dict(data or {})
    name = str(data.pop("name", "custom"))
    data.pop("reference", None)  # published figures, for people; not a setting
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {unknown}; expected some of {sorted(_SECTIONS)}")
    parts = {key: _coerce(cls, data.get(key) or {}, f"{where}: {key}") for key, cls in _SECTIONS.items()}
    return TrainConfig(name=name, **parts)


def config_to_dict(config: TrainConfig) -> dict:
    """Plain nested dict (JSON/YAML-able) of a config."""
    def plain(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    out: dict = {"name": config.name}
    for key in _SECTIONS:
        out[key] = plain(dataclasses.asdict(getattr(config, key)))
    return out


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    root = resources.files("mmretrieve").joinpath("recipes")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str | os.PathLike) -> TrainConfig:
    """A shipped recipe by name, or a YAML recipe file by path."""
    import yaml

    text = os.fspath(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.path.sep in text:
        if not os.path.isfile(text):
            raise FileNotFoundError(f"{text}: recipe file not found")
        with open(text, encoding="utf-8") as f:
            raw, where = f.read(), text
    else:
        names = list_recipes()
        if text not in names:
            raise ValueError(f"recipe: unknown recipe {text!r}; available: {', '.join(names)} (or a path to a .yaml file)")
        raw = resources.files("mmretrieve").joinpath("recipes", f"{text}.yaml").read_text(encoding="utf-8")
        where = f"recipe {text!r}"
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML ({e})") from e
    data.setdefault("name", os.path.splitext(os.path.basename(text))[0])
    return config_from_dict(data, where)


def override(config: TrainConfig, updates: Mapping[str, Any]) -> TrainConfig:
    """A copy with dotted-key overrides applied: ``{"optim.lr": 1e-5, "run.out": "runs/x"}``."""
    data = config_to_dict(config)
    for key, value in updates.items():
        section, sep, name = key.partition(".")
        if not sep or section not in _SECTIONS:
            raise ValueError(f"override {key!r}: expected SECTION.KEY with SECTION one of {sorted(_SECTIONS)}")
        data[section][name] = value
    return config_from_dict(data, "overrides")
