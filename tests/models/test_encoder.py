from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mmretrieve.errors import MediaError
from mmretrieve.models import UntrainedAudioWarning, create_encoder, get_preset


def _frames(rng, t, h=40, w=56):
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _tone(seconds, rate=16000, f=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def test_towers_shapes_and_normalisation(tiny, rng):
    d, s = tiny.dim, tiny.image_size
    assert (d, s) == (32, 32) and tiny.device == torch.device("cpu") and not tiny.training
    with torch.inference_mode():
        txt = tiny.encode_text(["a red circle", "a blue square moving to the right", ""])
        img = tiny.encode_image(torch.stack([tiny.preprocess_image(f) for f in _frames(rng, 3)]))
        vid = tiny.encode_video(torch.stack([tiny.preprocess_frames(_frames(rng, 4)) for _ in range(2)]))
        aud = tiny.encode_audio(torch.stack([tiny.preprocess_audio(_tone(2.0)), tiny.preprocess_audio(_tone(10.0, f=880))]))
    for x, n in ((txt, 3), (img, 3), (vid, 2), (aud, 2)):
        assert x.shape == (n, d) and x.dtype == torch.float32
        assert torch.allclose(x.norm(dim=-1), torch.ones(n), atol=1e-5)
    assert not torch.allclose(txt[0], txt[1])
    assert tiny.encode_text([]).shape == (0, d)


def test_two_encoders_are_identical_and_global_rng_untouched(tiny, rng):
    torch.manual_seed(99)
    before = torch.random.get_rng_state()
    other = create_encoder("tiny-random", device="cpu")
    assert torch.equal(before, torch.random.get_rng_state())
    frames = _frames(rng, 3)
    with torch.inference_mode():
        for enc in (tiny, other):
            enc._out = (
                enc.encode_text(["a dog"]),
                enc.encode_image(enc.preprocess_image(frames[0])[None]),
                enc.encode_video(enc.preprocess_frames(frames)[None]),
                enc.encode_audio(enc.preprocess_audio(_tone(1.0))[None]),
            )
    for a, b in zip(tiny._out, other._out):
        assert torch.equal(a, b)
    for (ka, va), (kb, vb) in zip(tiny.state_dict().items(), other.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    del tiny._out


def test_image_equals_one_frame_video_under_mean(tiny, rng):
    frame = _frames(rng, 1, 37, 61)[0]
    pix = tiny.preprocess_image(frame)
    assert torch.equal(pix, tiny.preprocess_frames(frame[None])[0])
    assert torch.equal(pix, tiny.preprocess_image(Image.fromarray(frame)))
    with torch.inference_mode():
        img = tiny.encode_image(pix[None])
        vid = tiny.encode_video(pix[None, None])
    assert torch.allclose(img, vid, atol=1e-6)


def test_preprocess_image_is_deterministic_resize_crop_normalise(tiny):
    # a left half black / right half white image, 32 x 96: shortest side already 32 -> centre crop
    arr = np.zeros((32, 96, 3), np.uint8)
    arr[:, 48:] = 255
    pix = tiny.preprocess_image(arr)
    assert pix.shape == (3, 32, 32)
    mean = torch.tensor(tiny.preset.mean).view(3, 1, 1)
    std = torch.tensor(tiny.preset.std).view(3, 1, 1)
    raw = pix * std + mean
    assert torch.allclose(raw[:, :, :16], torch.zeros(3, 32, 16), atol=1e-6)
    assert torch.allclose(raw[:, :, 16:], torch.ones(3, 32, 16), atol=1e-6)
    big = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    assert torch.equal(tiny.preprocess_image(big), tiny.preprocess_image(big.copy()))
    assert torch.equal(tiny.preprocess_image(big[..., 0]), tiny.preprocess_image(np.repeat(big[..., :1], 3, 2)))
    with pytest.raises(MediaError, match="shape"):
        tiny.preprocess_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(MediaError, match="dtype"):
        tiny.preprocess_frames(np.zeros((2, 4, 4, 3), np.float32))


def test_preprocess_frames_chunked_equals_whole(tiny, rng):
    frames = _frames(rng, 37, 50, 70)
    whole = tiny.preprocess_frames(frames)
    one_by_one = torch.stack([tiny.preprocess_image(f) for f in frames])
    assert torch.equal(whole, one_by_one)


def test_transformer_head_equals_mean_before_training(rng):
    enc_t = create_encoder("tiny-random", device="cpu", video_head="transformer")
    enc_m = create_encoder("tiny-random", device="cpu")
    frames = torch.stack([enc_m.preprocess_frames(_frames(rng, 4)) for _ in range(3)])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    with torch.inference_mode():
        a = enc_t.encode_video(frames, mask)
        b = enc_m.encode_video(frames, mask)
    cos = (a * b).sum(-1)
    assert torch.allclose(cos, torch.ones(3), atol=1e-5)
    assert enc_t.fingerprint_id() != enc_m.fingerprint_id()


@pytest.mark.parametrize("head", ["mean", "transformer"])
def test_masking_ignores_padded_frames(head, rng):
    enc = create_encoder("tiny-random", device="cpu", video_head=head)
    with torch.no_grad():  # a "trained" head: make every parameter matter
        g = torch.Generator().manual_seed(0)
        for p in enc.video_head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    real = enc.preprocess_frames(_frames(rng, 3))
    garbage = enc.preprocess_frames(_frames(rng, 2))
    padded = torch.cat([real, garbage])[None]
    mask = torch.tensor([[True, True, True, False, False]])
    with torch.inference_mode():
        alone = enc.encode_video(real[None])
        masked = enc.encode_video(padded, mask)
        unmasked = enc.encode_video(padded)
        chunked = enc.encode_video(padded, mask, chunk_size=1)
    assert torch.allclose(alone, masked, atol=1e-5)
    assert torch.allclose(masked, chunked, atol=1e-5)
    assert not torch.allclose(alone, unmasked, atol=1e-3)
    with pytest.raises(ValueError, match="no real frames"):
        enc.encode_video(padded, torch.zeros(1, 5, dtype=torch.bool))


def test_audio_front_end(tiny):
    a = tiny.preset.audio
    short = tiny.preprocess_audio(_tone(0.5))
    assert short.shape == (1, a.n_mels, a.target_frames)
    frames = 1 + int(0.5 * a.sample_rate) // a.hop_length
    pad = tiny.audio_frontend.pad_value
    assert torch.all(short[:, :, frames:] == pad) and not torch.all(short[:, :, :frames] == pad)
    long = _tone(30.0)
    x = tiny.preprocess_audio(long)
    assert torch.equal(x, tiny.preprocess_audio(long.copy()))
    assert torch.equal(x, tiny.preprocess_audio(long[: a.hop_length * (a.target_frames + 4)]))
    for bad, why in ((np.zeros(0, np.float32), "0 samples"), (np.array([0.1, np.nan], np.float32), "NaN"),
                     (np.zeros((2, 100), np.float32), "mono")):
        with pytest.raises(MediaError, match=why):
            tiny.preprocess_audio(bad)
    with pytest.raises(ValueError, match="mels must be"):
        tiny.encode_audio(torch.zeros(1, 1, 8, 8))


def test_audio_tower_initialised_from_image_tower(tiny):
    vis, aud = tiny.clip.visual, tiny.audio
    for (k, v), (k2, v2) in zip(vis.transformer.state_dict().items(), aud.transformer.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert torch.equal(aud.proj, vis.proj) and torch.equal(aud.class_embedding, vis.class_embedding)
    assert aud.conv.weight.shape == (vis.conv1.out_channels, 1, 16, 16)
    assert aud.positional_embedding.shape[0] == 1 + (32 // 16) * (128 // 16)
    assert aud.transformer is not vis.transformer


def test_fingerprint_stable_and_sensitive(tiny):
    fp = tiny.fingerprint()
    assert json.loads(json.dumps(fp)) == fp
    assert fp["preset"] == "tiny-random" and fp["dim"] == 32 and fp["video"]["head"] == "mean"
    assert fp["clip"]["weights_sha256"] is None and fp["clip"]["random_seed"] == 0
    assert fp["image"]["size"] == 32 and fp["audio"]["n_mels"] == 32
    ident = tiny.fingerprint_id()
    assert len(ident) == 16 and int(ident, 16) >= 0
    assert create_encoder("tiny-random", device="cpu").fingerprint_id() == ident
    base = get_preset("tiny-random")
    variants = [
        create_encoder("tiny-random", device="cpu", video_head="transformer"),
        create_encoder(replace(base, name="tiny-random-2"), device="cpu"),
        create_encoder(replace(base, seed=1), device="cpu"),
        create_encoder(replace(base, video=replace(base.video, num_frames=8)), device="cpu"),
        create_encoder(replace(base, audio=replace(base.audio, hop_length=640)), device="cpu"),
        create_encoder(replace(base, mean=(0.5, 0.5, 0.5)), device="cpu"),
    ]
    ids = {v.fingerprint_id() for v in variants}
    assert ident not in ids and len(ids) == len(variants)


def test_safetensors_round_trip(tmp_path, rng):
    src = create_encoder("tiny-random", device="cpu", video_head="transformer")
    with torch.no_grad():
        for p in list(src.audio.parameters()) + list(src.video_head.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "enc.safetensors"
    src.save_weights(path)
    dst = create_encoder("tiny-random", device="cpu", video_head="transformer")
    assert not dst.audio_trained
    dst.load_weights(path)
    assert dst.audio_trained
    frames = dst.preprocess_frames(_frames(rng, 3))[None]
    mel = dst.preprocess_audio(_tone(1.0))[None]
    with torch.inference_mode():
        assert torch.equal(src.encode_video(frames), dst.encode_video(frames))
        assert torch.equal(src.encode_audio(mel), dst.encode_audio(mel))
    assert dst.fingerprint()["extra_weights_sha256"] and dst.fingerprint_id() != src.fingerprint_id()
    # the same file through create_encoder(weights=...)
    again = create_encoder("tiny-random", device="cpu", video_head="transformer", weights=str(path))
    assert again.fingerprint_id() == dst.fingerprint_id()
    # only some parts; and a head mismatch is explained
    part = tmp_path / "audio.safetensors"
    src.save_weights(part, parts=["audio", "video_head"])
    mean_enc = create_encoder("tiny-random", device="cpu")
    with pytest.raises(ValueError, match="video_head='transformer'"):
        mean_enc.load_weights(part)
    src.save_weights(part, parts=["audio"])
    mean_enc.load_weights(part)
    with torch.inference_mode():
        assert torch.equal(mean_enc.encode_audio(mel), src.encode_audio(mel))
    not_st = tmp_path / "x.safetensors"
    not_st.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="x.safetensors"):
        mean_enc.load_weights(not_st)


def test_encoders_work_with_grad(rng):
    enc = create_encoder("tiny-random", device="cpu", video_head="transformer")
    frames = enc.preprocess_frames(_frames(rng, 4))[None]
    mel = enc.preprocess_audio(_tone(1.0))[None]
    loss = (enc.encode_video(frames) * enc.encode_text(["x"])).sum() + enc.encode_audio(mel).sum()
    loss.backward()
    assert enc.audio.conv.weight.grad is not None and enc.video_head.blocks[0].mlp[2].weight.grad is not None
    assert enc.clip.visual.conv1.weight.grad is not None


def test_inputs_of_other_dtypes_and_batch_shapes(tiny, rng):
    pix = tiny.preprocess_image(_frames(rng, 1)[0])[None]
    with torch.inference_mode():
        assert torch.allclose(tiny.encode_image(pix.double()), tiny.encode_image(pix), atol=1e-5)
    with pytest.raises(ValueError, match="pixels"):
        tiny.encode_image(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="frames"):
        tiny.encode_video(pix)
    with pytest.raises(ValueError, match="video_head"):
        create_encoder("tiny-random", device="cpu", video_head="lstm")


def test_random_presets_do_not_warn_about_audio():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedAudioWarning)
        create_encoder("tiny-random", device="cpu")


@pytest.mark.slow
def test_vit_b32_random_builds_without_downloads():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedAudioWarning)
        enc = create_encoder("vit-b32-random", device="cpu")
    assert enc.dim == 512 and enc.image_size == 224 and enc.random_weights
    assert enc.fingerprint()["clip"]["model"] == "ViT-B-32"
    with torch.inference_mode():
        assert enc.encode_text(["a dog"]).shape == (1, 512)


def test_preprocessors_pickle_for_dataloader_workers(tiny, rng):
    import pickle

    img, aud = pickle.loads(pickle.dumps((tiny.image_preprocessor, tiny.audio_frontend)))
    frame = _frames(rng, 1)[0]
    assert torch.equal(img(frame), tiny.preprocess_image(frame))
    assert torch.equal(aud(_tone(1.0)), tiny.preprocess_audio(_tone(1.0)))
