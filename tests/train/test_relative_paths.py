"""Paths users type are read from the current directory: --checkpoint, --weights, --pretrained, --data,
--out, recipe files. Only registered names (presets, recipes, bundled assets) resolve inside the package."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import mmretrieve
from mmretrieve.errors import WeightsUnavailableError
from mmretrieve.models import create_encoder
from mmretrieve.models.encoder import UntrainedAudioWarning

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mmretrieve.__file__)))


def _cli(cwd, *argv):
    env = {**os.environ, "PYTHONPATH": _ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-m", "mmretrieve", *argv], cwd=cwd, capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def trained(small_corpus, tmp_path_factory):
    """A run trained from the command line with relative paths only (data, out, export, recipe file)."""
    work = tmp_path_factory.mktemp("work")
    shutil.copytree(small_corpus, work / "data")
    (work / "recipes").mkdir()
    shutil.copy(os.path.join(_ROOT, "mmretrieve", "recipes", "synthetic-sample.yaml"), work / "recipes" / "mine.yaml")
    _cli(work, "train", "--recipe", "recipes/mine.yaml", "--data", "data", "--out", "runs/x", "--no-progress",
         "--preset", "tiny-random", "--set", "model.preset_weights=true", "--set", "optim.max_steps=1",
         "--set", "optim.batch_size=4", "--set", "run.export=w.safetensors", "--set", "lock.token_embedding=false",
         "--set", "data.num_frames=3")
    return work


def test_eval_reads_a_relative_checkpoint_from_any_directory(trained):
    (trained / "elsewhere").mkdir(exist_ok=True)
    for cwd, checkpoint, data in ((trained, "runs/x/last", "data"), (trained / "elsewhere", "../runs/x/last", "../data")):
        out = _cli(cwd, "eval", "--checkpoint", checkpoint, "--protocol", "synthetic", "--data", data,
                   "--json", "r.json")
        assert "text->image" in out
        assert set(json.loads((cwd / "r.json").read_text())["results"]) == {"image", "video", "audio"}


def test_the_checkpoint_records_its_sampling_and_eval_uses_it(trained):
    from mmretrieve.commands.eval import checkpoint_sampling

    state = json.loads((trained / "runs" / "x" / "last" / "state.json").read_text())
    assert state["video_sampling"]["num_frames"] == 3 and state["audio_window"] == 10.0
    assert checkpoint_sampling(state, None).video.num_frames == 3
    legacy = {k: v for k, v in state.items() if k not in ("video_sampling", "audio_window")}
    preset = mmretrieve.get_preset("tiny-random")
    assert checkpoint_sampling({**legacy, "num_frames": 5}, preset).video.num_frames == 5
    assert checkpoint_sampling({**legacy, "num_frames": None}, preset).video.num_frames == preset.video.num_frames


def test_relative_weights_and_export_are_the_current_directory(trained, monkeypatch):
    assert (trained / "w.safetensors").is_file()  # run.export=w.safetensors landed in the run's directory
    out = _cli(trained, "eval", "--preset", "tiny-random", "--weights", "w.safetensors", "--protocol", "synthetic",
               "--data", "data")
    assert "text->image" in out
    monkeypatch.chdir(trained)
    enc = create_encoder("tiny-random", device="cpu", weights="w.safetensors")
    assert enc.audio_trained
    monkeypatch.chdir(trained / "runs")
    with pytest.raises(WeightsUnavailableError, match=f"weights: encoder weights file not found: "
                                                      f"{trained / 'runs' / 'w.safetensors'}"):
        create_encoder("tiny-random", device="cpu", weights="w.safetensors")


def test_relative_pretrained_is_the_current_directory(tmp_path, monkeypatch):
    import torch

    enc = create_encoder("tiny-random", device="cpu")
    torch.save(enc.clip.state_dict(), tmp_path / "clip.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UntrainedAudioWarning):  # real CLIP weights, no audio weights
        loaded = create_encoder("tiny-random", device="cpu", pretrained="clip.pt")
    assert not loaded.random_weights
    os.mkdir(tmp_path / "other")
    monkeypatch.chdir(tmp_path / "other")
    assert loaded.fingerprint()["clip"]["weights_sha256"]  # hashed from the absolute path after a chdir


def test_bundled_assets_resolve_inside_the_package_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    enc = create_encoder("sample", device="cpu")  # the preset's "assets/sample.safetensors"
    assert enc.audio_trained


def test_a_preset_file_reads_its_weights_beside_it(trained, tmp_path, monkeypatch):
    data = json.loads((mmretrieve.models.presets._presets_dir() / "tiny-random.json").read_text())
    (tmp_path / "presets").mkdir()
    shutil.copy(trained / "w.safetensors", tmp_path / "presets" / "w.safetensors")
    (tmp_path / "presets" / "mine.json").write_text(json.dumps({**data, "name": "mine", "weights": "w.safetensors"}))
    monkeypatch.chdir(tmp_path)
    enc = create_encoder("presets/mine.json", device="cpu")
    assert enc.audio_trained and enc.preset.weights == str(tmp_path / "presets" / "w.safetensors")


def test_an_index_records_relative_weights_as_an_absolute_path(trained, monkeypatch, tmp_path):
    from mmretrieve.retriever import Retriever, recorded_weights

    monkeypatch.chdir(trained)
    r = Retriever.create("tiny-random", path=tmp_path / "idx", weights="w.safetensors", num_workers=0)
    r.save()
    r.close()
    monkeypatch.chdir(tmp_path)
    with Retriever.load(tmp_path / "idx") as again:
        assert again.weights_path == str(trained / "w.safetensors")
        assert again.encoder.audio_trained
    # indexes written before paths were made absolute read a relative weights_path inside the package
    assert recorded_weights("assets/sample.safetensors") == os.path.join(_ROOT, "mmretrieve", "assets",
                                                                         "sample.safetensors")
    assert recorded_weights(None) is None and recorded_weights("/abs/w.safetensors") == "/abs/w.safetensors"
