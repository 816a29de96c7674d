"""UnifiedIndex refuses bad fingerprints, factories and records with errors naming the argument, and
detects every kind of damage to its faiss cache file (named, never parsed blindly)."""
from __future__ import annotations

import json
import math
import os
import struct

import pytest
from index_helpers import DIM, FP, make_records, unit_vectors

from mmretrieve.errors import IndexCorruptError, IndexLockedError
from mmretrieve.index import Record, UnifiedIndex
from mmretrieve.index.locking import WriterLock
from mmretrieve.verify import verify_index


# ---------------------------------------------------------------------------------------- create
@pytest.mark.parametrize("fingerprint,message", [
    (["not", "a", "dict"], "fingerprint must be a dict, got list"),
    ({"weights": {1, 2}}, "fingerprint must be JSON-serialisable"),
    ({"scale": math.nan}, "fingerprint must be JSON-serialisable"),
])
def test_bad_fingerprint_is_refused(fingerprint, message):
    with pytest.raises(ValueError, match=message):
        UnifiedIndex.create(DIM, fingerprint)


@pytest.mark.parametrize("factory,message", [
    ("", "must be a non-empty faiss factory string"),
    ("IDMap,Flat", "leave out IDMap"),
    ("NotAnIndex42", "is not a faiss index_factory string"),
])
def test_bad_factory_is_refused(factory, message):
    with pytest.raises(ValueError, match=message):
        UnifiedIndex.create(DIM, FP, factory=factory)


# ---------------------------------------------------------------------------------------- records
@pytest.mark.parametrize("record,error,message", [
    ("a/b.png", TypeError, r"records\[0\] is a str, expected mmretrieve.index.Record"),
    (Record(path=b"a.png", modality="image"), TypeError, r"records\[0\]: path must be a str or None, got bytes"),
    (Record(path="a", modality="smell"), ValueError, "smell"),
    (Record(path="a", modality="image", start="soon"), ValueError, r"records\[0\]: start='soon' is not a number"),
    (Record(path="a", modality="image", end=math.inf), ValueError, r"records\[0\]: end=inf must be finite"),
    (Record(path="a", modality="audio", start=5.0, end=1.0), ValueError, "end=1.0 is before start=5.0"),
    (Record(path="a", modality="image", size=-1), ValueError, "size=-1 must be a non-negative int"),
    (Record(path="a", modality="image", size=True), ValueError, "size=True must be a non-negative int"),
    (Record(path="a", modality="image", content_hash=123), TypeError, "content_hash must be a str or None"),
    (Record(path="a", modality="image", metadata=[1]), TypeError, "metadata must be a mapping, got list"),
    (Record(path="a", modality="image", metadata={1: "x"}), TypeError, "metadata keys must be strings"),
    (Record(path="a", modality="image", metadata={"s": {1}}), ValueError, "metadata is not JSON-serialisable"),
    (Record(path="a", modality="image", metadata={"t": ["ok", "a\x00b"]}), ValueError, "NUL characters"),
    (Record(path="a", modality="image", metadata={"k\x00": 1}), ValueError, "NUL characters"),
])
def test_bad_record_is_refused_and_nothing_is_stored(record, error, message):
    ix = UnifiedIndex.create(DIM, FP)
    with pytest.raises(error, match=message):
        ix.add(unit_vectors(1), [record])
    assert len(ix) == 0 and ix.generation == 0


def test_vectors_of_the_wrong_shape_are_refused():
    ix = UnifiedIndex.create(DIM, FP)
    with pytest.raises(ValueError, match=rf"vectors must have shape \(N, {DIM}\), got \(2, 3\)"):
        ix.add(unit_vectors(2, dim=3), make_records(2))
    assert len(ix) == 0


def test_a_damaged_metadata_row_is_reported_as_corruption(tmp_path):
    import sqlite3

    path = str(tmp_path / "ix")
    ix = UnifiedIndex.create(DIM, FP, path=path)
    ids = ix.add(unit_vectors(2), make_records(2))
    ix.close()
    conn = sqlite3.connect(os.path.join(path, "meta.sqlite"))
    conn.execute("UPDATE items SET metadata = '{not json' WHERE id = ?", (ids[1],))
    conn.commit()
    conn.close()
    with UnifiedIndex.open(path, readonly=True) as ro:
        assert ro.get([ids[0]])[0].metadata["n"] == 0
        with pytest.raises(IndexCorruptError, match=rf"index row {ids[1]} \('/media/f1.bin'\) is damaged"):
            ro.get([ids[1]])


# ---------------------------------------------------------------------------------------- faiss cache
def _saved(tmp_path) -> str:
    path = str(tmp_path / "ix")
    ix = UnifiedIndex.create(DIM, FP, path=path)
    ix.add(unit_vectors(20), make_records(20))
    ix.save()
    ix.close()
    return path


def _split_cache(path: str) -> tuple[bytes, dict, bytes]:
    with open(os.path.join(path, "vectors.faiss"), "rb") as f:
        data = f.read()
    magic, rest = data[:10], data[10:]
    (hlen,) = struct.unpack("<Q", rest[:8])
    return magic, json.loads(rest[8:8 + hlen]), rest[8 + hlen:]


def _write_cache(path: str, magic: bytes, header: dict | bytes, payload: bytes) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(os.path.join(path, "vectors.faiss"), "wb") as f:
        f.write(magic + struct.pack("<Q", len(raw)) + raw + payload)


def _damage(kind: str, path: str) -> None:
    magic, header, payload = _split_cache(path)
    cache = os.path.join(path, "vectors.faiss")
    if kind == "bad magic":
        _write_cache(path, b"NOTFAISS\x01\n", header, payload)
    elif kind == "truncated header":
        with open(cache, "wb") as f:
            f.write(magic + b"\x01\x02")
    elif kind == "implausible header":
        with open(cache, "wb") as f:
            f.write(magic + struct.pack("<Q", 1 << 40) + b"{}")
    elif kind == "header not JSON":
        _write_cache(path, magic, b"{not json", payload)
    elif kind == "no nbytes":
        _write_cache(path, magic, {k: v for k, v in header.items() if k != "nbytes"}, payload)
    elif kind == "other dim":
        _write_cache(path, magic, {**header, "dim": DIM * 2}, payload)
    elif kind == "appended":
        _write_cache(path, magic, header, payload + b"extra")
    elif kind == "altered":
        _write_cache(path, magic, header, payload[:-1] + bytes([payload[-1] ^ 0xFF]))
    elif kind == "unparsable":
        junk = b"\x00" * len(payload)
        import hashlib

        _write_cache(path, magic, {**header, "sha256": hashlib.sha256(junk).hexdigest()}, junk)
    elif kind == "wrong ntotal":
        _write_cache(path, magic, {**header, "ntotal": header["ntotal"] + 1}, payload)


@pytest.mark.parametrize("kind,message", [
    ("bad magic", "not an mmretrieve faiss cache"),
    ("truncated header", "truncated header"),
    ("implausible header", "header length 1099511627776 is implausible"),
    ("header not JSON", "header is not valid JSON"),
    ("no nbytes", "header lacks nbytes"),
    ("other dim", f"cache is for dim={DIM * 2} factory='Flat', index has dim={DIM}"),
    ("appended", "payload bytes, header says"),
    ("altered", "checksum mismatch"),
    ("unparsable", "faiss cannot parse the cache"),
    ("wrong ntotal", "cache content does not match its header"),
])
def test_damaged_cache_is_named_by_open_and_verify_and_repaired(tmp_path, kind, message):
    path = _saved(tmp_path)
    _damage(kind, path)
    with pytest.raises(IndexCorruptError, match=message) as err:
        UnifiedIndex.open(path, readonly=True)
    assert "vectors.faiss" in str(err.value) and "delete it and reopen" in str(err.value)
    report = verify_index(path, check_encoder=False)
    assert report.cache.status == "corrupt" and message.split(",")[0] in report.cache.detail
    repaired = verify_index(path, repair=True, check_encoder=False)
    assert repaired.ok and repaired.cache.status == "ok"
    with UnifiedIndex.open(path, readonly=True) as ro:
        assert [h.id for h in ro.search(unit_vectors(20)[:3], k=1)[0]] == [1]


def test_unreadable_cache_is_named(tmp_path):
    path = _saved(tmp_path)
    cache = os.path.join(path, "vectors.faiss")
    os.remove(cache)
    os.mkdir(cache)  # a directory where the file should be: open() fails with an OSError
    with pytest.raises(IndexCorruptError, match="vectors.faiss: cannot read"):
        UnifiedIndex.open(path, readonly=True)


# ---------------------------------------------------------------------------------------- writer lock
def test_writer_lock_is_exclusive_reports_its_holder_and_is_released(tmp_path):
    path = _saved(tmp_path)
    assert WriterLock.is_locked(path) is None
    ix = UnifiedIndex.open(path)
    try:
        assert WriterLock.is_locked(path) == os.getpid()
        with pytest.raises(IndexLockedError, match=rf"is being written by process {os.getpid()}"):
            UnifiedIndex.open(path)
        with UnifiedIndex.open(path, readonly=True) as ro:  # readers never wait for the writer
            assert len(ro) == 20
    finally:
        ix.close()
    assert WriterLock.is_locked(path) is None
    lock = WriterLock(path)
    lock.acquire()
    lock.acquire()  # a second acquire by the holder is a no-op
    assert lock.held
    lock.release()
    lock.release()
    assert not lock.held and WriterLock.is_locked(path) is None
    assert WriterLock.is_locked(str(tmp_path / "nowhere")) is None


def test_an_index_dropped_without_close_releases_its_lock(tmp_path):
    path = _saved(tmp_path)
    lock = WriterLock(path)
    lock.acquire()
    del lock  # garbage collected: the lock goes with it
    import gc

    gc.collect()
    with UnifiedIndex.open(path) as ix:
        assert len(ix) == 20
