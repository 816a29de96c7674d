from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from mmretrieve.models import Preset, get_preset, list_presets, preset_from_dict, preset_record

ROOT = Path(__file__).resolve().parents[2]
CARDS = ROOT / "encoders"


def test_shipped_presets():
    names = list_presets()
    for name in ("clip-vit-b32", "clip-vit-b16", "clip-vit-l14", "vit-b32-random", "tiny-random"):
        assert name in names
        p = get_preset(name)
        assert isinstance(p, Preset) and p.name == name
    b32 = get_preset("clip-vit-b32")
    assert (b32.clip.model, b32.clip.pretrained) == ("ViT-B-32", "laion2b_s34b_b79k")
    assert get_preset("clip-vit-l14").clip.quick_gelu is True
    tiny = get_preset("tiny-random")
    assert tiny.random_weights and tiny.clip.config["embed_dim"] == 32
    assert tiny.clip.config["text_cfg"]["vocab_size"] == 49408
    assert (tiny.audio.n_mels, tiny.audio.target_frames, tiny.audio.patch) == (32, 128, 16)


def test_unknown_preset_lists_available():
    with pytest.raises(ValueError, match="unknown preset 'nope'.*clip-vit-b32.*tiny-random"):
        get_preset("nope")


def test_preset_from_json_path(tmp_path):
    data = json.loads((ROOT / "mmretrieve" / "presets" / "tiny-random.json").read_text())
    data["name"] = "my-tiny"
    data["seed"] = 7
    path = tmp_path / "my-tiny.json"
    path.write_text(json.dumps(data))
    p = get_preset(str(path))
    assert p.name == "my-tiny" and p.seed == 7 and p.clip == get_preset("tiny-random").clip
    data["bogus"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="bogus"):
        get_preset(str(path))


def test_inline_config_is_read_only_and_preset_hashable():
    p = get_preset("tiny-random")
    with pytest.raises(TypeError):
        p.clip.config["embed_dim"] = 64
    assert hash(p) == hash(get_preset("tiny-random"))
    assert replace(p, seed=1) != p


def _card_preset(text: str) -> str | None:
    m = re.search(r"^Preset:\s*`([^`]+)`", text, re.MULTILINE)
    return m.group(1) if m else None


def test_every_card_resolves_and_every_preset_has_a_card():
    cards = sorted(CARDS.glob("*.md"))
    named = {}
    for card in cards:
        name = _card_preset(card.read_text(encoding="utf-8"))
        assert name is not None, f"{card} does not say 'Preset: `name`'"
        if name == "open_clip:MODEL/TAG":  # the card of the generic preset: its examples must resolve
            examples = [e for e in re.findall(r"`(open_clip:[^`/]+/[^`]+)`", card.read_text(encoding="utf-8")) if e != name]
            assert examples and card.stem == "open_clip"
            assert all(get_preset(e).name == e for e in examples)
            continue
        assert get_preset(name).name == name == card.stem
        named[name] = card
    assert set(list_presets()) <= set(named), f"presets without a card: {set(list_presets()) - set(named)}"


@pytest.mark.parametrize("name", list_presets())
def test_audio_front_end_of_every_preset_is_clean(name):
    """No empty mel filters (torchaudio warns about them) and the patch grid fits."""
    import warnings

    import numpy as np

    from mmretrieve.models import AudioFrontend

    a = get_preset(name).audio
    assert a.n_mels % a.patch == 0 and a.target_frames % a.patch == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mel = AudioFrontend(a)(np.zeros(a.sample_rate, np.float32))
    assert mel.shape == (1, a.n_mels, a.target_frames)


def test_presets_and_encoders_copy_and_pickle():
    import copy
    import pickle

    import torch

    from mmretrieve.models import create_encoder

    p = get_preset("tiny-random")
    assert copy.deepcopy(p) == p and pickle.loads(pickle.dumps(p)) == p
    e = create_encoder("tiny-random", device="cpu")
    f = copy.deepcopy(e)
    with torch.no_grad():
        assert torch.equal(e.encode_text(["a red square"]), f.encode_text(["a red square"]))


def test_any_open_clip_model_and_tag_is_a_preset():
    p = get_preset("open_clip:ViT-L-14/openai")
    assert p.name == "open_clip:ViT-L-14/openai"
    assert (p.clip.model, p.clip.pretrained, p.clip.quick_gelu) == ("ViT-L-14", "openai", True)
    assert p.image_size == 224 and p.video == get_preset("clip-vit-b32").video
    siglip = get_preset("open_clip:ViT-B-16-SigLIP/webli")
    assert siglip.mean == (0.5, 0.5, 0.5) and not siglip.clip.quick_gelu
    with pytest.raises(ValueError, match="no pretrained tag 'nope' for ViT-B-16; its tags: .*laion2b_s34b_b88k"):
        get_preset("open_clip:ViT-B-16/nope")
    with pytest.raises(ValueError, match="not an open_clip model name"):
        get_preset("open_clip:ViT-B-99/x")
    with pytest.raises(ValueError, match="open_clip:MODEL/TAG"):
        get_preset("open_clip:ViT-B-16")


def test_open_clip_preset_builds_its_architecture_and_refuses_missing_weights(monkeypatch):
    from mmretrieve.errors import WeightsUnavailableError
    from mmretrieve.models import create_encoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = get_preset("open_clip:ViT-B-32/laion2b_s34b_b79k")
    with pytest.raises(WeightsUnavailableError, match="open_clip:ViT-B-32/laion2b_s34b_b79k"):
        create_encoder(p, device="cpu")
    random = replace(p, clip=replace(p.clip, pretrained=None))
    enc = create_encoder(random, device="cpu")
    assert enc.dim == 512 and enc.clip.visual.image_size[0] == 224


def test_preset_record_is_kept_only_when_the_name_cannot_rebuild_it(tmp_path):
    assert all(preset_record(get_preset(n)) is None for n in list_presets())
    assert preset_record(get_preset("open_clip:ViT-B-32/openai")) is None
    data = json.loads((ROOT / "mmretrieve" / "presets" / "tiny-random.json").read_text())
    own = tmp_path / "own.json"
    own.write_text(json.dumps({**data, "name": "own", "seed": 3}))
    shadow = tmp_path / "shadow.json"  # a file that reuses a shipped name with other contents
    shadow.write_text(json.dumps({**data, "seed": 5}))
    for path in (own, shadow):
        preset = get_preset(str(path))
        record = preset_record(preset)
        assert record is not None and json.loads(json.dumps(record)) == record
        assert preset_from_dict(record) == preset
