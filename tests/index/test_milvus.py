"""MilvusIndex edges against Milvus Lite: creating over an existing collection, opening what mmretrieve
did not make, read-only and closed handles, argument checks, and the integrity check and repair;
plus the filter expressions, which need no server."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mmretrieve.errors import IndexCorruptError, IndexReadOnlyError
from mmretrieve.index import Record, UnifiedIndex
from mmretrieve.index.milvus import build_milvus_filter

DIM = 4
FP = {"format": "test", "encoder": {"preset": "x"}}


def _unit(n, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------- filters (no server)
def test_filter_literals_of_every_type():
    expr, params = build_milvus_filter(["image", "audio", "image"], {"s": 'a"b', "n": -3, "f": 0.25, "b": False,
                                                                    "z": None})
    assert params == {}
    assert expr == ('(modality == "image" or modality == "audio") and (metadata["s"] == "a\\"b") and '
                    '(metadata["n"] == -3) and (metadata["f"] == 0.25) and (metadata["b"] == false) and '
                    '(metadata["z"] is null)')
    assert build_milvus_filter(where={"k": [True, "x\ty"]}) == ('(metadata["k"] == true or metadata["k"] == "x\\ty")', {})
    assert build_milvus_filter() is None and build_milvus_filter(None, {}) is None


def test_filter_templates_carry_values_as_parameters():
    expr, params = build_milvus_filter("video", {"n": [1, 2.5]}, templates=True)
    assert expr == '(modality == {p0}) and (metadata["n"] == {p1} or metadata["n"] == {p2})'
    assert params == {"p0": "video", "p1": 1, "p2": 2.5}


def test_an_empty_value_list_matches_nothing():
    assert build_milvus_filter("image", {"a": 1, "b": []}) == ("id < 0", {})


@pytest.mark.parametrize("where, message", [
    ({"n": 1 << 63}, r"^where\['n'\]=9223372036854775808 is outside int64$"),
    ({"n": -(1 << 63) - 1}, "is outside int64"),
    ({"f": math.nan}, r"^where\['f'\]=nan: NaN/inf can never match stored JSON$"),
    ({"f": [1.0, math.inf]}, "NaN/inf can never match"),
    ({"s": "bell\x07"}, r"^where\['s'\]='bell\\x07' contains control characters Milvus filters cannot express$"),
    ({"s": "del\x7f"}, "contains control characters"),
    ({"o": b"raw"}, r"^where\['o'\] value b'raw' of type bytes is not supported; use str, int, float, bool, None"),
    ({"o": [{"nested": 1}]}, "of type dict is not supported"),
    ({'a"b': 1}, r"""^where key 'a"b' must be 1-256 letters"""),
    ({"": 1}, "where key '' must be 1-256 letters"),
    ({"x" * 257: 1}, "must be 1-256 letters"),
    ({3: 1}, "where key 3 must be"),
])
def test_filter_values_milvus_cannot_express_are_refused(where, message):
    with pytest.raises(ValueError, match=message):
        build_milvus_filter(where=where)


def test_int64_bounds_are_accepted():
    expr, _ = build_milvus_filter(where={"n": [(1 << 63) - 1, -(1 << 63)]})
    assert expr == f'(metadata["n"] == {(1 << 63) - 1} or metadata["n"] == {-(1 << 63)})'


def test_where_must_be_a_mapping():
    with pytest.raises(ValueError, match=r"^where=\[\('a', 1\)\] must be a mapping of metadata key -> value$"):
        build_milvus_filter(where=[("a", 1)])


# ---------------------------------------------------------------------------------------- Milvus Lite
pymilvus = pytest.importorskip("pymilvus", reason="needs the extra: pip install 'mmretrieve[milvus]'")
pytest.importorskip("milvus_lite", reason="needs Milvus Lite for local files: pip install milvus-lite")

from mmretrieve.index.milvus import MilvusIndex, export_to_milvus  # noqa: E402


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One Milvus Lite file for the module (its server starts once); each test uses its own collection."""
    return str(tmp_path_factory.mktemp("milvus") / "edges.db")


def _raw(uri):
    return pymilvus.MilvusClient(uri=uri)


def test_create_refuses_bad_arguments_before_connecting(tmp_path):
    where = str(tmp_path / "never.db")
    for dim in (0, -4, True, 4.0, "4"):
        with pytest.raises(ValueError, match=rf"^dim={dim!r} must be a positive int$"):
            MilvusIndex.create(dim, FP, uri=where)
    for name in ("9lives", "with-dash", "", "a" * 202):
        with pytest.raises(ValueError, match=r"must start with a letter or '_' and hold only letters"):
            MilvusIndex.create(DIM, FP, uri=where, collection=name)
    assert not (tmp_path / "never.db").exists()


def test_create_over_an_existing_collection_needs_overwrite(uri):
    with MilvusIndex.create(DIM, FP, uri=uri, collection="exists") as ix:
        ix.add(_unit(3), [Record(f"/{i}.jpg", "image") for i in range(3)])
    assert MilvusIndex.exists(uri, "exists") and not MilvusIndex.exists(uri, "nothing_here")
    with pytest.raises(FileExistsError, match=f"^Milvus collection 'exists' already exists at {uri}; use "):
        MilvusIndex.create(DIM, FP, uri=uri, collection="exists")
    with MilvusIndex.open(uri, "exists") as ix:
        assert len(ix) == 3
    with MilvusIndex.create(8, FP, uri=uri, collection="exists", overwrite=True) as ix:
        assert len(ix) == 0 and ix.dim == 8
    with MilvusIndex.open(uri, "exists") as ix:
        assert ix.dim == 8 and len(ix) == 0


def test_create_over_a_leftover_metadata_collection_needs_overwrite(uri):
    MilvusIndex.create(DIM, FP, uri=uri, collection="half").close()
    raw = _raw(uri)
    raw.drop_collection("half")  # only half_mmr_meta is left
    raw.close()
    with pytest.raises(FileExistsError, match="'half' already exists"):
        MilvusIndex.create(DIM, FP, uri=uri, collection="half")
    MilvusIndex.create(DIM, FP, uri=uri, collection="half", overwrite=True).close()
    with MilvusIndex.open(uri, "half") as ix:
        assert len(ix) == 0


def test_a_fingerprint_larger_than_milvus_stores_is_refused(uri):
    with pytest.raises(ValueError, match="^fingerprint is larger than 64 KiB and cannot be stored in Milvus$"):
        MilvusIndex.create(DIM, {"format": "test", "blob": "x" * 70_000}, uri=uri, collection="bigfp")


def test_open_names_what_is_missing_or_damaged(uri):
    with pytest.raises(FileNotFoundError, match=f"^no Milvus collection 'absent' at {uri}$"):
        MilvusIndex.open(uri, "absent")
    with pytest.raises(ValueError, match="must start with a letter"):
        MilvusIndex.open(uri, "bad name")

    MilvusIndex.create(DIM, FP, uri=uri, collection="nometa").close()
    raw = _raw(uri)
    raw.drop_collection("nometa_mmr_meta")
    with pytest.raises(IndexCorruptError, match=rf"^{uri}#nometa: no 'nometa_mmr_meta' collection; not made by mmretrieve"):
        MilvusIndex.open(uri, "nometa")

    MilvusIndex.create(DIM, FP, uri=uri, collection="otherfmt").close()
    raw.upsert("otherfmt_mmr_meta", [{"key": "format", "value": "someone-else/9", "v": [0.0, 0.0]}])
    with pytest.raises(IndexCorruptError, match=rf"^{uri}#otherfmt: unknown format 'someone-else/9'$"):
        MilvusIndex.open(uri, "otherfmt")

    MilvusIndex.create(DIM, FP, uri=uri, collection="baddim").close()
    raw.upsert("baddim_mmr_meta", [{"key": "dim", "value": "four", "v": [0.0, 0.0]}])
    with pytest.raises(IndexCorruptError, match=rf"^{uri}#baddim: baddim_mmr_meta is damaged$"):
        MilvusIndex.open(uri, "baddim")
    raw.close()


def test_read_only_and_closed_handles_refuse_what_they_cannot_do(uri):
    with MilvusIndex.create(DIM, FP, uri=uri, collection="ro") as ix:
        ids = ix.add(_unit(2), [Record("/a.jpg", "image"), Record("/b.jpg", "image")])
    ro = MilvusIndex.open(uri, "ro", readonly=True)
    for write in (lambda: ro.add(_unit(1), [Record("/c.jpg", "image")]), lambda: ro.remove(ids),
                  lambda: ro.remove_path("/a.jpg"), ro.drop, lambda: ro.batch().__enter__(),
                  lambda: ro.repair(ro.check())):
        with pytest.raises(IndexReadOnlyError, match=rf"^Milvus index {uri}#ro was opened with readonly=True"):
            write()
    assert len(ro) == 2 and ro.check().counts["image"] == 2
    ro.save()  # nothing to persist: no error
    ro.close()
    ro.close()  # twice is harmless
    for read in (lambda: len(ro), lambda: ro.get(ids), ro.paths, lambda: ro.search(_unit(1)), ro.check, ro.save):
        with pytest.raises(ValueError, match=rf"^Milvus index {uri}#ro is closed$"):
            read()


def test_argument_checks_of_reads_and_writes(uri):
    with MilvusIndex.create(DIM, FP, uri=uri, collection="args") as ix:
        ids = ix.add(_unit(3), [Record(f"/{i}.jpg", "image") for i in range(3)])
        for k in (0, -1, True, 2.0):
            with pytest.raises(ValueError, match=rf"^k={k!r} must be a positive int$"):
                ix.search(_unit(1), k=k)
        with pytest.raises(ValueError, match="^k=16385 exceeds Milvus's limit of 16384 results per query$"):
            ix.search(_unit(1), k=16385)
        assert ix.search(np.zeros((0, DIM), np.float32)) == []
        with pytest.raises(ValueError, match=r"^records\[1\]\.path is longer than 8192 bytes$"):
            ix.add(_unit(2), [Record("/ok.jpg", "image"), Record("/" + "é" * 4096, "image")])
        with pytest.raises(ValueError, match=r"^records\[0\]\.path='/other.jpg' differs from replace_path\('/0.jpg'\)$"):
            ix.replace_path("/0.jpg", _unit(1), [Record("/other.jpg", "image")])
        with pytest.raises(KeyError, match=r"ids not in Milvus collection .*#args: \[12345\]"):
            ix.get([ids[0], 12345])
        with pytest.raises(ValueError, match="save.*to another place is not supported"):
            ix.save(str(uri) + ".copy")
        assert ix.vectors([]).shape == (0, DIM)
        assert ix.remove([12345, 67890]) == 0 and ix.remove_path("/nope.jpg") == 0
        assert ix.file_state("/nope.jpg") is None and ix.entries("/nope.jpg") == []
        assert len(ix) == 3


def test_a_failing_batch_writes_nothing_even_when_nested(uri):
    with MilvusIndex.create(DIM, FP, uri=uri, collection="batch") as ix:
        ix.add(_unit(1), [Record("/keep.jpg", "image")])
        with pytest.raises(RuntimeError, match="stop"):
            with ix.batch():
                ix.add(_unit(1, 1), [Record("/new.jpg", "image")])
                with ix.batch():
                    ix.remove_path("/keep.jpg")
                    raise RuntimeError("stop")
        assert ix.paths() == ["/keep.jpg"]
        with ix.batch():  # the next batch starts clean and is written at its end
            ix.add(_unit(1, 2), [Record("/later.jpg", "image")])
            assert ix.paths() == ["/keep.jpg"]
        assert ix.paths() == ["/keep.jpg", "/later.jpg"]


def test_check_finds_duplicates_and_mixed_files_and_repair_keeps_the_newest(uri):
    with MilvusIndex.create(DIM, FP, uri=uri, collection="integrity") as ix:
        rec = lambda s, h: Record("/long.wav", "audio", start=s, end=s + 10, content_hash=h)  # noqa: E731
        ix.add(_unit(4), [rec(0.0, "h1"), rec(10.0, "h1"), rec(0.0, "h1"), Record(None, "text")], ids=[5, 6, 9, 7])
        ix.add(_unit(2, 1), [rec(10.0, "h2"), Record("/pic.jpg", "image")], ids=[3, 8])
        check = ix.check()
        assert check.generation is None and check.cache.status == "ok"
        assert check.counts == {"total": 6, "text": 1, "image": 1, "video": 0, "audio": 4}
        assert check.files == {"/long.wav": "h2", "/pic.jpg": None}
        assert check.duplicates == (3, 5)  # of each window stored twice the largest id is kept
        assert check.mixed_files == ("/long.wav",) and check.bad_vectors == ()
        assert ix.repair(check) == ["removed 2 orphan/bad/duplicate row(s)"]
        assert sorted(int(i) for ids, _ in ix.iter_vectors() for i in ids) == [6, 7, 8, 9]
        assert ix.check().duplicates == () and ix.repair(ix.check()) == []
        ix.rebuild()
        assert len(ix) == 4


def test_drop_removes_both_collections_and_closes(uri):
    ix = MilvusIndex.create(DIM, FP, uri=uri, collection="gone")
    ix.drop()
    assert not MilvusIndex.exists(uri, "gone") and not MilvusIndex.exists(uri, "gone_mmr_meta")
    with pytest.raises(ValueError, match="is closed"):
        len(ix)


def test_export_refuses_a_batch_size_below_one(uri):
    with UnifiedIndex.create(DIM, FP) as local:
        with pytest.raises(ValueError, match="^batch_size=0 must be >= 1$"):
            export_to_milvus(local, uri, "never", batch_size=0)
    assert not MilvusIndex.exists(uri, "never")
