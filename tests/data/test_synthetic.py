"""The synthetic corpus: determinism, coverage, decodability, captions vs ground truth, manifest, splits."""
from __future__ import annotations

import json
import os
import time

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmretrieve.data.synthetic import (
    VOCABULARY,
    SyntheticCorpus,
    caption_matches,
    caption_queries,
    ground_truth,
    load_corpus,
    make_corpus,
    render_audio,
    render_image,
    render_video,
    split_corpus,
)
from mmretrieve.modality import Modality

SMALL = dict(n_images=12, n_videos=6, n_audio=6, image_size=32, video_size=32, video_seconds=1.0,
             audio_seconds=0.5, sample_rate=8000)


def _bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _frames(path: str) -> np.ndarray:
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SyntheticCorpus:
    return make_corpus(tmp_path_factory.mktemp("syn"), n_images=24, n_videos=12, n_audio=12, seed=3)


def test_counts_paths_and_modalities(corpus):
    assert len(corpus.of(Modality.IMAGE)) == 24
    assert len(corpus.of("video")) == 12
    assert len(corpus.of("audio")) == 12
    assert len(corpus.items) == 48
    assert len({it.path for it in corpus.items}) == 48
    for it in corpus.items:
        assert os.path.isabs(it.path) and it.path.startswith(corpus.root) and os.path.getsize(it.path) > 0
        assert set(it.attributes) == set(VOCABULARY[it.modality.value])
        assert 3 <= len(it.captions) <= 5 and len(it.mentions) == len(it.captions)


def test_every_attribute_value_appears(corpus):
    for modality, vocab in VOCABULARY.items():
        items = corpus.of(modality)
        for key, values in vocab.items():
            assert {it.attributes[key] for it in items} == set(values), (modality, key)


def test_combinations_distinct_while_possible(corpus):
    for modality in ("image", "video", "audio"):
        combos = [tuple(sorted(it.attributes.items())) for it in corpus.of(modality)]
        assert len(set(combos)) == len(combos), modality


def test_value_counts_balanced(tmp_path):
    c = make_corpus(tmp_path, **{**SMALL, "n_images": 60, "n_videos": 0, "n_audio": 0})
    for key, values in VOCABULARY["image"].items():
        counts = [sum(it.attributes[key] == v for it in c.items) for v in values]
        assert max(counts) - min(counts) <= 1, (key, counts)


def test_captions_only_mention_true_attributes(corpus):
    for it in corpus.items:
        assert caption_matches(it.mentions[0], it.attributes)
        assert dict(it.mentions[0]) == dict(it.attributes), "first caption mentions everything"
        for caption, mention in zip(it.captions, it.mentions):
            assert mention and caption_matches(mention, it.attributes)
            words = caption.split()
            for key, values in VOCABULARY[it.modality.value].items():
                # every value named in the caption is the item's own; other values of that attribute are absent
                for v in values:
                    if v != it.attributes[key] and key != "timbre" and not (key == "shape" and v == "square"
                                                                            and it.modality is Modality.AUDIO):
                        assert v not in words, (caption, key, v)
            for key, v in mention.items():
                if key == "timbre":
                    assert v in words or {"sine": "pure", "square": "buzzy", "sawtooth": "bright"}[v] in words
                elif key == "direction":
                    assert v in words or {"up": "upwards", "down": "downwards"}.get(v) in words
                else:
                    assert v in words, (caption, key, v)
            assert caption == caption.strip() and "  " not in caption and " a o" not in caption


def test_caption_queries_relevance(corpus):
    images = corpus.of("image")
    queries = caption_queries(images)
    assert len(queries) == sum(len(it.captions) for it in images)
    for q in queries:
        assert q.source in q.relevant
        expect = tuple(j for j, it in enumerate(images) if caption_matches(q.mentions, it.attributes))
        assert q.relevant == expect
    complete = caption_queries(images, complete_only=True)
    assert complete and all(q.relevant == (q.source,) for q in complete)  # combinations are distinct here
    # A partial caption ("a red circle") matches several items when several share those values.
    assert any(len(q.relevant) > 1 for q in queries)


def test_ground_truth_lists_attributes(corpus):
    gt = ground_truth(corpus)
    assert [g["index"] for g in gt] == list(range(len(corpus.items)))
    for g, it in zip(gt, corpus.items):
        assert g["path"] == it.path and g["modality"] == it.modality.value
        assert g["attributes"] == dict(it.attributes) and g["captions"] == list(it.captions)
    json.dumps(gt)  # plain data


def test_files_decode(corpus):
    for it in corpus.of("image"):
        with Image.open(it.path) as im:
            assert im.mode == "RGB" and im.size == (64, 64)
            arr = np.asarray(im)
        assert (arr != arr[0, 0]).any(axis=-1).sum() > 30  # a visible shape on a plain background
    for it in corpus.of("video")[:4]:
        frames = _frames(it.path)
        assert frames.shape == (16, 64, 64, 3)
    for it in corpus.of("audio"):
        data, sr = sf.read(it.path, dtype="float32")
        assert sr == 16000 and data.shape == (32000,)
        assert np.isfinite(data).all() and 0.2 < np.abs(data).max() <= 1.0


def test_same_seed_same_bytes_and_captions(tmp_path):
    a = make_corpus(tmp_path / "a", seed=7, **SMALL)
    b = make_corpus(tmp_path / "b", seed=7, **SMALL)
    assert [it.captions for it in a.items] == [it.captions for it in b.items]
    assert [dict(it.attributes) for it in a.items] == [dict(it.attributes) for it in b.items]
    for x, y in zip(a.items, b.items):
        assert os.path.relpath(x.path, a.root) == os.path.relpath(y.path, b.root)
        if x.modality is Modality.VIDEO:
            assert np.array_equal(_frames(x.path), _frames(y.path))
        else:
            assert _bytes(x.path) == _bytes(y.path)


def test_different_seed_differs(tmp_path):
    a = make_corpus(tmp_path / "a", seed=1, **SMALL)
    b = make_corpus(tmp_path / "b", seed=2, **SMALL)
    assert [it.captions for it in a.items] != [it.captions for it in b.items]
    for m in ("image", "audio"):
        assert all(_bytes(x.path) != _bytes(y.path) for x, y in zip(a.of(m), b.of(m))), m
    assert any(not np.array_equal(_frames(x.path), _frames(y.path)) for x, y in zip(a.of("video"), b.of("video")))


def test_renderers_are_salient():
    red = render_image({"shape": "circle", "colour": "red", "size": "large", "position": "left"}, 64)
    mask = (red[..., 0] > 150) & (red[..., 1] < 80)
    ys, xs = np.nonzero(mask)
    assert mask.sum() > 400 and xs.mean() < 26 and abs(ys.mean() - 32) < 4
    small = render_image({"shape": "circle", "colour": "red", "size": "small", "position": "left"}, 64)
    assert ((small[..., 0] > 150) & (small[..., 1] < 80)).sum() < mask.sum() / 2
    # Video: the shape's centre crosses most of the frame in the named direction.
    for direction, axis, sign in (("right", 1, 1), ("left", 1, -1), ("down", 0, 1), ("up", 0, -1)):
        v = render_video({"shape": "square", "colour": "blue", "direction": direction}, 64, 16)
        full = (v[..., 2] > 200) & (v[..., 0] < 60)  # the opaque shape, not its faint trail
        centres = [np.nonzero(f)[axis].mean() for f in full]
        assert sign * (centres[-1] - centres[0]) > 0.6 * 64, direction
    # Audio: the dominant frequency follows the pitch; pulsing has silent gaps; timbres differ in harmonics.
    sr = 16000
    for pitch, hz in (("low", 220), ("medium", 440), ("high", 880)):
        x = render_audio({"pitch": pitch, "rhythm": "steady", "timbre": "sine"}, 1.0, sr)
        assert abs(np.argmax(np.abs(np.fft.rfft(x))) - hz) <= 2
    steady = render_audio({"pitch": "medium", "rhythm": "steady", "timbre": "square"}, 1.0, sr)
    pulsing = render_audio({"pitch": "medium", "rhythm": "pulsing", "timbre": "square"}, 1.0, sr)
    rms = lambda x: np.sqrt(np.mean(x[: len(x) // 400 * 400].reshape(-1, 400) ** 2, axis=1))  # noqa: E731
    assert rms(steady)[2:-2].min() > 0.1 and (rms(pulsing) < 0.01).sum() >= 8
    spec = {t: np.abs(np.fft.rfft(render_audio({"pitch": "low", "rhythm": "steady", "timbre": t}, 1.0, sr)))
            for t in ("sine", "square", "sawtooth")}
    h2 = {t: s[440] / s[220] for t, s in spec.items()}
    h3 = {t: s[660] / s[220] for t, s in spec.items()}
    assert h3["sine"] < 0.01 and h3["square"] > 0.2 and h2["square"] < 0.01 and h2["sawtooth"] > 0.3


def test_manifest_round_trip(corpus, tmp_path):
    path = corpus.write_manifest()
    assert path == os.path.join(corpus.root, "manifest.jsonl")
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert len(rows) == len(corpus.items)
    assert set(rows[0]) == {"path", "modality", "captions"}
    assert all(not os.path.isabs(r["path"]) for r in rows)
    plain = load_corpus(path)
    assert [it.path for it in plain.items] == [it.path for it in corpus.items]
    assert [it.captions for it in plain.items] == [it.captions for it in corpus.items]
    # With ground truth, written elsewhere: paths relative to the manifest still resolve.
    other = corpus.write_manifest(tmp_path / "sub" / "gt.jsonl", ground_truth=True)
    back = load_corpus(other)
    assert [it.path for it in back.items] == [it.path for it in corpus.items]
    assert [it.modality for it in back.items] == [it.modality for it in corpus.items]
    assert [dict(it.attributes) for it in back.items] == [dict(it.attributes) for it in corpus.items]
    assert [[dict(m) for m in it.mentions] for it in back.items] == [[dict(m) for m in it.mentions] for it in corpus.items]
    assert caption_queries(back.of("audio")) == caption_queries(corpus.of("audio"))


def test_manifest_readable_by_generic_reader(corpus, tmp_path):
    manifest = pytest.importorskip("mmretrieve.data.manifest")
    for gt in (False, True):
        path = corpus.write_manifest(tmp_path / f"m{gt}.jsonl", ground_truth=gt)
        ds = manifest.read_manifest(path)
        assert [s.path for s in ds.samples] == [it.path for it in corpus.items]
        assert [s.captions for s in ds.samples] == [it.captions for it in corpus.items]
        assert [s.modality for s in ds.samples] == [it.modality for it in corpus.items]
        if gt:
            assert [s.metadata["attributes"] for s in ds.samples] == [dict(it.attributes) for it in corpus.items]


def test_load_corpus_bad_line(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"path": "x.png", "modality": "image", "captions": ["a"]}\n{"path": "y.png"}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl: line 2"):
        load_corpus(bad)


def test_split_corpus(corpus):
    train, held = split_corpus(corpus, 0.25, seed=0)
    assert len(train.items) + len(held.items) == len(corpus.items)
    assert not {it.path for it in train.items} & {it.path for it in held.items}
    assert len(held.of("image")) == 6 and len(held.of("video")) == 3 and len(held.of("audio")) == 3
    again = split_corpus(corpus, 0.25, seed=0)
    assert [it.path for it in again[1].items] == [it.path for it in held.items]
    other = split_corpus(corpus, 0.25, seed=1)
    assert [it.path for it in other[1].items] != [it.path for it in held.items]
    assert split_corpus(corpus, 0.0)[1].items == ()
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_corpus(corpus, 1.0)


def test_sizes_and_formats(tmp_path):
    c = make_corpus(tmp_path, n_images=1, n_videos=1, n_audio=1, image_size=48, video_size=40, video_fps=4,
                    video_seconds=1.5, audio_seconds=0.25, sample_rate=22050, video_ext=".webm", audio_ext=".flac")
    (img,), (vid,), (aud,) = c.of("image"), c.of("video"), c.of("audio")
    assert Image.open(img.path).size == (48, 48)
    assert vid.path.endswith(".webm") and _frames(vid.path).shape == (6, 40, 40, 3)
    data, sr = sf.read(aud.path)
    assert aud.path.endswith(".flac") and sr == 22050 and len(data) == round(0.25 * 22050)
    empty = make_corpus(tmp_path / "none", n_images=0, n_videos=0, n_audio=0)
    assert empty.items == ()


@pytest.mark.parametrize("kwargs, name", [({"n_images": -1}, "n_images"), ({"video_size": 33}, "video_size"),
                                          ({"audio_ext": "wav"}, "audio_ext"), ({"video_fps": 0}, "video_fps")])
def test_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_corpus(tmp_path, **kwargs)


def test_generation_speed(tmp_path):
    start = time.perf_counter()
    c = make_corpus(tmp_path, n_images=50, n_videos=25, n_audio=25, seed=0)
    elapsed = time.perf_counter() - start
    assert len(c.items) == 100
    assert elapsed < 15.0, f"100 items took {elapsed:.1f} s"  # ~1 s on 2 shared cores; generous bound
