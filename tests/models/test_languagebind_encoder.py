"""The languagebind preset: generated checkpoints in the published layout, loaded through create_encoder."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from mmretrieve.errors import CheckpointMismatchError, WeightsUnavailableError
from mmretrieve.models import create_encoder, get_preset
from mmretrieve.models.languagebind import LanguageBindEncoder
from mmretrieve.testing.languagebind import REPOS, write_checkpoint, write_languagebind_dirs

DIM = 16  # the narrow checkpoints' projection


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("languagebind")
    write_languagebind_dirs(str(root))
    return str(root)


@pytest.fixture(scope="module")
def lb(weights_dir):
    return create_encoder("languagebind", device="cpu", pretrained=weights_dir)


def _rng_image(seed, shape=(180, 260, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _unit(x: torch.Tensor) -> None:
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(x.shape[0]), rtol=0, atol=1e-5)


def test_preset_is_the_published_three_towers():
    p = get_preset("languagebind")
    assert p.kind == "languagebind" and not p.random_weights
    assert dict(p.towers) == {"image": "LanguageBind/LanguageBind_Image", "video": "LanguageBind/LanguageBind_Video_FT",
                              "audio": "LanguageBind/LanguageBind_Audio_FT"}
    assert p.video.num_frames == 8 and p.audio.sample_rate == 16000


def test_every_modality_gives_unit_vectors_of_the_space_dimension(lb):
    assert isinstance(lb, LanguageBindEncoder) and lb.dim == DIM
    with torch.inference_mode():
        text = lb.encode_text(["a dog barking", "rain on a roof"])
        image = lb.encode_image(torch.stack([lb.preprocess_image(_rng_image(i)) for i in range(2)]))
        frames = lb.preprocess_frames(_rng_image(5, (8, 120, 160, 3)))
        video = lb.encode_video(frames[None])
        rng = np.random.default_rng(0)
        audio = lb.encode_audio(torch.stack([lb.preprocess_audio(0.1 * rng.standard_normal(n).astype(np.float32))
                                             for n in (8000, 160000, 400000)]))
    for x, n in ((text, 2), (image, 2), (video, 1), (audio, 3)):
        assert x.shape == (n, DIM) and x.dtype == torch.float32
        _unit(x)
    assert not torch.allclose(text[0], text[1]) and not torch.allclose(audio[0], audio[1])


def test_vectors_are_deterministic_across_loads(lb, weights_dir):
    again = create_encoder("languagebind", device="cpu", pretrained=weights_dir)
    img = lb.preprocess_image(_rng_image(1))[None]
    frames = lb.preprocess_frames(_rng_image(2, (8, 96, 128, 3)))[None]
    mel = lb.preprocess_audio(np.sin(np.arange(48000) / 9.0).astype(np.float32))[None]
    with torch.inference_mode():
        for enc_a, enc_b in ((lb, again), (lb, lb)):
            assert torch.equal(enc_a.encode_text(["x y z"]), enc_b.encode_text(["x y z"]))
            assert torch.equal(enc_a.encode_image(img), enc_b.encode_image(img))
            assert torch.equal(enc_a.encode_video(frames), enc_b.encode_video(frames))
            assert torch.equal(enc_a.encode_audio(mel), enc_b.encode_audio(mel))
    assert lb.fingerprint() == again.fingerprint()
    assert lb.fingerprint_id() == again.fingerprint_id()


def test_text_comes_from_the_image_checkpoint_and_matches_the_others(lb, weights_dir):
    from mmretrieve.models.languagebind import load_tower, open_checkpoint

    audio_tower, _ = load_tower(open_checkpoint(os.path.join(weights_dir, REPOS["audio"]), "audio"))
    ids = lb.tokenize(["a violin"])
    with torch.inference_mode():
        assert torch.equal(lb.encode_text(["a violin"]),
                           torch.nn.functional.normalize(audio_tower.encode_text(ids), dim=-1))
    assert lb.text_from == "image"


def test_frame_order_matters_through_temporal_attention(lb):
    frames = lb.preprocess_frames(_rng_image(7, (8, 112, 112, 3)))
    with torch.inference_mode():
        a = lb.encode_video(frames[None])
        b = lb.encode_video(frames.flip(0)[None])
    assert not torch.allclose(a, b, atol=1e-4)


def test_clips_with_fewer_real_frames_pick_frames_as_their_decoder_does(lb):
    frames = lb.preprocess_frames(_rng_image(8, (5, 100, 100, 3)))
    mask = torch.tensor([[True, True, True, False, False]])
    picks = np.linspace(0, 2, 8).astype(np.int64)  # [0 0 0 0 1 1 1 2]
    with torch.inference_mode():
        padded = lb.encode_video(frames[None], mask)
        explicit = lb.encode_video(frames[picks][None])
    torch.testing.assert_close(padded, explicit, rtol=0, atol=1e-6)


def test_wrong_input_shapes_are_clear_errors(lb):
    with pytest.raises(ValueError, match=r"mels: expected \(N, 3, 112, 1036\)"):
        lb.encode_audio(torch.zeros(1, 1, 128, 1024))
    with pytest.raises(ValueError, match=r"pixels: expected \(N, 3, 224, 224\)"):
        lb.encode_image(torch.zeros(1, 3, 32, 32))


def test_pretrained_mapping_per_tower(weights_dir, lb):
    mapping = {m: os.path.join(weights_dir, name) for m, name in REPOS.items()}
    enc = create_encoder("languagebind", device="cpu", pretrained=mapping)
    assert enc.fingerprint_id() == lb.fingerprint_id()


def _as_hf_cache(weights_dir: str, cache: str) -> None:
    """Lay the generated directories out as huggingface_hub's cache does (refs/main -> snapshots/<rev>)."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    for name in REPOS.values():
        repo = os.path.join(cache, f"models--LanguageBind--{name}")
        os.makedirs(os.path.join(repo, "refs"))
        with open(os.path.join(repo, "refs", "main"), "w") as f:
            f.write(rev)
        shutil.copytree(os.path.join(weights_dir, name), os.path.join(repo, "snapshots", rev))


def test_weights_come_from_the_hf_cache_offline(weights_dir, lb, tmp_path, monkeypatch):
    cache = str(tmp_path / "hub")
    _as_hf_cache(weights_dir, cache)
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = create_encoder("languagebind", device="cpu")
    fp = enc.fingerprint()
    assert fp["towers"]["audio"]["source"] == "hf-hub:LanguageBind/LanguageBind_Audio_FT"
    assert fp["towers"]["audio"]["weights_sha256"] == lb.fingerprint()["towers"]["audio"]["weights_sha256"]
    with torch.inference_mode():
        assert torch.equal(enc.encode_text(["hello"]), lb.encode_text(["hello"]))


def test_missing_weights_give_the_actionable_error():
    # the autouse fixture points HF_HUB_CACHE at an empty directory and sets HF_HUB_OFFLINE
    with pytest.raises(WeightsUnavailableError) as e:
        create_encoder("languagebind", device="cpu")
    msg = str(e.value)
    assert "preset 'languagebind'" in msg and "LanguageBind/LanguageBind_" in msg
    assert "HF_HUB_OFFLINE is set" in msg and "--pretrained DIR" in msg and "HF_HUB_CACHE=" in msg


def test_parent_directory_without_a_tower_says_which(tmp_path):
    write_checkpoint(tmp_path / REPOS["image"], "image")
    with pytest.raises(WeightsUnavailableError, match="no subdirectory 'LanguageBind_Video_FT'"):
        create_encoder("languagebind", device="cpu", pretrained=str(tmp_path))


def test_towers_with_different_text_weights_are_refused(tmp_path):
    for i, (kind, name) in enumerate(REPOS.items()):
        write_checkpoint(tmp_path / name, kind, seed=i, text_seed=5 if kind == "audio" else 1234)
    with pytest.raises(CheckpointMismatchError, match="LanguageBind_Audio_FT.*text-tower tensor"):
        create_encoder("languagebind", device="cpu", pretrained=str(tmp_path))


def test_options_that_do_not_apply_are_refused(weights_dir):
    with pytest.raises(ValueError, match="video_head: preset 'languagebind' pools frames inside its video tower"):
        create_encoder("languagebind", device="cpu", pretrained=weights_dir, video_head="transformer")


def test_doctor_reports_the_cached_towers(weights_dir, tmp_path, monkeypatch):
    from mmretrieve.doctor import weights_checks

    def languagebind_check():
        return [c for c in weights_checks() if c.name == "languagebind"][0]

    empty = languagebind_check()
    assert empty.ok is None and "LanguageBind/LanguageBind_Audio_FT" in empty.detail
    cache = str(tmp_path / "hub")
    _as_hf_cache(weights_dir, cache)
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    found = languagebind_check()
    assert found.ok is True and found.detail.count(cache) == 3


def test_encode_dispatches_by_modality(lb):
    from mmretrieve.modality import Modality

    img = lb.preprocess_image(_rng_image(3))[None]
    frames = lb.preprocess_frames(_rng_image(4, (8, 64, 64, 3)))[None]
    mel = lb.preprocess_audio(np.cos(np.arange(20000) / 5.0).astype(np.float32))[None]
    with torch.inference_mode():
        assert torch.equal(lb.encode(Modality.TEXT, ["a bell"]), lb.encode_text(["a bell"]))
        assert torch.equal(lb.encode("image", img), lb.encode_image(img))
        assert torch.equal(lb.encode("video", (frames, torch.ones(1, 8, dtype=torch.bool))), lb.encode_video(frames))
        assert torch.equal(lb.encode("audio", mel), lb.encode_audio(mel))


def test_a_different_tokenizer_vocabulary_is_refused(tmp_path):
    import json

    dirs = write_languagebind_dirs(str(tmp_path))
    path = os.path.join(dirs["audio"], "merges.txt")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    lines[1], lines[2] = lines[2], lines[1]  # two merges swapped: another tokenizer
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="merges.txt: the merges differ from CLIP's"):
        create_encoder("languagebind", device="cpu", pretrained=str(tmp_path))
    vocab_path = os.path.join(dirs["image"], "vocab.json")
    with open(vocab_path, encoding="utf-8") as f:
        vocab = json.load(f)
    vocab["a</w>"], vocab["the</w>"] = vocab["the</w>"], vocab["a</w>"]
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    with pytest.raises(ValueError, match="vocab.json: the vocabulary differs"):
        create_encoder("languagebind", device="cpu", pretrained=str(tmp_path))


def test_max_words_keeps_the_first_tokens_and_the_end_token(lb):
    long_text = " ".join(["word"] * 40)
    ids = lb.tokenize([long_text], max_words=8)
    assert ids[0, 7] == 49407 and (ids[0, 8:] == 0).all() and ids[0, 0] == 49406
    with torch.inference_mode():
        cut = lb.encode_text([long_text], max_words=8)
        same = lb.encode_text([" ".join(["word"] * 6)])
    torch.testing.assert_close(cut, same, rtol=0, atol=1e-6)
