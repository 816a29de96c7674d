"""Textual inversion: the pseudo-token text path, the mapping network, its files and Pic2Word's checkpoint."""
from __future__ import annotations

import os
import types

import numpy as np
import pytest
import torch

from mmretrieve.errors import WeightsUnavailableError
from mmretrieve.models import create_encoder
from mmretrieve.models.inversion import (PIC2WORD_TEMPLATE, PIC2WORD_VIT_L14, InversionConfig,
                                         InversionUnsupportedError, TextualInversion, config_for,
                                         encode_text_with_pseudo_tokens, load_inversion, load_pic2word,
                                         shipped_inversion, supports_inversion, token_width)


@pytest.fixture(scope="module")
def enc():
    return create_encoder("tiny-random", device="cpu")


def _marker_embedding(enc) -> torch.Tensor:
    marker = int(enc.tokenize(["*"])[0][1])
    return enc.clip.token_embedding.weight[marker].detach()


def test_marker_own_embedding_reproduces_encode_text_exactly(enc):
    prompts = ["a photo of * , that is red", "* on the left", "a * and a circle"]
    pseudo = _marker_embedding(enc).expand(3, 1, -1)
    with torch.no_grad():
        got = encode_text_with_pseudo_tokens(enc, prompts, pseudo)
        want = enc.encode_text(prompts)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_pseudo_tokens_change_only_their_own_prompt(enc):
    pseudo = _marker_embedding(enc).expand(2, 1, -1).clone()
    pseudo[1] += torch.randn_like(pseudo[1])
    with torch.no_grad():
        got = encode_text_with_pseudo_tokens(enc, ["a photo of *"] * 2, pseudo)
        want = enc.encode_text(["a photo of *"])[0]
    torch.testing.assert_close(got[0], want, rtol=0, atol=0)
    assert float((got[1] - want).abs().max()) > 1e-3
    assert torch.allclose(got.norm(dim=-1), torch.ones(2))


def test_prompt_without_enough_markers_is_an_error(enc):
    with pytest.raises(ValueError, match="needs 2 marker token"):
        encode_text_with_pseudo_tokens(enc, ["a photo of *"], torch.zeros(1, 2, token_width(enc)))
    with pytest.raises(ValueError, match=r"expected \(1, n, 64\)"):
        encode_text_with_pseudo_tokens(enc, ["a photo of *"], torch.zeros(1, 1, 7))


def test_compose_is_deterministic_normalised_and_uses_the_template(enc):
    torch.manual_seed(0)
    net = TextualInversion(config_for(enc, tokens=2)).eval()
    refs = torch.nn.functional.normalize(torch.randn(2, enc.dim), dim=-1)
    assert net.prompts(["that is red"]) == ["a photo of * * , that is red"]
    with torch.no_grad():
        a = net.compose(enc, refs, ["that is red", "bigger"])
        b = net.compose(enc, refs, ["that is red", "bigger"])
        c = net.compose(enc, refs, ["that is red", "bigger"], template="* like {text}")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == (2, enc.dim) and torch.allclose(a.norm(dim=-1), torch.ones(2))
    assert float((a - c).abs().max()) > 1e-4


@pytest.mark.parametrize("template", ["a photo of {text}", "* and * , {text}", "a photo of *", "{text} * {text}"])
def test_bad_templates_are_refused(template):
    with pytest.raises(ValueError, match="template"):
        InversionConfig(input_dim=4, token_dim=4, template=template)


def test_marker_after_the_text_fills_the_pseudo_tokens_there(enc):
    torch.manual_seed(0)
    net = TextualInversion(config_for(enc, tokens=2, template="{text} a *")).eval()
    assert net.prompts(["make it red"]) == ["make it red a * *"]
    refs = torch.nn.functional.normalize(torch.randn(1, enc.dim), dim=-1)
    with torch.no_grad():
        got = net.compose(enc, refs, ["make it red"])
        pseudo = net.pseudo_tokens(refs)
        want = encode_text_with_pseudo_tokens(enc, ["make it red a * *"], pseudo)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="contains the marker '\\*', which template '\\{text\\} a \\*' places after"):
        net.prompts(["5* hotel"])
    assert net.prompts(["5* hotel"], template="a * , {text}") == ["a * * , 5* hotel"]  # marker first: text kept


def test_prompt_plus_text_adds_the_modification_vector(enc):
    torch.manual_seed(0)
    net = TextualInversion(config_for(enc, template="{text} a *", compose="prompt+text")).eval()
    refs = torch.nn.functional.normalize(torch.randn(2, enc.dim), dim=-1)
    texts = ["make it red", " make it a circle "]
    with torch.no_grad():
        got = net.compose(enc, refs, texts)
        prompt = net.with_query(compose="prompt").compose(enc, refs, texts)
        want = torch.nn.functional.normalize(prompt + enc.encode_text(["make it red", "make it a circle"]), dim=-1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert float((got - prompt).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="InversionConfig.compose='sum': choose one of prompt, prompt\\+text"):
        config_for(enc, compose="sum")


def test_with_query_shares_the_weights_and_changes_only_the_query(enc):
    net = TextualInversion(config_for(enc, hidden_dim=8)).eval()
    other = net.with_query(template="{text} a *", compose="prompt+text")
    assert other.mapper is net.mapper and not other.training and other.source == net.source
    assert (other.config.template, other.config.compose) == ("{text} a *", "prompt+text")
    assert net.config.template == PIC2WORD_TEMPLATE and net.config.compose == "prompt"


def test_save_load_roundtrip_and_checks(enc, tmp_path):
    torch.manual_seed(1)
    net = TextualInversion(config_for(enc, hidden_dim=16, template="a picture of * , {text}")).eval()
    path = net.save(tmp_path / "inv.safetensors")
    back = TextualInversion.load(path)
    assert back.config == net.config and back.source == path
    for k, v in net.mapper.state_dict().items():
        torch.testing.assert_close(back.mapper.state_dict()[k], v, rtol=0, atol=0)
    assert load_inversion(path).config == net.config
    other = create_encoder("sample", device="cpu")
    with pytest.raises(InversionUnsupportedError, match="64-wide tokens but preset 'sample' has a 96-wide"):
        back.check_encoder(other)
    from mmretrieve.models.weights import save_safetensors

    save_safetensors(tmp_path / "plain.safetensors", net.mapper.state_dict(), {"format": "something-else"})
    with pytest.raises(ValueError, match="not an mmretrieve inversion network"):
        TextualInversion.load(tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="inversion network is a .safetensors file"):
        load_inversion(tmp_path / "inv.onnx")


def test_unsupported_text_tower_is_named(enc):
    fake = types.SimpleNamespace(clip=torch.nn.Linear(2, 2), preset=types.SimpleNamespace(name="hf-text"))
    assert not supports_inversion(fake)
    with pytest.raises(InversionUnsupportedError, match="preset 'hf-text'.*open_clip CLIP text tower"):
        token_width(fake)


def test_preset_without_shipped_network_says_how_to_get_one():
    with pytest.raises(WeightsUnavailableError, match="mmretrieve train --recipe pic2word"):
        shipped_inversion("tiny-random")


# ------------------------------------------------------------------ Pic2Word's released checkpoint
def _pic2word_checkpoint(shapes_override=None, prefix="module.") -> dict:
    """A randomly initialised checkpoint in the layout of Pic2Word's pic2word_model.pt (ViT-L/14):
    the training script's dict with the DDP-wrapped CLIP and IM2TEXT state dicts."""
    g = torch.Generator().manual_seed(0)
    shapes = {"layers.0.0.weight": (512, 768), "layers.0.0.bias": (512,), "layers.1.0.weight": (512, 512),
              "layers.1.0.bias": (512,), "fc_out.weight": (768, 512), "fc_out.bias": (768,)}
    shapes.update(shapes_override or {})
    img2text = {prefix + k: torch.randn(s, generator=g) for k, s in shapes.items()}
    clip = {"module.visual.proj": torch.randn(1024, 768, generator=g), "module.positional_embedding": torch.randn(77, 768, generator=g)}
    return {"epoch": 2, "name": "pic2word", "state_dict": clip, "state_dict_img2text": img2text,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}


def test_pic2word_checkpoint_loads_every_key_checked(tmp_path):
    ckpt = _pic2word_checkpoint()
    path = tmp_path / "pic2word_model.pt"
    torch.save(ckpt, path)
    net = load_pic2word(path)
    assert net.config == PIC2WORD_VIT_L14 and net.config.input == "raw" and net.config.template == PIC2WORD_TEMPLATE
    for k, v in net.mapper.state_dict().items():
        torch.testing.assert_close(v, ckpt["state_dict_img2text"]["module." + k], rtol=0, atol=0)
    assert load_inversion(path).config == PIC2WORD_VIT_L14
    # the network is IM2TEXT: Linear-Dropout-ReLU twice, then fc_out, one token of 768
    x = torch.randn(3, 768)
    sd = ckpt["state_dict_img2text"]
    h = torch.relu(x @ sd["module.layers.0.0.weight"].T + sd["module.layers.0.0.bias"])
    h = torch.relu(h @ sd["module.layers.1.0.weight"].T + sd["module.layers.1.0.bias"])
    want = h @ sd["module.fc_out.weight"].T + sd["module.fc_out.bias"]
    with torch.no_grad():
        torch.testing.assert_close(net.pseudo_tokens(x)[:, 0], want, rtol=1e-5, atol=1e-4)


def test_pic2word_bare_state_dict_without_prefix_loads(tmp_path):
    sd = {k[len("module."):]: v for k, v in _pic2word_checkpoint()["state_dict_img2text"].items()}
    torch.save(sd, tmp_path / "bare.pt")
    assert load_pic2word(tmp_path / "bare.pt").config.input_dim == 768


def test_pic2word_shape_mismatch_names_file_key_and_both_shapes(tmp_path):
    torch.save(_pic2word_checkpoint({"fc_out.weight": (512, 512), "fc_out.bias": (512,)}), tmp_path / "b.pt")
    with pytest.raises(ValueError) as e:
        load_pic2word(tmp_path / "b.pt")
    msg = str(e.value)
    assert str(tmp_path / "b.pt") in msg and "fc_out" in msg and "(512, 512)" in msg and "(768, 512)" in msg


def test_pic2word_unknown_or_missing_keys_are_errors(tmp_path):
    ckpt = _pic2word_checkpoint()
    ckpt["state_dict_img2text"]["module.extra.weight"] = torch.zeros(2)
    torch.save(ckpt, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"unexpected \['extra.weight'\]"):
        load_pic2word(tmp_path / "extra.pt")
    ckpt = _pic2word_checkpoint()
    del ckpt["state_dict_img2text"]["module.fc_out.bias"]
    torch.save(ckpt, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing \['fc_out.bias'\]"):
        load_pic2word(tmp_path / "missing.pt")
    ckpt = _pic2word_checkpoint()
    ckpt["scheduler"] = {"last_epoch": 3}
    torch.save(ckpt, tmp_path / "top.pt")
    with pytest.raises(ValueError, match=r"unknown top-level entries \['scheduler'\]"):
        load_pic2word(tmp_path / "top.pt")
    sd = dict(_pic2word_checkpoint()["state_dict_img2text"])
    sd["fc_out.bias"] = sd.pop("module.fc_out.bias")
    torch.save(sd, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="some keys start with 'module.'"):
        load_pic2word(tmp_path / "mixed.pt")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo unpickled",))


def test_pic2word_file_with_code_is_refused_not_unpickled(tmp_path):
    torch.save({"state_dict_img2text": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt"):
        load_pic2word(tmp_path / "evil.pt")


def test_raw_input_network_reads_unnormalised_image_features(enc):
    from mmretrieve.models.inversion import reference_features

    pixels = torch.stack([enc.preprocess_image(np.full((40, 40, 3), v, np.uint8)) for v in (30, 200)])
    with torch.no_grad():
        raw = reference_features(enc, pixels, "raw")
        norm = reference_features(enc, pixels, "normalized")
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), norm, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2))
