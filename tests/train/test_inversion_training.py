"""Pic2Word-style inversion training through the trainer: images alone, frozen encoder, exact resume."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from mmretrieve.models.inversion import TextualInversion
from mmretrieve.train import config_from_dict, load_recipe, override, train
from mmretrieve.train.trainer import Trainer


@pytest.fixture(scope="module")
def image_folder(small_corpus, tmp_path_factory):
    """The small corpus's images and clips in a plain folder, no captions anywhere."""
    folder = tmp_path_factory.mktemp("refs")
    for sub in ("images", "videos"):
        for name in sorted(os.listdir(os.path.join(small_corpus, sub))):
            shutil.copy(os.path.join(small_corpus, sub, name), folder / name)
    return str(folder)


def _config(folder, out, **extra):
    data = {"name": "inv", "model": {"preset": "tiny-random"},
            "data": {"kind": "folder", "root": folder, "tasks": ["image", "video"], "val_fraction": 0.25},
            "optim": {"lr": 1e-3, "max_steps": 4, "batch_size": 4, "warmup_steps": 0},
            "inversion": {"enabled": True, "hidden_dim": 32, "tokens": 2},
            "run": {"out": out, "progress": False, "save_every": 2, "eval_every": 4}}
    for key, value in extra.items():
        section, name = key.split(".")
        data[section][name] = value
    return config_from_dict(data)


def test_only_the_mapping_network_trains_and_is_written(image_folder, tmp_path):
    cfg = _config(image_folder, str(tmp_path / "run"))
    trainer = Trainer(cfg)
    before_enc = {k: v.clone() for k, v in trainer.encoder.state_dict().items()}
    before_net = {k: v.clone() for k, v in trainer.inversion.mapper.state_dict().items()}
    assert trainer.trainable == {"inversion": sum(p.numel() for p in trainer.inversion.parameters())}
    assert not any(p.requires_grad for p in trainer.encoder.parameters())
    result = trainer.fit()
    assert result.step == 4
    for k, v in trainer.encoder.state_dict().items():
        assert torch.equal(v, before_enc[k]), k
    assert any(not torch.equal(v, before_net[k]) for k, v in trainer.inversion.mapper.state_dict().items())
    assert set(result.val) == {"image", "video"} and "R@1" in result.val["image"]["t2x"]
    ckpt = os.path.join(str(tmp_path / "run"), "checkpoints", "step-0000004")
    assert sorted(os.listdir(ckpt)) == ["inversion.safetensors", "optimizer.pt", "state.json", "trainer.safetensors"]
    net = TextualInversion.load(tmp_path / "run" / "inversion.safetensors")
    assert net.config.tokens == 2 and net.config.preset == "tiny-random" and net.config.input == "normalized"
    for k, v in trainer.inversion.mapper.state_dict().items():
        assert torch.equal(net.mapper.state_dict()[k], v.cpu()), k


def test_resume_gives_the_same_network_as_an_uninterrupted_run(image_folder, tmp_path):
    full = train(_config(image_folder, str(tmp_path / "full")))
    cut = _config(image_folder, str(tmp_path / "cut"))
    first = train(cut, stop_after=2)
    assert first.step == 2
    resumed = train(cut)
    assert resumed.step == 4
    a, b = full.inversion.mapper.state_dict(), resumed.inversion.mapper.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_inversion_config_errors(image_folder, tmp_path):
    with pytest.raises(ValueError, match="data.kind=folder has no captions"):
        _config(image_folder, None, **{"inversion.enabled": False})
    with pytest.raises(ValueError, match="image and video references only"):
        _config(image_folder, None, **{"data.tasks": ["audio"]})
    with pytest.raises(ValueError, match="images only"):
        _config(image_folder, None, **{"inversion.input": "raw"})
    with pytest.raises(ValueError, match="disable lora"):
        config_from_dict({"data": {"kind": "folder", "root": image_folder, "tasks": ["image"]},
                          "inversion": {"enabled": True}, "lora": {"enabled": True}})
    with pytest.raises(ValueError, match="inversion: InversionConfig.tokens=0"):
        _config(image_folder, None, **{"inversion.tokens": 0})


def test_shipped_recipes_parse():
    cfg = load_recipe("pic2word")
    assert cfg.inversion.enabled and cfg.inversion.input == "raw" and cfg.model.preset == "clip-vit-l14"
    assert (cfg.inversion.hidden_dim, cfg.inversion.layers, cfg.inversion.prompt) == (512, 2, "a photo of *")
    sample = override(load_recipe("pic2word-sample"), {"data.root": "x"})
    assert sample.model.preset == "sample" and sample.data.tasks == ("image", "video")
