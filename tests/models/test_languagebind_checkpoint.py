"""LanguageBind checkpoint loading: every key consumed or ignored by name, every shape checked."""
from __future__ import annotations

import json
import os

import pytest
import torch

from mmretrieve.errors import CheckpointMismatchError
from mmretrieve.models.languagebind import (IGNORED, account, compare_text_towers, load_tower, open_checkpoint,
                                            read_config)
from mmretrieve.models.languagebind.checkpoint import expected_shapes
from mmretrieve.testing.languagebind import published_config, write_checkpoint, write_header_only_checkpoint

# Tensors of the published ViT-L/14 towers: text (12 layers) + vision (24 layers) + projections.
_TEXT_TENSORS = 2 + 12 * 16 + 2 + 1           # embeddings, layers, final norm, projection
_VISION_TENSORS = 3 + 2 + 24 * 16 + 2 + 1      # embeddings, pre-norm, layers, post-norm, projection
_TEMPORAL_PER_LAYER = 1 + 8 + 4 + 4            # embedding, attention (4 x w+b), 2 norms (w+b), mlp (2 x w+b)


@pytest.mark.parametrize("kind, n_vision, pos", [("image", _VISION_TENSORS, 257), ("audio", _VISION_TENSORS, 593),
                                                 ("video", _VISION_TENSORS + 24 * _TEMPORAL_PER_LAYER, 257)])
def test_full_size_published_layout_is_accounted_key_by_key(tmp_path, kind, n_vision, pos):
    d = write_header_only_checkpoint(tmp_path / kind, kind)
    weights = os.path.join(d, "model.safetensors")
    assert os.path.getsize(weights) > 1_500_000_000  # the real size on paper
    acc = account(open_checkpoint(d, kind))
    assert acc.file == weights
    assert len(acc.consumed) == _TEXT_TENSORS + n_vision
    assert set(acc.ignored) == set(IGNORED)
    shapes = expected_shapes(read_config(os.path.join(d, "config.json")))
    assert shapes["vision_model.embeddings.position_embedding.weight"] == (pos, 1024)
    assert shapes["vision_model.embeddings.patch_embedding.weight"] == (1024, 3, 14, 14)
    assert shapes["visual_projection.weight"] == (768, 1024)
    assert shapes["text_projection.weight"] == (768, 768)
    assert shapes["text_model.embeddings.token_embedding.weight"] == (49408, 768)
    if kind == "video":
        assert shapes["vision_model.encoder.layers.23.temporal_embedding"] == (1, 8, 1024)


def test_shape_mismatch_names_file_key_and_both_shapes(tmp_path):
    key = "vision_model.embeddings.position_embedding.weight"
    d = write_header_only_checkpoint(tmp_path / "a", "audio", overrides={key: [257, 1024]})
    with pytest.raises(CheckpointMismatchError) as e:
        account(open_checkpoint(d, "audio"))
    msg = str(e.value)
    assert os.path.join(d, "model.safetensors") in msg and key in msg
    assert "[257, 1024]" in msg and "[593, 1024]" in msg


def test_missing_tensor_is_an_error_naming_it(tmp_path):
    key = "vision_model.encoder.layers.3.mlp.fc2.bias"
    d = write_header_only_checkpoint(tmp_path / "a", "image", drop=(key,))
    with pytest.raises(CheckpointMismatchError, match="1 tensor\\(s\\) missing.*layers.3.mlp.fc2.bias"):
        account(open_checkpoint(d, "image"))


def test_unknown_tensor_is_an_error_naming_it(tmp_path):
    d = write_header_only_checkpoint(tmp_path / "a", "image", add={"vision_model.extra_head.weight": [4, 4]})
    with pytest.raises(CheckpointMismatchError, match="not known to be ignorable.*vision_model.extra_head.weight"):
        account(open_checkpoint(d, "image"))


def test_narrow_checkpoint_loads_every_tensor_as_written(tmp_path):
    d = write_checkpoint(tmp_path / "v", "video", seed=3)
    ckpt = open_checkpoint(d, "video")
    tower, acc = load_tower(ckpt)
    own = tower.state_dict()
    assert sorted(own) == sorted(acc.consumed)
    for name, tensor in ckpt.tensors(list(acc.consumed)):
        assert torch.equal(own[name], tensor), name


def test_pytorch_bin_is_read_with_weights_only(tmp_path):
    d = write_checkpoint(tmp_path / "a", "audio", fmt="bin")
    tower, acc = load_tower(open_checkpoint(d, "audio"))
    assert acc.file.endswith("pytorch_model.bin")
    assert tower.input_size == (112, 1036)


class _Payload:
    """Not a tensor: a pickled object that weights_only loading must refuse."""


def test_pickled_objects_are_refused(tmp_path):
    d = write_checkpoint(tmp_path / "a", "image", fmt="bin")
    torch.save({"model": _Payload()}, os.path.join(d, "pytorch_model.bin"))
    with pytest.raises(CheckpointMismatchError, match="never unpickles"):
        account(open_checkpoint(d, "image"))


def test_text_towers_that_differ_are_named(tmp_path):
    a = open_checkpoint(write_checkpoint(tmp_path / "img", "image", seed=1), "image")
    same = open_checkpoint(write_checkpoint(tmp_path / "aud", "audio", seed=2), "audio")
    other = open_checkpoint(write_checkpoint(tmp_path / "vid", "video", seed=3, text_seed=99), "video")
    compare_text_towers(a, [same])  # same text seed: identical text tensors
    with pytest.raises(CheckpointMismatchError) as e:
        compare_text_towers(a, [same, other])
    msg = str(e.value)
    assert other.weights in msg and a.weights in msg
    assert "text_model.embeddings.token_embedding.weight" in msg


def test_config_of_another_tower_kind_is_refused(tmp_path):
    d = write_checkpoint(tmp_path / "a", "audio")
    with pytest.raises(ValueError, match="expected a LanguageBind video tower.*audio tower"):
        open_checkpoint(d, "video")


def test_lora_adapter_tensors_are_refused_with_the_alternative(tmp_path):
    key = "vision_model.encoder.base_model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    d = write_header_only_checkpoint(tmp_path / "a", "audio", add={key: [16, 1024]})
    with pytest.raises(CheckpointMismatchError, match="LoRA adapter tensors.*lora_A.*LanguageBind_Audio_FT"):
        account(open_checkpoint(d, "audio"))


def test_a_lora_rank_in_the_config_without_adapter_tensors_loads(tmp_path):
    d = write_checkpoint(tmp_path / "i", "image")
    cfg = json.loads((tmp_path / "i" / "config.json").read_text())
    cfg["vision_config"]["lora_r"] = 2  # the publisher's config default; the file decides
    (tmp_path / "i" / "config.json").write_text(json.dumps(cfg))
    tower, acc = load_tower(open_checkpoint(d, "image"))
    assert len(acc.consumed) == len(tower.state_dict())


def test_directory_without_weights_says_which_files_it_needs(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(published_config("image", narrow=True)))
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        open_checkpoint(tmp_path, "image")
