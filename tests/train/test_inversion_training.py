"""Pic2Word-style inversion training through the trainer: images alone, frozen encoder, exact resume."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
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
    assert net.config.compose == "prompt"
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
    assert (sample.inversion.tokens, sample.inversion.template, sample.inversion.compose) == (3, "{text} a *",
                                                                                              "prompt+text")


# ------------------------------------------------------------------ training from a saved index
@pytest.fixture(scope="module")
def saved_index(image_folder, tmp_path_factory):
    """A tiny-random index of the folder's images and clips; the media are deleted afterwards, so a run
    that trains from it can only use the stored vectors."""
    import mmretrieve as mmr

    root = tmp_path_factory.mktemp("indexed")
    media = root / "media"
    shutil.copytree(image_folder, media)
    r = mmr.Retriever.create("tiny-random", path=str(root / "media.mmr"))
    report = r.add(str(media), progress=False, allow_untrained=True)
    assert not report.failed
    r.save()
    stored = {}
    for name in sorted(os.listdir(media)):
        entries = r.index.entries(str(media / name))
        stored[str(media / name)] = r.index.vectors([e.id for e in entries])
    r.close()
    shutil.rmtree(media)
    return str(root / "media.mmr"), stored


def _index_config(index, out, **extra):
    return _config(index, out, **{"data.kind": "index", **extra})


def test_training_from_an_index_uses_its_stored_vectors_without_media(saved_index, tmp_path):
    from mmretrieve.embedding import pool_windows
    from mmretrieve.train.index_data import VectorSet

    index, stored = saved_index
    trainer = Trainer(_index_config(index, str(tmp_path / "run")))
    assert {t: len(v) for t, v in trainer.train_pairs.items()} == {"image": 9, "video": 6}
    assert {t: len(v) for t, v in trainer.val_pairs.items()} == {"image": 3, "video": 2}
    for t, vs in {**trainer.train_pairs}.items():
        assert isinstance(vs, VectorSet)
        for key, vec in zip(vs.keys, vs.vectors):
            np.testing.assert_allclose(vec, pool_windows(stored[key]), rtol=0, atol=1e-6)
    batch = trainer.streams["image"].batch(0)
    assert batch.precomputed and batch.media.shape == (4, trainer.encoder.dim)
    result = trainer.fit()  # the media files are gone: nothing is decoded
    assert result.step == 4 and set(result.val) == {"image", "video"}
    net = TextualInversion.load(tmp_path / "run" / "inversion.safetensors")
    assert net.config.preset == "tiny-random" and net.config.input == "normalized"


def test_index_run_resumes_exactly(saved_index, tmp_path):
    index, _ = saved_index
    full = train(_index_config(index, str(tmp_path / "full")))
    cut = _index_config(index, str(tmp_path / "cut"))
    assert train(cut, stop_after=2).step == 2
    resumed = train(cut)
    for k, v in full.inversion.mapper.state_dict().items():
        torch.testing.assert_close(resumed.inversion.mapper.state_dict()[k], v, rtol=0, atol=0)


def test_index_of_another_encoder_is_refused(saved_index, tmp_path):
    from mmretrieve.errors import EncoderMismatchError

    index, _ = saved_index
    with pytest.raises(EncoderMismatchError, match="built by another encoder than this run's \\(preset 'sample'\\)"):
        Trainer(override(_index_config(index, str(tmp_path / "run")), {"model.preset": "sample"}))


def test_index_config_errors(saved_index, tmp_path):
    index, _ = saved_index
    with pytest.raises(ValueError, match="data.kind=index holds vectors, not captions"):
        _index_config(index, None, **{"inversion.enabled": False})
    with pytest.raises(ValueError, match="inversion.input must be normalized"):
        _index_config(index, None, **{"inversion.input": "raw", "data.tasks": ["image"]})
    with pytest.raises(FileNotFoundError, match="no index there"):
        Trainer(_index_config(str(tmp_path / "absent.mmr"), str(tmp_path / "run")))


def test_train_command_index_flag_takes_the_index_preset(saved_index, tmp_path):
    import subprocess
    import sys

    index, _ = saved_index
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "mmretrieve", "train", "--recipe", "pic2word", "--index", index, "--out", str(out),
           "--no-progress", "--set", "optim.max_steps=2", "--set", "optim.batch_size=4", "--set",
           "optim.warmup_steps=0", "--set", "inversion.hidden_dim=16", "--set", "data.val_fraction=0.25",
           "--set", "data.num_workers=0"]
    cfg = subprocess.run(cmd + ["--print-config"], capture_output=True, text=True, check=True)
    printed = json.loads(cfg.stdout)
    assert printed["model"]["preset"] == "tiny-random"
    assert (printed["data"]["kind"], printed["data"]["root"], printed["inversion"]["input"]) == ("index", index,
                                                                                                   "normalized")
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "trained 2 steps" in done.stdout
    assert TextualInversion.load(out / "inversion.safetensors").config.preset == "tiny-random"



def test_train_command_index_from_a_preset_file_asks_for_the_file(tmp_path):
    import subprocess
    import sys

    import mmretrieve as mmr

    data = json.loads((Path(mmr.__file__).parent / "presets" / "tiny-random.json").read_text())
    preset = tmp_path / "mine.json"
    preset.write_text(json.dumps({**data, "name": "mine"}))
    index = str(tmp_path / "mine.mmr")
    mmr.Retriever.create(str(preset), path=index).close()
    run = subprocess.run([sys.executable, "-m", "mmretrieve", "train", "--recipe", "pic2word", "--index", index,
                          "--print-config"], capture_output=True, text=True)
    assert run.returncode != 0
    assert f"--index {index}: the index was built from a preset JSON file (preset 'mine'); give that file with " \
           f"--preset PATH" in run.stderr
    given = subprocess.run([sys.executable, "-m", "mmretrieve", "train", "--recipe", "pic2word", "--index", index,
                            "--preset", str(preset), "--print-config"], capture_output=True, text=True)
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout)["model"]["preset"] == str(preset)
