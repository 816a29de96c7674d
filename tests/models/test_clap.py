"""The clap presets: a randomly initialised ClapModel saved in the transformers layout, loaded through the preset."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import mmretrieve as mmr
from mmretrieve.errors import CheckpointMismatchError, WeightsUnavailableError
from mmretrieve.media.write import write_audio, write_image, write_video
from mmretrieve.models import create_encoder, get_preset
from mmretrieve.models.clap import ClapEncoder
from mmretrieve.testing.clap import write_clap_checkpoint


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    return write_clap_checkpoint(tmp_path_factory.mktemp("clap") / "clap-htsat-unfused")


@pytest.fixture(scope="module")
def clap(clap_dir):
    return create_encoder("clap", device="cpu", pretrained=clap_dir)


def _tone(seconds, freq=440.0, rate=48000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_presets_name_the_laion_repositories():
    assert dict(get_preset("clap").towers) == {"audio": "laion/clap-htsat-unfused"}
    assert dict(get_preset("clap-fused").towers) == {"audio": "laion/clap-htsat-fused"}
    assert get_preset("clap").audio.sample_rate == 48000


def test_text_and_audio_are_unit_vectors_and_deterministic(clap, clap_dir):
    assert isinstance(clap, ClapEncoder) and clap.dim == 16 and clap.modalities == ("text", "audio")
    feats = torch.stack([clap.preprocess_audio(_tone(s, f)) for s, f in ((1.0, 300.0), (9.5, 900.0))])
    again = create_encoder("clap", device="cpu", pretrained=clap_dir)
    with torch.inference_mode():
        text = clap.encode_text(["a dog barks", "rain"])
        audio = clap.encode_audio(feats)
        assert torch.equal(text, again.encode_text(["a dog barks", "rain"]))
        assert torch.equal(audio, again.encode_audio(feats))
    for x in (text, audio):
        assert x.shape == (2, 16)
        torch.testing.assert_close(x.norm(dim=-1), torch.ones(2), rtol=0, atol=1e-5)
    assert clap.fingerprint_id() == again.fingerprint_id()


def test_audio_longer_than_ten_seconds_is_cut_not_cropped_at_random(clap):
    long = _tone(14.0, 500.0)
    a, b = clap.preprocess_audio(long), clap.preprocess_audio(long)
    assert torch.equal(a, b)
    assert torch.equal(a, clap.preprocess_audio(long[: 480000]))


def test_fused_model_loads_and_is_deterministic(tmp_path):
    d = write_clap_checkpoint(tmp_path / "clap-htsat-fused", fused=True)
    enc = create_encoder("clap-fused", device="cpu", pretrained=d)
    assert enc.fused
    feats = enc.preprocess_audio(_tone(3.0))[None]
    assert feats.shape[1] == 4  # the fused extractor stacks four mel views
    with torch.inference_mode():
        assert torch.equal(enc.encode_audio(feats), enc.encode_audio(feats.clone()))


def test_checkpoint_missing_tensors_is_an_error_naming_them(tmp_path):
    from safetensors.torch import load_file, save_file

    d = write_clap_checkpoint(tmp_path / "c")
    path = os.path.join(d, "model.safetensors")
    state = load_file(path)
    gone = sorted(k for k in state if k.startswith("audio_projection."))
    for k in gone:
        del state[k]
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError, match="missing keys.*audio_projection"):
        create_encoder("clap", device="cpu", pretrained=d)


def test_missing_weights_give_the_actionable_error():
    with pytest.raises(WeightsUnavailableError, match="preset 'clap'.*laion/clap-htsat-unfused.*--pretrained DIR"):
        create_encoder("clap", device="cpu")


def test_clap_index_refuses_images_and_videos_and_finds_sounds(clap_dir, tmp_path):
    rng = np.random.default_rng(0)
    media = tmp_path / "media"
    media.mkdir()
    rec = os.path.realpath(write_audio(media / "rec.wav", _tone(25.0, 700.0), 48000))
    other = os.path.realpath(write_audio(media / "hum.flac", _tone(2.0, 120.0)[:, None].repeat(2, 1), 48000))
    img = os.path.realpath(write_image(media / "p.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    vid = os.path.realpath(write_video(media / "v.mp4", rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), 4))
    with mmr.Retriever.create("clap", pretrained=clap_dir, num_workers=0) as r:
        report = r.add(str(media), progress=False)
        assert sorted(report.added) == sorted([rec, other])
        reasons = dict(report.failed)
        assert sorted(reasons) == sorted([img, vid])
        assert "preset clap embeds audio and text only (no image tower)" in reasons[img]
        assert r.index.stats()["audio"] == 3 + 1
        spans = sorted((h.start, h.end) for h in r.search("a tone", modality="audio", k=10) if h.path == rec)
        assert spans == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
        assert r.search(pathlib.Path(other), modality="audio", k=1)[0].path == other
        assert r.info()["searchable"] == ["text", "audio"]
        with pytest.raises(ValueError, match="embeds text and audio only"):
            r.search(pathlib.Path(img))


def test_max_words_caps_the_text_tokens(clap):
    ids = clap.tokenize(["a very long description of a sound"], max_words=5)["input_ids"]
    assert ids.shape == (1, 5)
    with torch.inference_mode():
        assert clap.encode_text(["a very long description"], max_words=5).shape == (1, 16)
