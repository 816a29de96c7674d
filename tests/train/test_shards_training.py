"""Training straight from webdataset tar shards (data.kind: shards): media read in place by offset,
decoded exactly as the same files on disk, bad members reported by shard and member, exact resume."""
import argparse
import csv
import io
import json
import os
import tarfile
import tempfile

import numpy as np
import pytest
import torch

from mmretrieve.commands import train as train_cmd
from mmretrieve.data.common import DatasetError, Sample
from mmretrieve.data.shards import index_shards
from mmretrieve.data.synthetic import make_corpus
from mmretrieve.errors import MediaError
from mmretrieve.media.write import write_audio, write_image, write_video
from mmretrieve.modality import Modality, modality_of_path
from mmretrieve.train import DataConfig, ModelConfig, OptimConfig, RunConfig, Trainer, TrainConfig, train
from mmretrieve.train.config import load_recipe, override
from mmretrieve.embedding import Preparer, Sampling, source_of_sample
from mmretrieve.train.data import load_pairs


def _add(tar_path, members) -> str:
    """A tar file holding (name, bytes) members in order."""
    with tarfile.open(tar_path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(tar_path)


def _pack(shard, items) -> str:
    """A webdataset shard: ``<key>.<ext>`` + ``<key>.txt`` (one caption per line) per (key, path, captions)."""
    members = []
    for key, path, captions in items:
        with open(path, "rb") as f:
            members.append((key + os.path.splitext(path)[1], f.read()))
        members.append((key + ".txt", "\n".join(captions).encode()))
    return _add(shard, members)


@pytest.fixture(scope="module")
def decoder():
    """The embedding route's preparation of one sample (every test item is a single window)."""
    from mmretrieve.models import create_encoder

    encoder = create_encoder("tiny-random", device="cpu")
    preparer = Preparer(encoder, Sampling.from_preset(encoder.preset))

    def decode(sample):
        (window,) = preparer.prepare(source_of_sample(sample)).tensors
        return window

    return decode


# ------------------------------------------------------------------------------ identical preprocessing
def test_shard_members_decode_to_the_same_tensors_as_the_files(tmp_path, decoder, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where a video member is copied
    rng = np.random.default_rng(0)
    folder = tmp_path / "media"
    folder.mkdir()
    t = np.arange(16000) / 16000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 660 * t)], 1).astype(np.float32) * 0.4
    files = [
        write_image(folder / "a.png", rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)),
        write_image(folder / "b.jpg", rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)),
        write_video(folder / "c.mp4", rng.integers(0, 256, (10, 32, 48, 3), dtype=np.uint8), 8),
        write_video(folder / "d.webm", rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), 6),
        write_audio(folder / "e.wav", stereo, 22050),  # resampled to the preset's 16 kHz
        write_audio(folder / "f.flac", stereo[:, 0], 16000),
        write_audio(folder / "g.mp3", stereo, 16000),
    ]
    shard = _pack(tmp_path / "media-0.tar", [(f"{i:06d}", p, [f"caption {i}"]) for i, p in enumerate(files)])
    ds = index_shards(shard)
    assert [s.member for s in ds] == [f"{i:06d}{os.path.splitext(p)[1]}" for i, p in enumerate(files)]
    for s, path in zip(ds, files):
        on_disk = decoder(Sample(path, modality_of_path(path), s.captions, s.item_id))
        from_shard = decoder(s)
        assert from_shard.dtype == on_disk.dtype and from_shard.shape == on_disk.shape, s.path
        assert torch.equal(from_shard, on_disk), s.path
    assert {s.modality for s in ds} == {Modality.IMAGE, Modality.VIDEO, Modality.AUDIO}
    assert os.listdir(tmp_path / "tmp") == []  # each video's temporary copy is deleted after decoding


def test_corrupt_members_name_shard_and_member(tmp_path, decoder):
    shard = _add(tmp_path / "bad-0.tar", [
        ("x.png", b"\x89PNG\r\n\x1a\n but not really"), ("x.txt", b"a broken image"),
        ("y.wav", b"RIFF\x10\x00\x00\x00WAVEfmt garbage"), ("y.txt", b"a broken sound"),
        ("z.mp4", b"\x00\x00\x00\x18ftypmp42 not a video"), ("z.txt", b"a broken clip"),
    ])
    for s in index_shards(shard):
        with pytest.raises(MediaError) as e:
            decoder(s)
        assert str(e.value).startswith(f"{shard}#{s.member}: "), str(e.value)
        assert "mmr-member-" not in str(e.value)  # never the temporary file's name
        # the same reason as for the same bytes in a file
        path = tmp_path / s.member
        path.write_bytes(s.read_bytes())
        with pytest.raises(MediaError) as on_disk:
            decoder(Sample(str(path), s.modality, s.captions, s.item_id))
        assert type(on_disk.value) is type(e.value)
        assert on_disk.value.reason.replace(str(path), s.path) == e.value.reason


# ------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def shard_corpus(tmp_path_factory):
    """12 images and 12 sounds as files + manifest, and the same items in 2 shards (alternating)."""
    root = tmp_path_factory.mktemp("shard-corpus")
    corpus = make_corpus(root / "files", n_images=12, n_videos=0, n_audio=12, seed=5, image_size=32,
                         audio_seconds=1.0)
    items = list(corpus.items)
    parts = [items[0::2], items[1::2]]
    for k, part in enumerate(parts):
        _pack(root / f"train-{k}.tar", [(f"{it.modality.value}_{i:04d}", it.path, it.captions)
                                        for i, it in enumerate(part)])
    with open(root / "manifest.jsonl", "w") as f:  # the same items in shard order
        for it in parts[0] + parts[1]:
            f.write(json.dumps({"path": it.path, "captions": list(it.captions)}) + "\n")
    recipe = root / "shards-test.yaml"
    recipe.write_text("model: {preset: tiny-random}\n"
                      "data: {tasks: [image, audio], val_fraction: 0.25}\n"
                      "optim: {lr: 2.0e-3, warmup_steps: 1, max_steps: 4, batch_size: 4}\n"
                      "run: {seed: 1, log_every: 1}\n")
    return root


def _cli(root, out):
    p = argparse.ArgumentParser()
    train_cmd.register(p.add_subparsers(dest="command"))
    return p.parse_args(["train", "--recipe", str(root / "shards-test.yaml"), "--out", str(out), "--no-progress",
                         "--set", "data.kind=shards", "--set", f"data.root={root}/train-{{0..1}}.tar"])


def test_train_from_shards_resumes_exactly_and_matches_the_files(shard_corpus, tmp_path):
    root = shard_corpus
    # the command of the docs: mmretrieve train --recipe R --set data.kind=shards --set data.root='...{0..1}.tar'
    args = _cli(root, tmp_path / "full")
    assert args.run(args) == 0
    with open(tmp_path / "full" / "log.csv") as f:
        full = {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}
    assert sorted(full) == [1, 2, 3, 4]

    config = override(load_recipe(args.recipe), train_cmd._overrides(_cli(root, tmp_path / "killed")))
    assert config.data.kind == "shards" and config.data.root == f"{root}/train-{{0..1}}.tar"
    stopped = Trainer(config)
    assert {t: len(p) for t, p in stopped.train_pairs.items()} == {"image": 9, "audio": 9}
    assert {t: len(p) for t, p in stopped.val_pairs.items()} == {"image": 3, "audio": 3}
    assert all(s.path.startswith(str(root)) and "#" in s.path for p in stopped.train_pairs.values() for s in p.samples)
    stopped.fit(resume=False, stop_after=2)
    del stopped  # only the checkpoint survives
    res = Trainer(config).fit(resume=True)
    assert res.history[0]["step"] == 3 and res.step == 4
    for row in res.history:
        assert row["loss"] == pytest.approx(full[row["step"]], rel=1e-6, abs=1e-7), row["step"]
    assert set(res.val) == {"image", "audio"}  # held-out items decoded from the shards too

    # the same items from the folder (manifest in shard order): the same split, batches and losses
    files = train(TrainConfig(
        model=ModelConfig(preset="tiny-random"),
        data=DataConfig(kind="manifest", root=str(root / "manifest.jsonl"), tasks=("image", "audio"), val_fraction=0.25),
        optim=OptimConfig(lr=2e-3, warmup_steps=1, max_steps=4, batch_size=4),
        run=RunConfig(out=str(tmp_path / "files"), progress=False, seed=1, log_every=1)), resume=False)
    for row in files.history:
        assert row["loss"] == pytest.approx(full[row["step"]], rel=1e-6, abs=1e-7), row["step"]


def _data(**kw):
    return DataConfig(kind="shards", tasks=("image", "audio"), **kw)


def test_validation_shards_and_bad_samples(shard_corpus, tmp_path):
    root = shard_corpus
    tr, va = load_pairs(_data(root=str(root / "train-0.tar"), val_root=str(root / "train-1.tar")))
    assert {t: len(p) for t, p in tr.items()} == {"image": 6, "audio": 6}
    assert {t: len(p) for t, p in va.items()} == {"image": 6, "audio": 6}
    assert all(s.shard.endswith("train-1.tar") for p in va.values() for s in p.samples)
    with pytest.raises(ValueError, match="also in data.root"):
        load_pairs(_data(root=str(root / "train-{0..1}.tar"), val_root=str(root / "train-1.tar")))
    with pytest.raises(ValueError, match="val_root.*only used with data.kind=shards"):
        TrainConfig(data=DataConfig(kind="manifest", root="m.jsonl", val_root="x.tar"))
    with pytest.raises(ValueError, match="data.root: a pattern of tar shards is required"):
        load_pairs(_data())

    # a sample without caption and one with an unknown extension: an error naming them, or skipped and reported
    image = os.path.join(root, "files", "images", "image_0000.png")
    _add(tmp_path / "extra.tar", [("n.png", open(image, "rb").read()),
                                  ("u.bin", b"?"), ("u.txt", b"what is this")])
    pattern = [str(root / "train-0.tar"), str(tmp_path / "extra.tar")]
    with pytest.raises(DatasetError) as e:
        load_pairs(_data(root=pattern))
    assert "extra.tar#n: no caption" in str(e.value) and "extra.tar#u: no image, video or audio member" in str(e.value)
    with pytest.warns(UserWarning, match=r"left out 2 unusable shard sample\(s\).*extra.tar#n: no caption"):
        tr, _ = load_pairs(_data(root=pattern, skip_missing=True, val_fraction=0.0))
    assert {t: len(p) for t, p in tr.items()} == {"image": 6, "audio": 6}

    # corrupt media bytes surface when training decodes them, naming the shard and the member
    _add(tmp_path / "corrupt.tar", [("c.png", b"\x89PNG\r\n\x1a\n broken"), ("c.txt", b"a broken image")])
    config = TrainConfig(model=ModelConfig(preset="tiny-random"),
                         data=_data(root=[str(root / "train-0.tar"), str(tmp_path / "corrupt.tar")], val_fraction=0.0),
                         optim=OptimConfig(max_steps=1, batch_size=4), run=RunConfig(progress=False))
    with pytest.raises(MediaError, match=r"corrupt.tar#c.png: "):
        Trainer(config).fit(resume=False)
