"""Exact resume: a run stopped after N steps (checkpoint written, process state gone) and resumed
continues at the same step with the same losses as an uninterrupted run."""
import json
import os

import pytest

from mmretrieve.train import DataConfig, ModelConfig, OptimConfig, RunConfig, Trainer, TrainConfig, train


def _cfg(root, out):
    return TrainConfig(
        model=ModelConfig(preset="tiny-random", video_head="transformer"),
        data=DataConfig(kind="synthetic", root=root, val_fraction=0.25),
        optim=OptimConfig(lr=2e-3, warmup_steps=2, max_steps=6, batch_size=4),
        run=RunConfig(out=str(out), progress=False, seed=1, log_every=1),
    )


def test_resume_continues_with_the_same_step_and_loss(small_corpus, tmp_path):
    full = train(_cfg(small_corpus, tmp_path / "full"), resume=False)
    assert full.step == 6

    stopped = Trainer(_cfg(small_corpus, tmp_path / "killed")).fit(resume=False, stop_after=3)
    assert stopped.step == 3
    del stopped  # the "killed" process: only the checkpoint on disk survives
    resumed = Trainer(_cfg(small_corpus, tmp_path / "killed"))
    assert resumed.step == 0
    res = resumed.fit(resume=True)
    assert res.history[0]["step"] == 4 and res.step == 6
    full_losses = {r["step"]: r["loss"] for r in full.history}
    for row in res.history:
        assert row["loss"] == pytest.approx(full_losses[row["step"]], rel=1e-6, abs=1e-7), row["step"]
        assert row["temperature"] == pytest.approx(full.history[row["step"] - 1]["temperature"], rel=1e-6)
    # checkpoint contents: safe formats only, and a CSV log continuous over the restart
    ckpt = os.path.join(tmp_path / "killed", "checkpoints", "step-0000006")
    assert sorted(os.listdir(ckpt)) == ["model.safetensors", "optimizer.pt", "state.json", "trainer.safetensors"]
    with open(os.path.join(ckpt, "state.json")) as f:
        assert json.load(f)["step"] == 6
    with open(tmp_path / "killed" / "log.csv") as f:
        steps = [int(line.split(",")[0]) for line in f.read().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert os.path.isdir(tmp_path / "killed" / "last") and os.path.isdir(tmp_path / "killed" / "best")


def test_checkpoint_loads_as_encoder_weights(small_corpus, tmp_path):
    from mmretrieve.models import create_encoder

    res = train(_cfg(small_corpus, tmp_path / "r"), resume=False)
    enc = create_encoder("tiny-random", device="cpu", video_head="transformer",
                         weights=str(tmp_path / "r" / "last" / "model.safetensors"))
    sd, trained = enc.state_dict(), res.encoder.state_dict()
    assert all((sd[k] == trained[k]).all() for k in sd)
    assert enc.audio_trained
