import pytest

from mmretrieve.train import TrainConfig, config_from_dict, config_to_dict, list_recipes, load_recipe, override


def test_every_shipped_recipe_loads():
    names = list_recipes()
    for expected in ("msrvtt-meanp", "msrvtt-seqtransf", "clotho-audio", "coco-finetune", "synthetic-sample"):
        assert expected in names
    for name in names:
        cfg = load_recipe(name)
        assert isinstance(cfg, TrainConfig) and cfg.name == name
        assert config_from_dict(config_to_dict(cfg)) == cfg  # round trip


def test_clip4clip_settings():
    cfg = load_recipe("msrvtt-seqtransf")
    assert cfg.data.num_frames == 12 and cfg.optim.batch_size == 128 and cfg.optim.epochs == 5
    assert cfg.optim.lr_pretrained == pytest.approx(1e-7) and cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.model.video_head == "transformer"
    assert load_recipe("clotho-audio").lock.text is True


def test_unknown_keys_and_values_are_named():
    with pytest.raises(ValueError, match="optim.*unknown key.*lrr"):
        config_from_dict({"optim": {"lrr": 1}})
    with pytest.raises(ValueError, match="unknown section"):
        config_from_dict({"optimiser": {}})
    with pytest.raises(ValueError, match="run.amp"):
        config_from_dict({"run": {"amp": "fp8"}})
    with pytest.raises(ValueError, match="unknown recipe"):
        load_recipe("no-such-recipe")


def test_override_and_yaml_numbers(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("optim: {lr: 1e-4, lr_pretrained: 1e-7}\ndata: {tasks: [audio]}\n")
    cfg = load_recipe(str(path))
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.data.tasks == ("audio",)
    cfg2 = override(cfg, {"optim.batch_size": 8, "run.out": "x"})
    assert cfg2.optim.batch_size == 8 and cfg2.run.out == "x" and cfg.optim.batch_size == 32
    with pytest.raises(ValueError, match="SECTION.KEY"):
        override(cfg, {"lr": 1})


def test_manifest_rows_left_out_by_skip_missing_are_reported(tmp_path):
    import warnings

    import numpy as np

    from mmretrieve.media.write import write_image
    from mmretrieve.train.config import DataConfig
    from mmretrieve.train.data import load_pairs

    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        write_image(tmp_path / f"i{i}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        rows.append(f"i{i}.png,picture {i}")
    rows.append("gone.png,a missing picture")
    (tmp_path / "m.csv").write_text("path,caption\n" + "\n".join(rows) + "\n")
    data = DataConfig(kind="manifest", root=str(tmp_path / "m.csv"), tasks=("image",), skip_missing=True,
                      val_fraction=0.25)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, val = load_pairs(data)
    assert len(train["image"]) + len(val["image"]) == 4
    assert any("left out 1 unusable manifest row(s)" in str(w.message) and "gone.png" in str(w.message)
               for w in caught), [str(w.message) for w in caught]
