"""No untrained tower fills an index silently: its files are skipped and reported unless allowed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import mmretrieve as mmr
from mmretrieve.media.write import write_audio, write_image
from mmretrieve.models import UntrainedAudioWarning, create_encoder


@pytest.fixture(scope="module")
def pretrained_preset(tmp_path_factory):
    """tiny-random's architecture with its CLIP weights loaded from a file: trained text/image/video
    towers as far as the encoder knows, an untrained audio tower (like clip-vit-b32)."""
    root = tmp_path_factory.mktemp("untrained")
    clip = create_encoder("tiny-random", device="cpu").clip
    ckpt = root / "clip.pt"
    torch.save(clip.state_dict(), ckpt)
    data = json.loads((mmr.models.presets._presets_dir() / "tiny-random.json").read_text())
    data["name"] = "tiny-pretrained"
    data["clip"]["pretrained"] = str(ckpt)
    path = root / "tiny-pretrained.json"
    path.write_text(json.dumps(data))
    media = root / "media"
    media.mkdir()
    rng = np.random.default_rng(0)
    files = {"image": os.path.realpath(write_image(media / "a.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))),
             "audio": os.path.realpath(write_audio(media / "b.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32),
                                                   16000))}
    return str(path), str(media), files


def _retriever(preset):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedAudioWarning)
        return mmr.Retriever.create(preset, num_workers=0)


def test_untrained_audio_is_skipped_and_reported(pretrained_preset):
    preset, media, files = pretrained_preset
    with _retriever(preset) as r:
        assert r.encoder.untrained_modalities == ("audio",)
        report = r.add(media, progress=False)
        assert report.added == (files["image"],)
        assert [p for p, _ in report.failed] == [files["audio"]]
        reason = report.failed[0][1]
        assert "preset tiny-pretrained has no trained audio tower; use --preset languagebind, or train one" in reason
        assert r.index.stats()["audio"] == 0
        assert r.info()["searchable"] == ["text", "image", "video"]


def test_allow_untrained_indexes_it_anyway(pretrained_preset):
    preset, media, files = pretrained_preset
    with _retriever(preset) as r:
        report = r.add(media, progress=False, allow_untrained=True)
        assert sorted(report.added) == sorted(files.values()) and report.failed == ()


def test_all_random_and_fully_trained_presets_index_every_modality(pretrained_preset):
    _, media, files = pretrained_preset
    with mmr.Retriever.create("tiny-random", num_workers=0) as r:
        assert r.encoder.untrained_modalities == ()
        assert sorted(r.add(media, progress=False).added) == sorted(files.values())
        assert r.info()["searchable"] == ["text", "image", "video", "audio"]


def test_cli_reports_the_skip_and_honours_allow_untrained(pretrained_preset, tmp_path):
    preset, media, files = pretrained_preset
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-m", "mmretrieve", "index", media, "--index", str(tmp_path / "i"),
                          "--preset", preset, "--no-progress"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert f"skipped {files['audio']}: preset tiny-pretrained has no trained audio tower" in run.stdout
    run = subprocess.run([sys.executable, "-m", "mmretrieve", "index", media, "--index", str(tmp_path / "j"),
                          "--preset", preset, "--no-progress", "--allow-untrained"], capture_output=True, text=True,
                         env=env)
    assert run.returncode == 0, run.stderr
    assert "added 2 file(s)" in run.stdout


def test_folder_sync_honours_allow_untrained(pretrained_preset, tmp_path):
    """`index --watch --allow-untrained` keeps indexing the untrained modality on every pass and batch."""
    pytest.importorskip("watchdog")
    from mmretrieve.watch import WatchConfig, apply_changes, sync_folders

    preset, media, files = pretrained_preset
    folder = tmp_path / "watched"
    shutil.copytree(media, folder)
    with _retriever(preset) as r:
        refused = sync_folders(r, [str(folder)], WatchConfig())
        assert [os.path.basename(p) for p, _ in refused.added.failed] == ["b.wav"]
        allowed = sync_folders(r, [str(folder)], WatchConfig(allow_untrained=True))
        assert [os.path.basename(p) for p in allowed.added.added] == ["b.wav"] and allowed.added.failed == ()
        new = write_audio(folder / "c.wav", np.zeros(16000, np.float32), 16000)
        batch = apply_changes(r, [os.path.realpath(new)], [str(folder)], WatchConfig(allow_untrained=True))
        assert [os.path.basename(p) for p in batch.added.added] == ["c.wav"]
        assert r.index.stats()["audio"] == 2
