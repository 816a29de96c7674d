"""The training loop: contrastive alignment of the image, video and audio towers with text.

Each optimiser step draws one batch per task (text-image, text-video, text-audio) and sums their
symmetric InfoNCE losses. Towers can be locked (LanguageBind: freeze the text tower and train the
other modality's tower, projection and temporal head) or adapted with LoRA (``lora.py``: frozen base
weights, trained low-rank adapters); pretrained CLIP weights get a lower learning rate than new
modules (CLIP4Clip). AMP (bf16/fp16), gradient accumulation (each micro-batch is its
own contrastive problem), gradient checkpointing, DDP through torchrun with features gathered with
gradient, and checkpoints that resume exactly.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from mmretrieve.embedding import (Augment, Preparer, Sampling, autocast, encode_batch, encode_texts, pool_windows,
                                  source_of_sample)

from .checkpoint import copy_checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_to_dict
from .data import TaskStream, load_pairs
from .index_data import VectorStream, load_index_vectors
from .inversion import build_inversion, freeze_encoder, inversion_loss, validate_inversion
from .distributed import DistInfo, average_gradients, barrier, gather_objects, gather_with_grad, init_distributed
from .lora import add_lora, has_lora, is_lora_parameter, lora_base_keys, lora_cached, merged_state_dict, tower_of
from .loss import LogitScale, contrastive_loss, positives_matrix

__all__ = ["TrainResult", "Trainer", "train", "parameter_groups", "warmup_steps", "lr_factor", "apply_locks", "export_weights"]


@dataclass
class TrainResult:
    out: str | None
    step: int
    history: list[dict] = field(default_factory=list)
    val: dict = field(default_factory=dict)
    encoder: Any = None
    best: dict | None = None
    inversion: Any = None


# The output projection of each tower: still trained under LoRA when ``lora.train_projection``.
_PROJECTIONS = {"image": ("clip.visual.proj",), "text": ("clip.text_projection", "clip.text_projection.weight",
                                                         "clip.text_projection.bias"),
                "audio": ("audio.proj",)}


def apply_locks(encoder, config: TrainConfig) -> dict[str, int]:
    """Set ``requires_grad`` per tower from the locks, the LoRA settings and the tasks; returns
    trainable counts per tower (LoRA adapters counted apart, as ``<tower>_lora``)."""
    tasks = set(config.data.tasks)
    lock, lora = config.lock, config.lora
    lora_towers = set(lora.towers) if lora.enabled else set()
    used = {"text": True, "image": bool(tasks & {"image", "video"}), "audio": "audio" in tasks,
            "video_head": "video" in tasks, "clip_scale": False, "other": True}
    trainable: dict[str, int] = {}
    for name, p in encoder.named_parameters():
        tower = tower_of(name)
        key = tower
        if is_lora_parameter(name):
            on, key = used[tower] and tower in lora_towers, f"{tower}_lora"
        elif tower in lora_towers:  # LoRA'd tower: base frozen, projection as configured
            on = used[tower] and lora.train_projection and name in _PROJECTIONS.get(tower, ())
        else:
            on = {
                "text": not lock.text,
                "image": not lock.image and used["image"],
                "audio": used["audio"],
                "video_head": used["video_head"],
                "clip_scale": False,  # the trainer owns its own temperature
                "other": True,
            }[tower]
        if lock.token_embedding and name == "clip.token_embedding.weight":
            on = False
        p.requires_grad_(on)
        if on:
            trainable[key] = trainable.get(key, 0) + p.numel()
    return trainable


def parameter_groups(encoder, logit_scale: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW groups: pretrained vs new modules (different LR; LoRA adapters are new), decayed vs not
    (biases, norms, embeddings, temperature: no weight decay)."""
    o = config.optim
    lr_pre = o.lr if o.lr_pretrained is None else o.lr_pretrained
    pretrained_clip = not getattr(encoder, "random_weights", False)
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in encoder.named_parameters():
        if not p.requires_grad:
            continue
        tower = tower_of(name)
        pre = (tower in ("text", "image") and pretrained_clip) or (tower == "audio" and config.lock.audio_from_pretrained)
        if is_lora_parameter(name):
            pre = False
        decay = p.ndim >= 2 and "embedding" not in name and "position" not in name
        groups.setdefault((pre, decay), []).append(p)
    out = []
    for (pre, decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": lr_pre if pre else o.lr, "weight_decay": o.weight_decay if decay else 0.0,
                    "name": f"{'pretrained' if pre else 'new'}{'' if decay else '_no_decay'}"})
    if logit_scale.log_scale.requires_grad:
        lr_t = o.lr if o.lr_temperature is None else o.lr_temperature
        out.append({"params": [logit_scale.log_scale], "lr": lr_t, "weight_decay": 0.0, "name": "temperature"})
    return out


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    """Warm-up length: ``optim.warmup_steps``, or ``optim.warmup_fraction`` of ``total_steps`` (rounded)."""
    o = config.optim
    if o.warmup_fraction is not None:
        return int(round(o.warmup_fraction * total_steps))
    return o.warmup_steps


def lr_factor(warmup: int, total: int, schedule: str = "cosine") -> Callable[[int], float]:
    """The learning-rate multiplier of each step: linear warm-up over ``warmup`` steps, then a cosine
    to 0 at ``total`` over the steps after warm-up (``cosine``) or over the whole run
    (``cosine-whole-run``, CLIP4Clip's BertAdam ``warmup_cosine``)."""
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine-whole-run":
            progress = step / max(1, total)
        else:
            progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def local_paths_absolute(config: TrainConfig) -> TrainConfig:
    """The config with ``model.weights`` and a local ``model.pretrained`` made absolute (read from the
    current directory), so checkpoints that record the config name them from any directory."""
    m = config.model
    pretrained = m.pretrained
    if pretrained is not None and os.path.exists(os.path.expanduser(pretrained)):
        pretrained = os.path.abspath(os.path.expanduser(pretrained))
    weights = None if m.weights is None else os.path.abspath(os.path.expanduser(m.weights))
    if (pretrained, weights) == (m.pretrained, m.weights):
        return config
    return replace(config, model=replace(m, pretrained=pretrained, weights=weights))


class _FirstWindow:
    """Sample -> the first preprocessed window through the embedding route (the image / short-clip
    decoder the textual-inversion validation takes)."""

    def __init__(self, preparer: Preparer) -> None:
        self.preparer = preparer

    def __call__(self, sample) -> torch.Tensor:
        return self.preparer.prepare(source_of_sample(sample)).tensors[0]


def training_sampling(preset, config: TrainConfig) -> Sampling:
    """The preset's sampling with the config's ``data.sampling`` and ``data.num_frames`` applied."""
    sampling = Sampling.from_preset(preset).override_from(config.data.sampling, "data.sampling")
    if config.data.num_frames is not None:
        sampling = sampling.override(num_frames=config.data.num_frames)
    return sampling


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Builds everything from a :class:`TrainConfig`; :meth:`fit` runs (or resumes) the loop."""

    def __init__(self, config: TrainConfig, *, dist_info: DistInfo | None = None, encoder=None) -> None:
        from mmretrieve.models import create_encoder

        config = local_paths_absolute(config)
        self.config = config
        self.dist = dist_info or init_distributed(config.run.device)
        run, o = config.run, config.optim
        if run.device is not None:
            device = torch.device(run.device)
        elif torch.cuda.is_available():
            device = torch.device("cuda", self.dist.local_rank)
        else:
            device = torch.device("cpu")
        self.device = device
        _seed_everything(run.seed + self.dist.rank)
        m = config.model
        if encoder is None:
            from dataclasses import replace as _replace

            from mmretrieve.models import get_preset

            preset = get_preset(m.preset)
            if not m.preset_weights:
                preset = _replace(preset, weights=None)
            encoder = create_encoder(preset, device=str(device), pretrained=m.pretrained, weights=m.weights,
                                     video_head=m.video_head)
        lo = config.lora
        if lo.enabled and not has_lora(encoder):
            add_lora(encoder, towers=lo.towers, targets=lo.targets, rank=lo.rank, alpha=lo.alpha, dropout=lo.dropout,
                     init=lo.init, seed=run.seed, freeze=False)
        elif has_lora(encoder):
            adapted = sorted({tower_of(k) for k in lora_base_keys(encoder)})
            if not lo.enabled or adapted != sorted(lo.towers):
                raise ValueError(f"the encoder has LoRA adapters on {adapted} but the config says lora.enabled="
                                 f"{lo.enabled}, lora.towers={list(lo.towers)} (merge them first with "
                                 f"mmretrieve.train.merge_lora, or make the config match)")
        self.encoder = encoder
        self.encoder.train()
        self.inversion = None
        if config.inversion.enabled:  # Pic2Word: only the mapping network trains
            freeze_encoder(self.encoder)
            self.inversion = build_inversion(config, self.encoder).train()
            self.trainable = {"inversion": sum(p.numel() for p in self.inversion.parameters())}
        else:
            self.trainable = apply_locks(self.encoder, config)
        if run.grad_checkpointing:
            clip = self.encoder.clip
            if hasattr(clip, "set_grad_checkpointing"):
                clip.set_grad_checkpointing(True)
            if hasattr(self.encoder.audio.transformer, "grad_checkpointing"):
                self.encoder.audio.transformer.grad_checkpointing = True
        self.logit_scale = LogitScale(o.init_temperature, o.max_logit_scale, o.learn_temperature).to(device)
        self.sampling = training_sampling(self.encoder.preset, config)
        self.decoder = _FirstWindow(Preparer(self.encoder, self.sampling))  # validate_inversion's decoder
        if config.data.kind == "index":  # an inversion run over the vectors an index already stores
            d = config.data
            self.train_pairs, self.val_pairs = load_index_vectors(d.root, self.encoder, d.tasks,
                                                                  val_fraction=d.val_fraction,
                                                                  max_val_items=d.max_val_items, seed=run.seed)
            self.streams = {t: VectorStream(v, batch_size=o.batch_size, seed=run.seed, rank=self.dist.rank,
                                            world_size=self.dist.world_size) for t, v in self.train_pairs.items()}
        else:
            self.train_pairs, self.val_pairs = load_pairs(config.data, seed=run.seed)
            augment = Augment(seed=run.seed) if config.data.augment else None
            preparer = Preparer(self.encoder, self.sampling, augment)
            self.streams = {t: TaskStream(p, preparer, batch_size=o.batch_size, seed=run.seed, rank=self.dist.rank,
                                          world_size=self.dist.world_size, cache=config.data.cache,
                                          num_workers=config.data.num_workers, epoch=config.data.epoch)
                            for t, p in self.train_pairs.items()}
        self.steps_per_epoch = max(1, max(len(s) for s in self.streams.values()) // o.grad_accum)
        self.total_steps = o.max_steps if o.max_steps is not None else o.epochs * self.steps_per_epoch
        self.warmup_steps = warmup_steps(config, self.total_steps)
        groups = (parameter_groups(self.encoder, self.logit_scale, config) if self.inversion is None
                  else parameter_groups(self.inversion, self.logit_scale, config))
        self.optimizer = torch.optim.AdamW(groups, betas=tuple(o.betas), eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(self.warmup_steps, self.total_steps, o.schedule))
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[run.amp]
        use_scaler = self.amp_dtype is torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if use_scaler else None
        self.step = 0
        self.history: list[dict] = []
        self._val_cache: dict = {}
        self.best: dict | None = None

    # ------------------------------------------------------------------ pieces
    def task_loss(self, task: str, micro_step: int) -> torch.Tensor:
        """The contrastive loss of one task's batch at ``micro_step`` (global batch under DDP).

        Every window in the batch is encoded; an item's vector is the pool of its windows."""
        batch = self.streams[task].batch(micro_step)
        if self.inversion is not None:
            with autocast(self.device, self.config.run.amp):
                return inversion_loss(self.encoder, self.inversion, batch, self.logit_scale(), self.dist, self.device)
        with autocast(self.device, self.config.run.amp):
            text = encode_texts(self.encoder, batch.captions, max_words=self.config.data.max_words)
            windows = encode_batch(self.encoder, batch.modality, batch.media)
        media = pool_windows(windows, batch.owners, len(batch.captions))
        text = gather_with_grad(text.float(), self.dist)
        media = gather_with_grad(media.float(), self.dist)
        keys = [k for part in gather_objects(list(batch.item_keys), self.dist) for k in part]
        caps = [c for part in gather_objects(list(batch.captions), self.dist) for c in part]
        pos = positives_matrix(keys, caps, device=text.device)
        return contrastive_loss(text, media, self.logit_scale(), pos)

    def train_step(self) -> dict:
        """One optimiser step (``grad_accum`` micro-steps); returns the logged values."""
        o = self.config.optim
        self.optimizer.zero_grad(set_to_none=True)
        per_task = {t: 0.0 for t in self.streams}
        for k in range(o.grad_accum):
            micro = self.step * o.grad_accum + k
            with lora_cached(self.encoder):  # each LoRA'd weight computed once per micro-step
                losses = [self.task_loss(t, micro) for t in self.streams]
                loss = torch.stack(losses).mean() / o.grad_accum
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            for t, l in zip(self.streams, losses):
                per_task[t] += float(l.detach()) / o.grad_accum
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        average_gradients(params, self.dist)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if o.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        row = {"step": self.step, "epoch": (self.step - 1) // self.steps_per_epoch,
               "loss": sum(per_task.values()) / len(per_task),
               **{f"loss_{t}": v for t, v in per_task.items()},
               "temperature": self.logit_scale.temperature,
               "lr": lrs.get("new", lrs.get("new_no_decay", next(iter(lrs.values())))),
               "lr_pretrained": lrs.get("pretrained", lrs.get("pretrained_no_decay", float("nan")))}
        return row

    def validate(self) -> dict:
        """Held-out recall per task (synthetic data: attribute-aware; others: the standard protocol)."""
        from mmretrieve.evaluation.evaluate import evaluate_samples, evaluate_synthetic

        self.encoder.eval()
        out = {}
        try:
            with torch.no_grad(), lora_cached(self.encoder):  # each LoRA'd weight computed once
                sampling, words = self.sampling, self.config.data.max_words  # never augmented
                for task, pairs in self.val_pairs.items():
                    if len(pairs) < 2:
                        continue
                    if self.inversion is not None:
                        out[task] = validate_inversion(self.encoder, self.inversion, pairs, self.decoder)
                    elif self.config.data.kind == "synthetic":
                        out[task] = evaluate_synthetic(self.encoder, pairs.samples, sampling=sampling,
                                                       cache=self._val_cache, max_words=words)
                    else:
                        out[task] = evaluate_samples(self.encoder, pairs.samples, sampling=sampling,
                                                     cache=self._val_cache if self.config.data.cache else None,
                                                     max_words=words)
        finally:
            self.encoder.train()
        return out

    # ---------------------------------------------------------------- the loop
    def resume_from(self, path: str) -> None:
        st = load_checkpoint(path, self.encoder, self.logit_scale, self.optimizer, self.scheduler, self.scaler,
                             modules=self._modules())
        self.step = st.step
        self.best = st.state.get("best")

    def save(self) -> str | None:
        out = self.config.run.out
        if out is None or not self.dist.is_main:
            return None
        extra = {"config": config_to_dict(self.config), "best": self.best,
                 "preset": self.encoder.preset.name, "video_head": self.encoder.video_head_name,
                 "num_frames": self.sampling.video.num_frames, **self.sampling.record()}
        return save_checkpoint(out, self.step, self.encoder, self.logit_scale, self.optimizer, self.scheduler,
                               self.scaler, extra, keep_last=self.config.run.keep_last, modules=self._modules(),
                               save_encoder=self.inversion is None)

    def _modules(self) -> dict:
        return {} if self.inversion is None else {"inversion": self.inversion.mapper}

    def fit(self, *, resume: bool | str = True, stop_after: int | None = None,
            on_step: Callable[[dict], None] | None = None) -> TrainResult:
        """Train to ``total_steps``. ``resume=True`` continues from ``run.out``'s latest checkpoint when
        there is one (a path resumes from that checkpoint). ``stop_after`` ends after that step with a
        checkpoint (used to simulate a killed run). With LoRA the returned encoder keeps its adapters
        (``merge_lora(result.encoder)`` folds them in); checkpoints and the export are merged."""
        run = self.config.run
        out = run.out
        if out is not None and self.dist.is_main:
            os.makedirs(out, exist_ok=True)
        if isinstance(resume, str):
            self.resume_from(resume)
        elif resume and out is not None and latest_checkpoint(out):
            self.resume_from(latest_checkpoint(out))
        writer = _Log(out, self.dist.is_main, run.tensorboard)
        bar = None
        if run.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {self.config.name}", unit="step")
        last_val: dict = {}
        for stream in self.streams.values():
            stream.warm()
        t0 = time.perf_counter()
        try:
            while self.step < self.total_steps:
                row = self.train_step()
                row["elapsed_s"] = round(time.perf_counter() - t0, 3)
                at_end = self.step == self.total_steps
                if (run.eval_every and self.step % run.eval_every == 0) or at_end:
                    last_val = self.validate()
                    row.update(_flat_val(last_val))
                    self._track_best(last_val)
                self.history.append(row)
                if self.step % max(1, run.log_every) == 0 or at_end or len(row) > 10:
                    writer.write(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", T=f"{row['temperature']:.3f}")
                if on_step is not None:
                    on_step(row)
                stopping = stop_after is not None and self.step >= stop_after
                if (run.save_every and self.step % run.save_every == 0) or at_end or stopping:
                    path = self.save()
                    if path is not None and self.best is not None and self.best.get("step") == self.step:
                        copy_checkpoint(path, os.path.join(out, "best"))
                    if path is not None and at_end:
                        copy_checkpoint(path, os.path.join(out, "last"))
                    barrier(self.dist)
                if stopping:
                    break
        finally:
            if bar is not None:
                bar.close()
            writer.close()
        self.encoder.eval()
        done = self.dist.is_main and self.step >= self.total_steps
        if self.inversion is not None:
            self.inversion.eval()
            if done:
                for path in (os.path.join(out, "inversion.safetensors") if out else None, run.export):
                    if path:
                        self.inversion.save(path)
        elif run.export and done:
            export_weights(self.encoder, run.export)
        return TrainResult(out, self.step, self.history, last_val, self.encoder, self.best, self.inversion)

    def _track_best(self, val: dict) -> None:
        if self.config.run.best_metric == "mAP@10":
            key = "mean_mAP@10"
            scores = [(v["t2x"]["mAP@10"] + v["x2t"]["mAP@10"]) / 2 for v in val.values() if "t2x" in v and "x2t" in v]
        else:
            key = "mean_t2x_R@1"
            scores = [v["t2x"]["R@1"] for v in val.values() if "t2x" in v]
        if not scores:
            return
        score = float(np.mean(scores))
        if self.best is None or score >= self.best.get(key, -math.inf):
            self.best = {"step": self.step, key: score}


def export_weights(encoder, path: str) -> str:
    """Write the encoder's weights (``save_weights`` format) without the frozen tensors a
    random-weight preset regenerates from its seed; loadable with ``create_encoder(..., weights=path)``.
    LoRA deltas are merged into their base weights (original keys, no adapter tensors)."""
    from mmretrieve.models.weights import save_safetensors

    from .checkpoint import encoder_weights_meta

    state = merged_state_dict(encoder)
    if getattr(encoder, "random_weights", False):
        # a LoRA'd base shows up as "...parametrizations.W.original": never skipped, its merged W is new
        frozen = {n for n, p in encoder.named_parameters() if not p.requires_grad and n.startswith("clip.")
                  and n != "clip.logit_scale"}
        if frozen:
            # left out only where the value is still the seeded one (a frozen tensor may come from a weights file)
            from dataclasses import replace as _replace

            from mmretrieve.models import create_encoder

            seeded = create_encoder(_replace(encoder.preset, weights=None), device="cpu").state_dict()
            skip = {n for n in frozen if n in seeded and n in state
                    and torch.equal(seeded[n], state[n].detach().to("cpu"))}
            state = {k: v for k, v in state.items() if k not in skip}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_safetensors(path, state, encoder_weights_meta(encoder))
    return path


def _flat_val(val: dict) -> dict:
    row = {}
    for task, dirs in val.items():
        for direction in ("t2x", "x2t"):
            if direction in dirs:
                for k in ("R@1", "R@5", "R@10", "mAP@10"):
                    row[f"val_{task}_{direction}_{k}"] = round(dirs[direction][k], 2)
        if "chance_R@1" in dirs.get("t2x", {}):
            row[f"val_{task}_chance_R@1"] = round(dirs["t2x"]["chance_R@1"], 2)
    return row


class _Log:
    """CSV log (``out/log.csv``; columns grow as validation adds them) + optional TensorBoard."""

    def __init__(self, out: str | None, main: bool, tensorboard: bool) -> None:
        self.path = os.path.join(out, "log.csv") if out and main else None
        self.tb = None
        if self.path and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(out, "tensorboard"))
            except ImportError:
                self.tb = None

    def write(self, row: dict) -> None:
        if self.path is None:
            return
        rows: list[dict] = []
        if os.path.isfile(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) < row["step"]]  # a resumed run rewrites its tail
        rows.append(row)
        cols: list[str] = []
        for r in rows:
            cols += [c for c in r if c not in cols]
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def train(config: TrainConfig, *, resume: bool | str = True, stop_after: int | None = None) -> TrainResult:
    """Run (or resume) a training run described by ``config``; see :class:`Trainer`."""
    trainer = Trainer(config)
    if config.run.out and trainer.dist.is_main:
        os.makedirs(config.run.out, exist_ok=True)
        with open(os.path.join(config.run.out, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config_to_dict(config), f, indent=2)
    return trainer.fit(resume=resume, stop_after=stop_after)
