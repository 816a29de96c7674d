"""End to end with the languagebind preset: one index of images, clips and recordings, searched every way."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

import mmretrieve as mmr
from mmretrieve.media.write import write_audio, write_image, write_video
from mmretrieve.testing.languagebind import write_languagebind_dirs


def _clip(rng, seconds, fps=2, size=64):
    n = seconds * fps
    frames = np.zeros((n, size, size, 3), np.uint8) + rng.integers(0, 120, 3, dtype=np.uint8)
    for i in range(n):
        x = (i * 5) % (size - 12)
        frames[i, 20:32, x : x + 12] = rng.integers(120, 256, 3, dtype=np.uint8)
    return frames


def _recording(rng, seconds, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    freq = np.where(t < 12, 300.0, 1200.0)  # the sound changes half-way
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.03 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb-weights")
    write_languagebind_dirs(str(root))
    return str(root)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, weights):
    rng = np.random.default_rng(0)
    media = tmp_path_factory.mktemp("lb-media")
    files = {
        "image": [write_image(media / "photo.png", rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)),
                  write_image(media / "other.jpg", rng.integers(0, 256, (90, 90, 3), dtype=np.uint8))],
        "video": [write_video(media / "clip30.mp4", _clip(rng, 30), 2),
                  write_video(media / "short.mp4", _clip(rng, 4), 2)],
        "audio": [write_audio(media / "rec25.wav", _recording(rng, 25.0), 16000),
                  write_audio(media / "beep.flac", _recording(rng, 2.0)[::-1].copy(), 16000)],
    }
    files = {m: [os.path.realpath(p) for p in ps] for m, ps in files.items()}
    r = mmr.Retriever.create("languagebind", pretrained=weights, num_workers=0)
    report = r.add(str(media), progress=False)
    yield r, report, files
    r.close()


def test_every_file_is_indexed_with_windows(indexed):
    r, report, files = indexed
    assert sorted(report.added) == sorted(p for ps in files.values() for p in ps)
    assert report.failed == ()
    assert r.index.stats() == {"image": 2, "video": 3 + 1, "audio": 3 + 1, "text": 0, "total": 10}


def test_long_media_windows_keep_start_and_end(indexed):
    r, _, files = indexed
    for modality, path, spans in (("video", files["video"][0], [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]),
                                  ("audio", files["audio"][0], [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)])):
        hits = r.search("anything", modality=modality, k=10)
        assert sorted((h.start, h.end) for h in hits if h.path == path) == spans


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_each_file_finds_itself(indexed, modality):
    r, _, files = indexed
    for path in files[modality]:
        hit = r.search(pathlib.Path(path), modality=modality, k=1)[0]
        assert hit.path == path and hit.modality.value == modality


def test_text_searches_every_modality_in_one_space(indexed):
    r, _, _ = indexed
    hits = r.search("a dog barking in the rain", k=len(r))
    assert {h.modality.value for h in hits} == {"image", "video", "audio"}
    assert all(-1.0 <= h.score <= 1.0 for h in hits)


def test_info_reports_the_preset_and_searchable_modalities(indexed):
    r, _, _ = indexed
    info = r.info()
    assert info["preset"] == "languagebind" and info["dim"] == 16
    assert info["audio_trained"] is True


def test_saved_index_reopens_with_the_same_towers(indexed, weights, tmp_path):
    r, _, files = indexed
    r.save(str(tmp_path / "idx"))
    assert r.encoder.fingerprint()["towers"]["audio"]["source"] == "dir:LanguageBind_Audio_FT"
    with mmr.Retriever.load(str(tmp_path / "idx"), pretrained=weights, readonly=True) as again:
        assert again.encoder.fingerprint_id() == r.encoder.fingerprint_id()
        hit = again.search(pathlib.Path(files["audio"][1]), modality="audio", k=1)[0]
        assert hit.path == files["audio"][1]
    with pytest.raises(mmr.errors.WeightsUnavailableError, match="languagebind"):
        mmr.Retriever.load(str(tmp_path / "idx"), readonly=True)


def test_command_line_indexes_and_searches_with_a_weights_folder(weights, tmp_path):
    import json
    import subprocess
    import sys

    rng = np.random.default_rng(1)
    media = tmp_path / "m"
    media.mkdir()
    rec = os.path.realpath(write_audio(media / "r.wav", _recording(rng, 12.0), 16000))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    index = str(tmp_path / "idx")
    run = subprocess.run([sys.executable, "-m", "mmretrieve", "index", str(media), "--index", index, "--preset",
                          "languagebind", "--pretrained", weights, "--no-progress"], capture_output=True, text=True,
                         env=env)
    assert run.returncode == 0, run.stderr
    assert "added 1 file(s)" in run.stdout
    run = subprocess.run([sys.executable, "-m", "mmretrieve", "search", index, "--file", rec, "-k", "1", "--json",
                          "--pretrained", weights], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    first = json.loads(run.stdout.splitlines()[0])  # JSON Lines: one hit per line, best first
    assert first["path"] == rec and first["modality"] == "audio"


@pytest.mark.parametrize("query_modality", ["image", "video", "audio"])
def test_every_direction_between_modalities(indexed, query_modality):
    r, _, files = indexed
    query = pathlib.Path(files[query_modality][1])
    for target in ("image", "video", "audio"):
        hits = r.search(query, modality=target, k=2)
        assert len(hits) == 2 and all(h.modality.value == target for h in hits)
        assert all(np.isfinite(h.score) for h in hits)
