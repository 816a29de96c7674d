"""Proof that training works on the real code paths: a small preset, synthetic data, CPU.

The preset is ``sample``'s architecture (width 96, 3 layers, 40 px, 8x8 log-mel patches) started
from its random seed (``preset_weights=False``: the shipped trained weights are NOT loaded).

Held-out items never seen in training; a text->X query is a hit when the top item has every
attribute the caption names (several held-out items can share them, hence an exact chance level:
the mean over queries of |relevant items| / |items|).
"""
import time

import pytest

from mmretrieve.train import DataConfig, LockConfig, ModelConfig, OptimConfig, RunConfig, Trainer, TrainConfig


@pytest.mark.slow
def test_training_lifts_heldout_recall_far_above_chance(learning_corpus, capsys):
    cfg = TrainConfig(
        name="learning-test",
        model=ModelConfig(preset="sample", preset_weights=False),
        data=DataConfig(kind="synthetic", root=learning_corpus, val_fraction=0.25),
        optim=OptimConfig(lr=3e-3, weight_decay=0.0, warmup_steps=5, max_steps=50, batch_size=24),
        lock=LockConfig(token_embedding=True),
        run=RunConfig(progress=False, seed=0),
    )
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    before = trainer.validate()
    result = trainer.fit(resume=False)
    elapsed = time.perf_counter() - t0
    after = result.val
    lines = []
    for task in ("image", "video", "audio"):
        r1, chance, r1_before = after[task]["t2x"]["R@1"], after[task]["t2x"]["chance_R@1"], before[task]["t2x"]["R@1"]
        lines.append(f"text->{task}: R@1 {r1_before:.1f} before -> {r1:.1f} after training (chance {chance:.1f}, "
                     f"{after[task]['t2x']['queries']} held-out queries over {len(trainer.val_pairs[task])} items)")
    with capsys.disabled():
        print("\n" + "\n".join(lines) + f"\n({result.step} steps in {elapsed:.0f} s)")
    for task in ("image", "video", "audio"):
        r1, chance = after[task]["t2x"]["R@1"], after[task]["t2x"]["chance_R@1"]
        assert r1 >= 3 * chance and r1 >= chance + 15, lines
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 0.5
