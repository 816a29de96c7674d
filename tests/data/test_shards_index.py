"""index_shards: tar shards indexed for random access (media located by offset, never read or extracted)."""
import gzip
import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from mmretrieve.data.common import DatasetError
from mmretrieve.data.shards import ShardSample, index_shards, read_shards
from mmretrieve.errors import MediaError
from mmretrieve.modality import Modality


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _wav() -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(400, np.float32), 8000, format="WAV")
    return buf.getvalue()


def _tar(path, members) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture()
def shards(tmp_path):
    _tar(tmp_path / "s-0.tar", [
        ("000000.png", _png(10)),
        ("000000.txt", "a dark square\na black tile\n".encode()),
        ("000001.json", json.dumps({"captions": ["silence"], "source": "lab"}).encode()),
        ("000001.wav", _wav()),
    ])
    _tar(tmp_path / "s-1.tar", [
        ("sub/000002.jpg.cls", b"3"),
        ("sub/000002.png", _png(200)),
        ("sub/000002.json", json.dumps({"caption": "a bright square"}).encode()),
    ])
    return tmp_path


def test_index_locates_members_and_matches_the_streaming_reader(shards, monkeypatch):
    monkeypatch.chdir(shards)
    ds = index_shards("s-{0..1}.tar")
    streamed = list(read_shards(str(shards / "s-{0..1}.tar")))
    assert [s.item_id for s in ds] == [s.item_id for s in streamed] == ["000000", "000001", "sub/000002"]
    assert ds.skipped == ()
    for s, ref in zip(ds, streamed):
        assert isinstance(s, ShardSample) and s.in_shard and s.data == b""  # nothing held in memory
        assert s.path == f"{shards / os.path.basename(ref.shard)}#{ref.member}"  # absolute shard path
        assert (s.modality, s.captions, s.metadata, s.member) == (ref.modality, ref.captions, ref.metadata, ref.member)
        assert s.offset > 0 and s.size == len(ref.data)
        assert s.read_bytes() == ref.data
        with s.open() as f:
            assert f.read() == ref.data
    assert ds[0].ext == "png" and ds[1].ext == "wav" and ds[1].modality is Modality.AUDIO
    # the offset is TarInfo.offset_data
    with tarfile.open(shards / "s-1.tar") as tar:
        assert ds[2].offset == tar.getmember("sub/000002.png").offset_data


def test_problems_are_listed_at_once_or_skipped(shards):
    _tar(shards / "bad.tar", [
        ("a.png", _png(1)),                       # no caption
        ("b.txt", b"orphan caption"),             # no media
        ("c.xyz", b"?"), ("c.txt", b"unknown"),   # unknown media extension
        ("d.png", b""), ("d.txt", b"empty"),      # empty media member
        ("e.png", _png(2)), ("e.txt", b"fine"),
    ])
    with pytest.raises(DatasetError) as e:
        index_shards(str(shards / "bad.tar"))
    text = str(e.value)
    assert len(e.value.problems) == 4 and "skip_missing" in text
    assert f"{shards / 'bad.tar'}#a: no caption" in text
    assert "#b: no image, video or audio member (found: txt)" in text
    assert "#c: no image, video or audio member (found: txt, xyz)" in text
    assert "#d: empty media member d.png" in text
    ds = index_shards(str(shards / "bad.tar"), skip_missing=True)
    assert [s.item_id for s in ds] == ["e"] and [w.rsplit("#", 1)[1] for w, _ in ds.skipped] == list("abcd")
    assert ds[0].read_bytes() == _png(2)


def test_truncated_compressed_and_corrupt_shards(shards):
    data = (shards / "s-0.tar").read_bytes()
    (shards / "cut.tar").write_bytes(data[: data.index(b"RIFF") + 100])  # cut inside the wav member
    with pytest.raises(DatasetError, match=r"cut.tar#000001: truncated: member 000001.wav"):
        index_shards(str(shards / "cut.tar"))
    ds = index_shards(str(shards / "cut.tar"), skip_missing=True)
    assert [s.item_id for s in ds] == ["000000"] and len(ds.skipped) == 1

    (shards / "s-0.tar.gz").write_bytes(gzip.compress(data))
    with pytest.raises(DatasetError, match="gzip-compressed tar.*uncompressed"):
        index_shards(str(shards / "s-0.tar.gz"))
    assert [s.item_id for s in read_shards(str(shards / "s-0.tar.gz"))] == ["000000", "000001"]  # streaming reads it

    # a damaged header after the first sample: tarfile would end the archive there without a word
    second = data.index(b"000001.json")
    (shards / "hdr.tar").write_bytes(data[:second] + b"garbage!" + data[second + 8:])
    with pytest.raises(DatasetError, match="corrupt tar: unreadable header"):
        index_shards(str(shards / "hdr.tar"))
    ds = index_shards(str(shards / "hdr.tar"), skip_missing=True)
    assert [s.item_id for s in ds] == ["000000"] and "corrupt tar" in ds.skipped[0][1]
    with pytest.raises(DatasetError, match="hdr.tar: .*corrupt tar"):  # the streaming reader says so too
        list(read_shards(str(shards / "hdr.tar")))
    reader = read_shards(str(shards / "hdr.tar"), skip_missing=True)
    assert [s.item_id for s in reader] == ["000000"] and "corrupt tar" in reader.skipped[0][1]

    with pytest.raises(DatasetError, match="shard file not found"):
        index_shards(str(shards / "s-{0..2}.tar"))


def test_a_shard_changed_after_indexing_names_shard_and_member(shards):
    ds = index_shards(str(shards / "s-0.tar"))
    data = (shards / "s-0.tar").read_bytes()
    (shards / "s-0.tar").write_bytes(data[: ds[1].offset + 10])
    with pytest.raises(MediaError, match=r"s-0.tar#000001.wav: truncated shard"):
        ds[1].read_bytes()
    os.remove(shards / "s-0.tar")
    with pytest.raises(MediaError, match=r"s-0.tar#000000.png: cannot read the member"):
        ds[0].read_bytes()
