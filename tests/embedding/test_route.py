"""The one embedding route: indexing, evaluation, whole-file queries and training decode a file the same
way, hear every window of a long item, and pool windows by the documented rule."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

import mmretrieve as mmr
from mmretrieve.data.common import Sample
from mmretrieve.embedding import (Augment, Preparer, Sampling, Source, collate, embed_items, encode_windows,
                                  pool_windows, source_of_sample)
from mmretrieve.evaluation.evaluate import item_vectors
from mmretrieve.media.write import write_audio, write_video
from mmretrieve.modality import Modality
from mmretrieve.train.data import PairSet, TaskStream

TINY = "tiny-random"


def _recording(path, seconds=25.0, rate=16000):
    """A recording whose 10 s windows sound different: a new pitch every 5 s, plus noise."""
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 200.0 * (1 + np.floor(t / 5.0))
    x = 0.4 * np.sin(2 * np.pi * pitch * t) + 0.05 * rng.standard_normal(t.size)
    return write_audio(path, x.astype(np.float32), rate)


def _video(path, seconds=25, fps=2, size=32):
    rng = np.random.default_rng(3)
    n = int(seconds * fps)
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i] = rng.integers(0, 256, 3, dtype=np.uint8)  # the colour changes every frame
    return write_video(path, frames, fps)


@pytest.fixture(scope="module")
def long_media(tmp_path_factory):
    root = tmp_path_factory.mktemp("long-media")
    return {"audio": _recording(root / "long.wav"), "video": _video(root / "long.mp4")}


@pytest.fixture(scope="module")
def indexed_long(long_media):
    r = mmr.Retriever.create(TINY, num_workers=0)
    r.add(list(long_media.values()), progress=False)
    return r


def _window_vectors(r, path):
    hits = [h for h in r.search("anything", k=len(r)) if h.path == path]
    hits.sort(key=lambda h: h.start)
    return hits, r.index.vectors([h.id for h in hits])


@pytest.mark.parametrize("modality", ["audio", "video"])
def test_a_25_s_item_is_evaluated_as_the_pool_of_its_three_indexed_windows(indexed_long, long_media, modality):
    r = indexed_long
    path = long_media[modality]
    hits, windows = _window_vectors(r, path)
    assert [(h.start, h.end) for h in hits] == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    pooled = windows.mean(axis=0)
    pooled /= np.linalg.norm(pooled)
    sample = Sample(path, Modality(modality), ("a caption",), "long")
    evaluated = item_vectors(r.encoder, [sample])[0]
    np.testing.assert_allclose(evaluated, pooled, atol=1e-5)
    np.testing.assert_allclose(r.embed(pathlib.Path(path)), pooled, atol=1e-5)  # the whole-file query vector
    # every window counts: the first window alone is a different vector
    assert float(evaluated @ windows[0]) < 0.9999


def test_pool_windows_is_the_renormalised_mean_of_normalised_vectors():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((3, 8)).astype(np.float32) * np.array([[1.0], [5.0], [0.2]], np.float32)
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    expected = unit.mean(0) / np.linalg.norm(unit.mean(0))
    np.testing.assert_allclose(pool_windows(v), expected, atol=1e-6)
    np.testing.assert_allclose(pool_windows(torch.from_numpy(v)).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(pool_windows(unit[:1]), unit[0], atol=1e-6)  # one window: itself
    per_item = pool_windows(v, [0, 1, 1], 2)
    np.testing.assert_allclose(per_item[0], unit[0], atol=1e-6)
    both = unit[1] + unit[2]
    np.testing.assert_allclose(per_item[1], both / np.linalg.norm(both), atol=1e-6)
    with pytest.raises(ValueError, match="2 owners"):
        pool_windows(v, [0, 1], 2)


def test_encoder_encode_is_the_dispatch_of_every_modality():
    enc = mmr.create_encoder(TINY, device="cpu")
    rng = np.random.default_rng(1)
    pixels = torch.from_numpy(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    mels = torch.from_numpy(rng.standard_normal((2, 1, 32, 128)).astype(np.float32))
    frames = torch.from_numpy(rng.standard_normal((2, 3, 3, 32, 32)).astype(np.float32))
    mask = torch.tensor([[True, True, True], [True, True, False]])
    with torch.inference_mode():
        assert torch.equal(enc.encode("image", pixels), enc.encode_image(pixels))
        assert torch.equal(enc.encode(Modality.AUDIO, mels), enc.encode_audio(mels))
        assert torch.equal(enc.encode(Modality.VIDEO, (frames, mask)), enc.encode_video(frames, mask))
        assert torch.equal(enc.encode(Modality.TEXT, ["a", "b"]), enc.encode_text(["a", "b"]))
        with pytest.raises(ValueError):
            enc.encode("smell", pixels)


def test_training_hears_every_window_of_a_long_recording(long_media):
    enc = mmr.create_encoder(TINY, device="cpu")
    short = write_audio(long_media["audio"].replace("long.wav", "short.wav"),
                        np.zeros(16000, np.float32) + 0.1, 16000)
    pairs = PairSet(Modality.AUDIO, (Sample(long_media["audio"], Modality.AUDIO, ("long",), "long"),
                                     Sample(short, Modality.AUDIO, ("short",), "short")))
    stream = TaskStream(pairs, Preparer(enc, Sampling.from_preset(enc.preset)), batch_size=2, seed=0)
    batch = stream.batch(0)
    long_row = batch.indices.index(0)
    assert sorted(batch.owners) == sorted([long_row] * 3 + [1 - long_row])
    assert batch.media.shape[0] == 4  # 3 windows + 1
    # the trainer's item vector is the pool of the windows' vectors, as evaluation's
    with torch.no_grad():
        from mmretrieve.embedding import encode_batch

        items = pool_windows(encode_batch(enc, Modality.AUDIO, batch.media), batch.owners, 2)
    evaluated = item_vectors(enc, list(pairs.samples))
    np.testing.assert_allclose(items[long_row].numpy(), evaluated[0], atol=1e-5)


def test_augmentation_is_a_seeded_option_of_the_route_and_never_the_default(long_media):
    enc = mmr.create_encoder(TINY, device="cpu")
    sampling = Sampling.from_preset(enc.preset)
    plain = Preparer(enc, sampling)
    source = Source(Modality.AUDIO, long_media["audio"])
    a, b = plain.prepare(source), plain.prepare(source)
    assert len(a.tensors) == 3 and all(torch.equal(x, y) for x, y in zip(a.tensors, b.tensors))
    with pytest.raises(ValueError, match="draw"):
        plain.prepare(source, draw=("audio", 0, 0))
    aug = Preparer(enc, sampling, Augment(seed=5))
    with pytest.raises(ValueError, match="draw"):
        aug.prepare(source)
    crops = [aug.prepare(source, draw=("audio", step, 0)) for step in range(4)]
    assert all(len(c.tensors) == 1 for c in crops)
    assert all(c.windows[0][1] - c.windows[0][0] == pytest.approx(10.0) for c in crops)
    assert len({c.windows[0] for c in crops}) > 1  # different steps, different crops
    again = aug.prepare(source, draw=("audio", 2, 0))
    assert again.windows == crops[2].windows and torch.equal(again.tensors[0], crops[2].tensors[0])
    assert Preparer(enc, sampling, Augment(seed=6)).prepare(source, draw=("audio", 2, 0)).windows != crops[2].windows
    video = Source(Modality.VIDEO, long_media["video"])
    clips = [aug.prepare(video, draw=("video", step, 0)) for step in range(6)]
    assert all(len(c.tensors) == 1 for c in clips)
    assert len({c.windows[0] for c in clips} | {tuple(c.tensors[0].flatten()[:8].tolist()) for c in clips}) > 2


def test_augmented_training_stream_draws_per_step_and_is_reproducible(long_media):
    enc = mmr.create_encoder(TINY, device="cpu")
    pairs = PairSet(Modality.AUDIO, (Sample(long_media["audio"], Modality.AUDIO, ("long",), "long"),
                                     Sample(long_media["audio"], Modality.AUDIO, ("again",), "again")))
    make = lambda: TaskStream(pairs, Preparer(enc, Sampling.from_preset(enc.preset), Augment(seed=1)),  # noqa: E731
                              batch_size=2, seed=0)
    s1, s2 = make(), make()
    b0, b0_again, b1 = s1.batch(0), s2.batch(0), s1.batch(1)
    assert b0.media.shape[0] == 2 and b0.owners == (0, 1)  # one crop per item
    assert torch.equal(b0.media, b0_again.media)
    assert not torch.equal(b0.media, b1.media)


def test_embed_items_names_an_undecodable_item(tmp_path):
    enc = mmr.create_encoder(TINY, device="cpu")
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(mmr.MediaError, match="broken.wav"):
        embed_items(enc, [Source(Modality.AUDIO, str(bad))], sampling=Sampling.from_preset(enc.preset))


def test_worker_processes_give_the_same_whole_item_vectors(long_media):
    enc = mmr.create_encoder(TINY, device="cpu")
    sampling = Sampling.from_preset(enc.preset)
    sources = [source_of_sample(Sample(long_media["audio"], Modality.AUDIO, ("x",), "x"))] * 2
    serial = embed_items(enc, sources, sampling=sampling, num_workers=0)
    parallel = embed_items(enc, sources, sampling=sampling, num_workers=2)
    np.testing.assert_allclose(serial, parallel, atol=1e-6)


def test_collate_pads_video_windows_with_a_mask():
    a, b = torch.ones(3, 3, 4, 4), torch.ones(1, 3, 4, 4)
    frames, mask = collate(Modality.VIDEO, [a, b])
    assert frames.shape == (2, 3, 3, 4, 4) and mask.tolist() == [[True] * 3, [True, False, False]]
    enc = mmr.create_encoder(TINY, device="cpu")
    assert encode_windows(enc, Modality.IMAGE, []).shape == (0, enc.dim)
