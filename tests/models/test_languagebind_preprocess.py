"""LanguageBind preprocessing reproduced exactly: Kaldi fbank, tile/three-chunk rules, image and frame transforms."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
from PIL import Image
from torchvision import transforms

from mmretrieve.errors import MediaError
from mmretrieve.models.languagebind import LanguageBindAudioFrontend, LanguageBindVisualPreprocessor, chunk_offsets

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchvision.transforms._transforms_video import CenterCropVideo, NormalizeVideo

MEAN, STD, TARGET, RATE = -4.2677393, 4.5689974, 1036, 16000


def _their_audio(samples: np.ndarray) -> torch.Tensor:
    """The publisher's AudioTransform.waveform2melspec on a (1, N) waveform, with each third's first
    offset instead of a random one (their commented-out fixed variant)."""
    audio = torch.from_numpy(samples.copy())[None]
    audio -= audio.mean()
    mel = kaldi.fbank(audio, htk_compat=True, sample_frequency=RATE, use_energy=False, window_type="hanning",
                      num_mel_bins=112, dither=0.0, frame_length=25, frame_shift=10)
    if mel.shape[0] > TARGET:
        ranges = np.array_split(list(range(0, mel.shape[0] - TARGET + 1)), 3)
        ranges = [r if len(r) else [0] for r in ranges]
        fusion = torch.stack([mel[r[0] : r[0] + TARGET, :] for r in ranges], dim=0)
    elif mel.shape[0] < TARGET:
        n_repeat = int(TARGET / mel.shape[0]) + 1
        mel = mel.repeat(n_repeat, 1)[:TARGET, :]
        fusion = torch.stack([mel, mel, mel], dim=0)
    else:
        fusion = torch.stack([mel, mel, mel], dim=0)
    return (fusion.transpose(1, 2) - MEAN) / (STD * 2)


def _samples_for(frames: int, seed: int = 0) -> np.ndarray:
    n = 400 + (frames - 1) * 160  # 25 ms frames every 10 ms, no edge padding
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n) + 0.1).astype(np.float32)


@pytest.mark.parametrize("frames", [97, 998, 1035, 1036, 1037, 1038, 1498, 3001])
def test_fbank_input_matches_their_processor(frames):
    samples = _samples_for(frames)
    ours = LanguageBindAudioFrontend()(samples)
    assert ours.shape == (3, 112, 1036) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, _their_audio(samples), rtol=0, atol=1e-5)


def test_frame_count_rule_of_the_helper():
    mel = kaldi.fbank(torch.from_numpy(_samples_for(1036))[None], htk_compat=True, sample_frequency=RATE,
                      use_energy=False, window_type="hanning", num_mel_bins=112, dither=0.0, frame_length=25,
                      frame_shift=10)
    assert mel.shape == (1036, 112)


def _mel(frames: int) -> torch.Tensor:
    return torch.arange(frames, dtype=torch.float32)[:, None].repeat(1, 112)  # frame i holds the value i


def test_short_fbank_is_tiled_whole_then_cut():
    out = LanguageBindAudioFrontend().from_fbank(_mel(400)) * (STD * 2) + MEAN
    frames = out[0, 0].round().long()
    assert torch.equal(frames, torch.arange(1036) % 400)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_exact_length_is_used_three_times():
    out = LanguageBindAudioFrontend().from_fbank(_mel(1036)) * (STD * 2) + MEAN
    for c in range(3):
        assert torch.equal(out[c, 0].round().long(), torch.arange(1036))


@pytest.mark.parametrize("frames, offsets", [(1037, (0, 1, 0)), (1038, (0, 1, 2)), (1039, (0, 2, 3)),
                                             (1498, (0, 155, 309)), (4036, (0, 1001, 2001))])
def test_long_fbank_takes_front_middle_back_chunks(frames, offsets):
    assert chunk_offsets(frames, 1036) == offsets
    out = LanguageBindAudioFrontend().from_fbank(_mel(frames)) * (STD * 2) + MEAN
    for c, start in enumerate(offsets):
        assert torch.equal(out[c, 0].round().long(), torch.arange(start, start + 1036)), c


def test_audio_input_is_deterministic():
    samples = _samples_for(2000, seed=3)
    a, b = LanguageBindAudioFrontend()(samples), LanguageBindAudioFrontend()(samples.copy())
    assert torch.equal(a, b)


def test_audio_shorter_than_one_frame_is_a_clear_error():
    with pytest.raises(MediaError, match="at least one 25 ms frame"):
        LanguageBindAudioFrontend()(np.zeros(399, np.float32))


@pytest.mark.parametrize("size", [(300, 400), (400, 300), (224, 224), (100, 180), (333, 1000)])
def test_image_matches_their_transform(size):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    theirs = transforms.Compose([
        transforms.ToTensor(),
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])(Image.fromarray(arr))
    ours = LanguageBindVisualPreprocessor()(Image.fromarray(arr))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def _short_side_scale(x: torch.Tensor, size: int) -> torch.Tensor:
    """pytorchvideo's ShortSideScale on (C, T, H, W): bilinear, long side floored."""
    _, _, h, w = x.shape
    if w < h:
        new_h, new_w = int(math.floor(float(h) / w * size)), size
    else:
        new_h, new_w = size, int(math.floor(float(w) / h * size))
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("size", [(240, 320), (320, 240), (224, 224), (90, 160)])
def test_video_frames_match_their_decord_transform(size):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (8,) + size + (3,), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0  # (C, T, H, W) as their loader gives
    x = NormalizeVideo(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))(x)
    x = CenterCropVideo(224)(_short_side_scale(x, 224))
    theirs = x.permute(1, 0, 2, 3)  # no random flip: ours is deterministic
    ours = LanguageBindVisualPreprocessor().frames(frames)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
