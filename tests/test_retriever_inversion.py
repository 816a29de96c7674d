"""Composed queries by textual inversion through the Retriever and the search command (tiny random model)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import mmretrieve as mmr
from mmretrieve.errors import WeightsUnavailableError
from mmretrieve.models.inversion import TextualInversion, config_for

TINY = "tiny-random"


@pytest.fixture(scope="module")
def setup(media_folder, tmp_path_factory):
    root, files = media_folder
    tmp = tmp_path_factory.mktemp("inversion")
    index_path = str(tmp / "index")
    r = mmr.Retriever.create(TINY, path=index_path, num_workers=0)
    r.add(root, progress=False)
    r.save()
    torch.manual_seed(0)
    net = TextualInversion(config_for(r.encoder, hidden_dim=32)).eval()
    path = net.save(tmp / "inv.safetensors")
    raw = TextualInversion(config_for(r.encoder, hidden_dim=32, input="raw", input_dim=r.encoder.dim)).eval()
    raw_path = raw.save(tmp / "raw.safetensors")
    yield r, files, path, raw_path, index_path
    r.close()


def _expected(r, path, ref_vector, text, template=None):
    net = TextualInversion.load(path)
    with torch.no_grad():
        return net.compose(r.encoder, torch.from_numpy(ref_vector)[None], [text], template)[0].numpy()


def test_image_reference_composes_through_the_network(setup):
    r, files, path, _, _ = setup
    ref = files["image"][0]
    q = mmr.Composed(image=ref, text="that is red", method="inversion", inversion=path)
    v = r.embed(q)
    import pathlib

    want = _expected(r, path, r.embed(pathlib.Path(ref)), "that is red")
    np.testing.assert_allclose(v, want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(v, r.embed(q))  # deterministic
    arithmetic = r.embed(mmr.Composed(image=ref, text="that is red"))
    assert float(np.abs(v - arithmetic).max()) > 1e-3
    assert float(np.abs(v - r.embed(mmr.Composed(image=ref, text="that is red", method="inversion", inversion=path,
                                                 template="a picture of * with {text}"))).max()) > 1e-4
    hits = r.search(q, modality="image", k=3)
    assert len(hits) == 3 and all(h.modality.value == "image" for h in hits)


def test_video_reference_uses_the_pooled_clip_vector_and_finds_video_windows(setup):
    r, files, path, raw_path, _ = setup
    import pathlib

    clip = files["video"][0]
    q = mmr.Composed(video=clip, text="moving faster", method="inversion", inversion=path)
    np.testing.assert_allclose(r.embed(q), _expected(r, path, r.embed(pathlib.Path(clip)), "moving faster"),
                               rtol=0, atol=1e-6)
    hits = r.search(q, modality="video", k=10)
    assert {h.modality.value for h in hits} == {"video"} and len(hits) == 5  # 1 + 1 + 3 windows
    with pytest.raises(ValueError, match="composes image references only"):
        r.embed(mmr.Composed(video=clip, text="x", method="inversion", inversion=raw_path))


def test_raw_input_network_reads_the_image_towers_unnormalised_output(setup):
    r, files, _, raw_path, _ = setup
    from mmretrieve.media.image import load_image
    from mmretrieve.models.inversion import reference_features

    ref = files["image"][1]
    with torch.no_grad():
        raw = reference_features(r.encoder, r.encoder.preprocess_image(load_image(ref))[None], "raw")
        want = TextualInversion.load(raw_path).compose(r.encoder, raw, ["in the snow"])[0].numpy()
    got = r.embed(mmr.Composed(image=ref, text="in the snow", method="inversion", inversion=raw_path))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_no_shipped_network_for_the_preset_is_a_clear_error(setup):
    r, files, _, _, _ = setup
    with pytest.raises(WeightsUnavailableError, match="ships no inversion network"):
        r.embed(mmr.Composed(image=files["image"][0], text="x", method="inversion"))


def test_composed_arguments_are_checked():
    with pytest.raises(ValueError, match="method='fusion'"):
        mmr.Composed(image="a.jpg", text="x", method="fusion")
    with pytest.raises(ValueError, match="apply to method='inversion' only"):
        mmr.Composed(image="a.jpg", text="x", template="a photo of * , {text}")
    with pytest.raises(ValueError, match="one '\\*'"):
        mmr.Composed(image="a.jpg", text="x", method="inversion", template="a photo of {text}")
    with pytest.raises(ValueError, match="not a weighted sum"):
        mmr.Composed(image="a.jpg", text="x", method="inversion").as_arithmetic()


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "mmretrieve", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_search_command_method_inversion(setup):
    r, files, path, _, index_path = setup
    ref = files["image"][0]
    out = _cli("search", index_path, "that is red", "--file", ref, "--method", "inversion", "--inversion", path,
               "--modality", "image", "-k", "2", "--json")
    assert out.returncode == 0, out.stderr
    hits = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]  # JSON Lines
    want = r.search(mmr.Composed(image=ref, text="that is red", method="inversion", inversion=path),
                    modality="image", k=2)
    assert [h["path"] for h in hits] == [h.path for h in want]
    after = _cli("search", index_path, "--file", ref, "that is red", "--method", "inversion", "--inversion", path,
                 "--modality", "image", "-k", "2", "--json")  # the words after --file, as the README writes it
    assert after.returncode == 0, after.stderr
    assert after.stdout == out.stdout
    extra = _cli("search", index_path, "that is red", "--file", ref, "more words")
    assert extra.returncode == 2 and "unrecognized arguments: more words" in extra.stderr
    bad = _cli("search", index_path, "that is red", "--file", ref, "--method", "inversion", "--weight", "0.3")
    assert bad.returncode != 0 and "--weight applies to --method arithmetic only" in bad.stderr
    bad = _cli("search", index_path, "that is red", "--method", "inversion")
    assert bad.returncode != 0 and "needs both --file" in bad.stderr


def test_sample_preset_ships_its_network_loaded_without_unpickling_and_deterministic(tmp_path):
    from mmretrieve.data.synthetic import render_image
    from mmretrieve.media.write import write_image
    from mmretrieve.models.inversion import SHIPPED_INVERSION, has_shipped_inversion, shipped_inversion

    assert has_shipped_inversion("sample") and not has_shipped_inversion("tiny-random")
    assert SHIPPED_INVERSION["sample"].endswith(".safetensors")
    net = shipped_inversion("sample")
    assert (net.config.preset, net.config.tokens, net.config.template, net.config.compose, net.config.input) == (
        "sample", 3, "{text} a *", "prompt+text", "normalized")
    assert not net.training  # dropout off: the same query gives the same vector
    ref = str(tmp_path / "ref.png")
    write_image(ref, render_image({"shape": "triangle", "colour": "blue", "size": "large", "position": "left"}))
    r = mmr.Retriever.create("sample")
    try:
        q = mmr.Composed(image=ref, text="make it red", method="inversion")  # no inversion=: the shipped one
        a, b = r.embed(q), r.embed(q)
        np.testing.assert_array_equal(a, b)
        with torch.no_grad():
            want = shipped_inversion("sample").compose(r.encoder, torch.from_numpy(r.embed(mmr.Query.file(ref)))[None],
                                                       ["make it red"])[0].numpy()
        np.testing.assert_allclose(a, want, rtol=0, atol=1e-6)
    finally:
        r.close()
