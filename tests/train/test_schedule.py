"""Schedule settings that reproduce the papers: epochs over caption pairs, warm-up as a fraction of all
steps, the temperature's learning rate, max_words, and validation never on a test split."""
from __future__ import annotations

import collections
import math

import pytest
import torch
from official_fixtures import make_msrvtt

from mmretrieve.data.common import Sample
from mmretrieve.embedding import Prepared
from mmretrieve.modality import Modality
from mmretrieve.models import create_encoder
from mmretrieve.models.encoder import truncate_tokens
from mmretrieve.train import DataConfig, ModelConfig, OptimConfig, RunConfig, Trainer, TrainConfig, load_recipe
from mmretrieve.train.data import PairSet, TaskStream
from mmretrieve.train.loss import LogitScale
from mmretrieve.train.trainer import lr_factor, parameter_groups, warmup_steps


def _pairs(n_items: int, n_captions: int) -> PairSet:
    return PairSet(Modality.IMAGE, tuple(
        Sample(f"/x/{i}.png", Modality.IMAGE, tuple(f"item {i} caption {c}" for c in range(n_captions)), str(i))
        for i in range(n_items)))


class _BlankPreparer:
    """Stands in for the embedding route's Preparer: one blank window per item, no augmentation."""

    augment = None

    def prepare(self, source, *, draw=()):
        return Prepared(0, [torch.zeros(3, 2, 2)], [(None, None)])


def _stream(pairs: PairSet, epoch: str, batch_size: int = 4) -> TaskStream:
    return TaskStream(pairs, _BlankPreparer(), batch_size=batch_size, seed=0, cache=False, epoch=epoch)


def test_caption_epoch_visits_every_pair_once():
    stream = _stream(_pairs(4, 3), "captions")
    assert stream.units == 12 and len(stream) == 3  # 12 pairs // batch 4
    seen = collections.Counter()
    for step in range(3):
        b = stream.batch(step)
        assert len(b.captions) == 4 and all(c.startswith(f"item {i} ") for c, i in zip(b.captions, b.item_keys))
        seen.update(b.captions)
    assert len(seen) == 12 and set(seen.values()) == {1}


def test_item_epoch_visits_every_item_once():
    stream = _stream(_pairs(8, 3), "items")
    assert stream.units == 8 and len(stream) == 2
    keys = [k for step in range(2) for k in stream.batch(step).item_keys]
    assert sorted(keys) == list(range(8))


def test_warmup_fraction_and_schedules():
    cfg = TrainConfig(optim=OptimConfig(warmup_fraction=0.1, epochs=5))
    assert warmup_steps(cfg, 7030) == 703  # CLIP4Clip MSR-VTT: 10 % of 5 x 1,406 steps
    assert warmup_steps(TrainConfig(optim=OptimConfig(warmup_steps=35)), 7030) == 35
    f = lr_factor(2, 10, "cosine")
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5)  # (6 - 2) / 8 of the decay
    g = lr_factor(2, 10, "cosine-whole-run")
    assert g(2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2))) and g(5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="set one of them"):
        TrainConfig(optim=OptimConfig(warmup_steps=10, warmup_fraction=0.1))
    with pytest.raises(ValueError, match="optim.schedule"):
        TrainConfig(optim=OptimConfig(schedule="linear"))


def test_temperature_trains_at_its_own_learning_rate():
    enc = create_encoder("tiny-random", device="cpu")
    scale = LogitScale(0.01)
    cfg = TrainConfig(optim=OptimConfig(lr=1e-4, lr_pretrained=1e-7, lr_temperature=1e-7))
    groups = {g["name"]: g for g in parameter_groups(enc, scale, cfg)}
    assert groups["temperature"]["lr"] == 1e-7 and groups["temperature"]["weight_decay"] == 0.0
    default = {g["name"]: g for g in parameter_groups(enc, scale, TrainConfig(optim=OptimConfig(lr=3e-4)))}
    assert default["temperature"]["lr"] == 3e-4  # None: the new modules' lr


def test_max_words_cuts_tokens_like_a_shorter_context():
    tokens = torch.tensor([[49406, 5, 6, 7, 8, 9, 49407, 0], [49406, 5, 49407, 0, 0, 0, 0, 0]])
    assert truncate_tokens(tokens, 4).tolist() == [[49406, 5, 6, 49407, 0, 0, 0, 0], tokens[1].tolist()]
    with pytest.raises(ValueError, match="max_words=1"):
        truncate_tokens(tokens, 1)
    enc = create_encoder("tiny-random", device="cpu")
    text = "a man in a red shirt is talking about cars while driving down a long road near the sea"
    short = " ".join(text.split()[:6])  # 6 words = 6 tokens here, + start and end = 8
    with torch.no_grad():
        assert torch.equal(enc.tokenize([text], max_words=8), enc.tokenize([short]))
        assert torch.allclose(enc.encode_text([text], max_words=8), enc.encode_text([short]))
        assert not torch.allclose(enc.encode_text([text]), enc.encode_text([short]))


def test_validation_never_on_a_test_split():
    for kind, split in (("coco", "karpathy-test"), ("msrvtt", "1k-A"), ("msrvtt", "full-test"), ("clotho", "evaluation")):
        with pytest.raises(ValueError, match=f"data.val_split='{split}' is the {kind} test split"):
            TrainConfig(data=DataConfig(kind=kind, root="/d", val_split=split))
    for name in ("msrvtt-meanp", "msrvtt-seqtransf", "msrvtt-lora", "coco-finetune", "clotho-audio"):
        cfg = load_recipe(name)
        assert cfg.data.val_split in ("none", "karpathy-val", "validation"), name


def test_clip4clip_recipe_schedule():
    cfg = load_recipe("msrvtt-meanp")
    assert cfg.data.epoch == "captions" and cfg.data.max_words == 32 and cfg.model.pretrained == "openai"
    assert cfg.optim.warmup_fraction == 0.1 and cfg.optim.schedule == "cosine-whole-run"
    assert cfg.optim.lr_temperature == cfg.optim.lr_pretrained == pytest.approx(1e-7)


def test_msrvtt_training_counts_caption_pairs(tmp_path):
    root = make_msrvtt(tmp_path / "msrvtt", n_train=6, n_test=2, captions=4)
    cfg = TrainConfig(
        model=ModelConfig(preset="tiny-random"),
        data=DataConfig(kind="msrvtt", root=str(root), tasks=("video",), epoch="captions", max_words=16,
                        val_split="none", num_frames=2, cache=False),
        optim=OptimConfig(lr=1e-3, warmup_fraction=0.25, epochs=2, batch_size=4),
        run=RunConfig(progress=False),
    )
    tr = Trainer(cfg)
    assert tr.steps_per_epoch == 6 and tr.total_steps == 12 and tr.warmup_steps == 3  # 24 pairs // 4
    assert len(tr.val_pairs["video"]) == 0
    row = tr.train_step()
    assert math.isfinite(row["loss"])
    held = Trainer(TrainConfig(model=cfg.model, optim=cfg.optim, run=cfg.run,
                               data=DataConfig(kind="msrvtt", root=str(root), tasks=("video",), epoch="captions",
                                               val_split="holdout", val_fraction=0.34, num_frames=2, cache=False)))
    assert len(held.val_pairs["video"]) == 2 and len(held.train_pairs["video"]) == 4  # round(6 x 0.34) held out
    assert held.steps_per_epoch == 4  # 4 videos x 4 captions // 4
