"""Weights: offline failures are immediate and actionable; local files, .bin and a populated
Hugging Face cache load without the network."""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
import torch

from mmretrieve.errors import WeightsUnavailableError
from mmretrieve.models import UntrainedAudioWarning, create_encoder, get_preset
from mmretrieve.models import weights as W
from mmretrieve.models.presets import thaw


@pytest.mark.parametrize("preset", ["clip-vit-b32", "clip-vit-b16", "clip-vit-l14"])
def test_offline_real_preset_fails_at_once(preset):
    import open_clip  # noqa: F401  (its import time is not what we measure)

    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        create_encoder(preset, device="cpu")
    assert time.perf_counter() - t0 < 3.0
    msg = str(err.value)
    assert repr(preset) in msg and "pretrained='/path/open_clip_model.safetensors'" in msg
    assert "--pretrained PATH" in msg and "HF_HUB_OFFLINE" in msg


def test_unreachable_hub_fails_at_once_without_retries(monkeypatch):
    """Not offline by flag, but no route: the probe answers and nothing is retried."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []

    def probe(url, timeout=3.0):
        calls.append(url)
        return False, "gaierror: [Errno -2] Name or service not known"

    def no_download(*a, local_files_only=False, **k):
        if not local_files_only:
            raise AssertionError("must not try to download when the hub is unreachable")
        raise FileNotFoundError("not cached")

    import huggingface_hub

    monkeypatch.setattr(W, "_reachable", probe)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="unreachable.*Name or service"):
        create_encoder("clip-vit-b32", device="cpu")
    assert time.perf_counter() - t0 < 1.0 and len(calls) == 1


def test_unknown_tag_and_missing_file():
    with pytest.raises(ValueError, match="laion2b_s34b_b79k"):
        create_encoder("clip-vit-b32", device="cpu", pretrained="no-such-tag")
    with pytest.raises(WeightsUnavailableError, match="not found"):
        create_encoder("clip-vit-b32", device="cpu", pretrained="/nonexistent/model.safetensors")


def _perturbed_clip_state(seed=3):
    enc = create_encoder("tiny-random", device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.clip.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return enc, {k: v.clone() for k, v in enc.clip.state_dict().items()}


def test_local_safetensors_and_bin_checkpoints(tmp_path):
    src, state = _perturbed_clip_state()
    st = tmp_path / "open_clip_model.safetensors"
    W.save_safetensors(st, state)
    binf = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(state, binf)
    with torch.inference_mode():
        want = src.encode_text(["a red circle"])
    for path in (st, binf):
        with pytest.warns(UntrainedAudioWarning, match="audio tower is untrained"):
            enc = create_encoder("tiny-random", device="cpu", pretrained=str(path))
        assert not enc.random_weights
        with torch.inference_mode():
            assert torch.equal(enc.encode_text(["a red circle"]), want)
        fp = enc.fingerprint()
        assert fp["clip"]["pretrained"] == f"file:{path.name}"
        assert fp["clip"]["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert fp["clip"]["random_seed"] is None
    wrong = tmp_path / "wrong.safetensors"
    W.save_safetensors(wrong, {"visual.conv1.weight": torch.zeros(1)})
    with pytest.raises(WeightsUnavailableError, match="wrong.safetensors"):
        create_encoder("tiny-random", device="cpu", pretrained=str(wrong))


def _fake_hf_cache(root, repo, files: dict[str, bytes]):
    """The on-disk layout huggingface_hub reads with local_files_only=True."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    (base / "blobs").mkdir()
    snap.mkdir(parents=True)
    for name, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (base / "blobs" / sha).write_bytes(data)
        (snap / name).symlink_to(base / "blobs" / sha)
    return snap


def test_hf_hub_from_populated_cache_offline(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    src, state = _perturbed_clip_state(seed=5)
    st = tmp_path / "w.safetensors"
    W.save_safetensors(st, state)
    weights = st.read_bytes()
    cfg = {"model_cfg": thaw(get_preset("tiny-random").clip.config),
           "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    _fake_hf_cache(cache, "someone/tiny-clip", {
        "open_clip_config.json": json.dumps(cfg).encode(), "open_clip_model.safetensors": weights})
    with pytest.warns(UntrainedAudioWarning):
        enc = create_encoder("tiny-random", device="cpu", pretrained="hf-hub:someone/tiny-clip")
    assert enc.image_preprocessor.mean == (0.5, 0.5, 0.5)
    fp = enc.fingerprint()
    assert fp["clip"]["pretrained"] == "hf-hub:someone/tiny-clip"
    assert fp["clip"]["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    with torch.inference_mode():
        assert torch.equal(enc.encode_text(["x"]), src.encode_text(["x"]))
        img = np.full((20, 20, 3), 128, np.uint8)
        assert not torch.equal(enc.preprocess_image(img), src.preprocess_image(img))  # its own mean/std


def test_open_clip_tag_from_populated_cache(tmp_path, monkeypatch):
    """A preset whose tag's weights are in the HF cache loads offline (same door as ViT-B-32)."""
    import open_clip

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    cfg = open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")
    repo = cfg["hf_hub"].rstrip("/")
    _fake_hf_cache(cache, repo, {"open_clip_model.safetensors": b"placeholder"})
    resolved = W.resolve_pretrained("ViT-B-32", "laion2b_s34b_b79k", "clip-vit-b32")
    assert resolved.checkpoint.endswith("open_clip_model.safetensors")
    assert resolved.source == "laion2b_s34b_b79k" and resolved.preprocess["interpolation"] == "bicubic"
    assert W.sha256_file(resolved.checkpoint) == hashlib.sha256(b"placeholder").hexdigest()
