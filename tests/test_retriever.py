"""End-to-end behaviour of the Retriever on a tiny random model and generated media."""
from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

import mmretrieve as mmr
from mmretrieve.query import fuse

TINY = "tiny-random"


@pytest.fixture(scope="module")
def indexed(media_folder, tmp_path_factory):
    root, files = media_folder
    r = mmr.Retriever.create(TINY, num_workers=0)
    report = r.add(root, progress=False)
    yield r, report, files
    r.close()


def test_add_reports_every_file(indexed):
    r, report, files = indexed
    good = files["image"] + files["video"] + files["audio"]
    assert sorted(report.added) == sorted(good)
    assert sorted(p for p, _ in report.failed) == sorted(files["bad"])
    assert all(reason for _, reason in report.failed)
    # 25 s media give 3 windows of 10 s: 4 images + (1 + 1 + 3) video + (1 + 1 + 3) audio entries
    assert report.entries == 4 + 5 + 5 == len(r)
    assert r.index.stats()["image"] == 4
    assert r.index.stats()["video"] == 5
    assert r.index.stats()["audio"] == 5


def test_own_file_is_the_first_hit(indexed):
    r, _, files = indexed
    for modality in ("image", "video", "audio"):
        for path in files[modality]:
            if "long" in path:
                continue
            hit = r.search(pathlib.Path(path), modality=modality, k=3)[0]
            assert hit.path == path, (modality, path, hit)
            assert hit.score == pytest.approx(1.0, abs=1e-4)
            assert hit.modality.value == modality


def test_long_media_windows_have_timestamps(indexed):
    r, _, files = indexed
    for modality in ("video", "audio"):
        long_path = [p for p in files[modality] if "long" in p][0]
        hits = r.search("anything", modality=modality, k=20)
        spans = sorted((h.start, h.end) for h in hits if h.path == long_path)
        assert spans == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)], (modality, spans)


def test_modality_filter_and_k(indexed):
    r, _, _ = indexed
    hits = r.search("a red square", modality="image", k=10)
    assert len(hits) == 4 and {h.modality.value for h in hits} == {"image"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    mixed = r.search("a red square", modality=["image", "audio"], k=100)
    assert {h.modality.value for h in mixed} == {"image", "audio"} and len(mixed) == 9
    assert len(r.search("x", k=3)) == 3


def test_batch_of_queries(indexed):
    r, _, files = indexed
    out = r.search(["a dog", pathlib.Path(files["image"][1])], modality="image", k=2)
    assert len(out) == 2 and all(len(h) == 2 for h in out)
    assert out[1][0].path == files["image"][1]


def test_composed_and_arithmetic_queries(indexed):
    r, _, files = indexed
    ref = files["image"][0]
    c = mmr.Composed(image=ref, text="at night", weight=0.3)
    expected = fuse(np.stack([r.embed(pathlib.Path(ref)), r.embed("at night")]), [0.7, 0.3])
    np.testing.assert_allclose(r.embed(c), expected, atol=1e-6)
    assert len(r.search(c, modality="image", k=3)) == 3
    a = mmr.Query.image(ref) - mmr.Query.text("day") + mmr.Query.text("night")
    want = fuse(np.stack([r.embed(pathlib.Path(ref)), r.embed("day"), r.embed("night")]), [1, -1, 1])
    np.testing.assert_allclose(r.embed(a), want, atol=1e-6)
    # weight 0 is the reference alone: its own file comes first
    assert r.search(mmr.Composed(image=ref, text="x", weight=0.0), modality="image", k=1)[0].path == ref


def test_cross_modal_query_any_to_any(indexed):
    r, _, files = indexed
    hits = r.search(pathlib.Path(files["audio"][0]), modality="image", k=2)
    assert len(hits) == 2 and all(h.modality.value == "image" for h in hits)


def test_reindexing_unchanged_folder_adds_nothing(media_factory, tmp_path):
    root = str(tmp_path / "m")
    files = media_factory(root, corrupt=False, seed=3)
    r = mmr.Retriever.create(TINY, num_workers=0)
    first = r.add(root, progress=False)
    n = len(r)
    again = r.add(root, progress=False)
    assert again.added == () and again.updated == () and again.entries == 0
    assert sorted(again.unchanged) == sorted(first.added)
    assert len(r) == n
    # a changed file replaces its entries; touching without a change is still "unchanged"
    img = files["image"][0]
    Image.fromarray(np.full((48, 48, 3), 200, np.uint8)).save(img)
    os.utime(files["image"][1])
    third = r.add(root, progress=False)
    assert third.updated == (img,) and third.added == () and len(r) == n
    assert files["image"][1] in third.unchanged
    assert r.search(pathlib.Path(img), modality="image", k=1)[0].path == img


def test_save_load_round_trip(indexed, tmp_path):
    r, _, files = indexed
    path = str(tmp_path / "media.mmr")
    r.save(path)
    queries = ["a dog", pathlib.Path(files["video"][0])]
    before = r.search(queries, k=5)
    with mmr.Retriever.load(path) as loaded:
        after = loaded.search(queries, k=5)
        assert len(loaded) == len(r)
        assert loaded.info()["counts"] == r.info()["counts"]
    assert [[(h.id, h.path, h.start) for h in hs] for hs in before] == [[(h.id, h.path, h.start) for h in hs] for hs in after]
    for hs_a, hs_b in zip(before, after):
        np.testing.assert_allclose([h.score for h in hs_a], [h.score for h in hs_b], atol=1e-5)


def test_index_from_a_preset_file_reopens_without_the_file(media_folder, tmp_path):
    root, files = media_folder
    data = json.loads((pathlib.Path(mmr.__file__).parent / "presets" / "tiny-random.json").read_text())
    preset = tmp_path / "mine.json"
    preset.write_text(json.dumps({**data, "name": "mine", "seed": 11}))
    path = str(tmp_path / "mine.mmr")
    with mmr.Retriever.create(str(preset), path=path, num_workers=0) as r:
        r.add(files["image"], progress=False)
        r.save()
        before = r.search("a dog", k=3)
    preset.unlink()
    with mmr.Retriever.load(path) as loaded:
        assert loaded.encoder.preset.name == "mine" and loaded.encoder.preset.seed == 11
        after = loaded.search("a dog", k=3)
    assert [(h.path, round(h.score, 5)) for h in before] == [(h.path, round(h.score, 5)) for h in after]
    with mmr.Retriever.create(TINY, num_workers=0) as shipped:  # a shipped preset's name is its record
        assert "preset_definition" not in shipped.index.fingerprint


def test_remove_and_upsert_keep_the_rest(media_factory, tmp_path):
    root = str(tmp_path / "m")
    files = media_factory(root, corrupt=False, seed=5)
    path = str(tmp_path / "idx.mmr")
    r = mmr.Retriever.create(TINY, path=path, num_workers=0)
    r.add(root, progress=False)
    n = len(r)
    assert r.remove(files["video"][2]) == 3  # the long video's three windows
    assert len(r) == n - 3
    assert all(h.path != files["video"][2] for h in r.search("x", modality="video", k=10))
    r.save()
    r.close()
    with mmr.Retriever.load(path) as again:
        assert len(again) == n - 3
        report = again.add(root, progress=False)  # the removed file comes back, nothing else changes
        assert report.added == (files["video"][2],) and len(again) == n


def test_bad_file_never_loses_indexed_entries(media_factory, tmp_path):
    root = str(tmp_path / "m")
    files = media_factory(root, corrupt=False, seed=7)
    r = mmr.Retriever.create(TINY, num_workers=0)
    r.add(root, progress=False)
    n = len(r)
    # a good file turns corrupt: it is reported, and its old entries stay searchable
    with open(files["image"][0], "wb") as f:
        f.write(b"\xff\xd8\xff garbage")
    report = r.add(root, progress=False)
    assert [p for p, _ in report.failed] == [files["image"][0]]
    assert len(r) == n
    assert any(h.path == files["image"][0] for h in r.search("x", modality="image", k=10))


def test_in_memory_inputs(tmp_path):
    r = mmr.Retriever.create(TINY, num_workers=0)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    rep = r.add(img, metadata={"album": "a"})
    assert rep.entries == 1
    r.add(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), modality="image", metadata={"album": "b"})
    r.add(mmr.VideoArray(rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), fps=3.0))
    r.add(mmr.AudioArray(rng.standard_normal(8000).astype(np.float32) * 0.1, 8000))
    r.add(["a cat on a sofa", "a plane in the sky"], modality="text")
    assert r.index.stats() == {"total": 6, "image": 2, "video": 1, "audio": 1, "text": 2}
    hit = r.search("a plane in the sky", modality="text", k=1)[0]
    assert hit.metadata["text"] == "a plane in the sky" and hit.score == pytest.approx(1.0, abs=1e-4)
    assert r.search(img, modality="image", k=1, where={"album": "a"})[0].metadata["album"] == "a"
    only_b = r.search(img, modality="image", k=5, where={"album": "b"})
    assert len(only_b) == 1 and only_b[0].metadata["album"] == "b"
    with pytest.raises(TypeError, match="cannot add"):
        r.add(rng.standard_normal((4, 4)))
    with pytest.raises(FileNotFoundError, match="no such file"):
        r.add(str(tmp_path / "missing"))


def test_embeddings_are_deterministic(media_folder):
    _, files = media_folder
    a = mmr.Retriever.create(TINY, num_workers=0)
    b = mmr.Retriever.create(TINY, num_workers=0)
    for path in (files["image"][0], files["video"][0], files["audio"][0]):
        np.testing.assert_array_equal(a.embed(pathlib.Path(path)), b.embed(pathlib.Path(path)))
    np.testing.assert_array_equal(a.embed("a dog"), b.embed("a dog"))


def test_worker_processes_give_the_same_vectors(media_folder):
    root, files = media_folder
    serial = mmr.Retriever.create(TINY, num_workers=0)
    parallel = mmr.Retriever.create(TINY, num_workers=2)
    serial.add(root, progress=False)
    parallel.add(root, progress=False)
    for path in files["image"] + files["video"]:
        a = serial.index.vectors([h.id for h in serial.search(pathlib.Path(path), k=1)])
        b = parallel.index.vectors([h.id for h in parallel.search(pathlib.Path(path), k=1)])
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_encoder_mismatch_is_refused(tmp_path):
    r = mmr.Retriever.create(TINY, num_workers=0)
    other = mmr.create_encoder(TINY, video_head="transformer")
    with pytest.raises(mmr.EncoderMismatchError):
        mmr.Retriever(other, r.index, sampling=r.sampling)


def test_query_file_errors_name_the_file(tmp_path, indexed):
    r, _, _ = indexed
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(mmr.MediaError, match="broken.png"):
        r.search(pathlib.Path(bad))
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        r.search(pathlib.Path(tmp_path / "nope.jpg"))


def test_transformer_video_head_survives_reload(tmp_path):
    """The head is part of the encoder record: load() rebuilds the same head, info() reports it."""
    path = str(tmp_path / "idx")
    with mmr.Retriever.create("tiny-random", path=path, video_head="transformer", num_workers=0) as r:
        r.add(["a moving square"], modality="text")
        before = r.embed("a moving square")
    with mmr.Retriever.load(path) as r:
        assert r.info()["video_head"] == "transformer"
        np.testing.assert_array_equal(r.embed("a moving square"), before)


def test_blank_text_query_is_refused():
    for text in ("", "   ", "\n\t"):
        with pytest.raises(ValueError, match="empty text"):
            mmr.Query.text(text)


def test_damaged_metadata_row_is_index_corrupt(tmp_path):
    import sqlite3

    path = str(tmp_path / "idx")
    with mmr.Retriever.create("tiny-random", path=path, num_workers=0) as r:
        r.add(["a red square"], modality="text", metadata={"album": "x"})
    conn = sqlite3.connect(os.path.join(path, "meta.sqlite"))
    conn.execute("UPDATE items SET metadata = '{not json'")
    conn.commit()
    conn.close()
    with mmr.Retriever.load(path, readonly=True) as r:
        with pytest.raises(mmr.errors.IndexCorruptError, match="index row 1"):
            r.search("a red square")
