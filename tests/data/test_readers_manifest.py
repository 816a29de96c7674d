"""Generic manifest (CSV / TSV / JSONL) and webdataset-style tar shard readers."""
from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from mmretrieve.data.common import DatasetError
from mmretrieve.data.manifest import read_manifest
from mmretrieve.data.shards import ShardSample, expand_pattern, read_shards
from mmretrieve.media.write import write_audio, write_image, write_video
from mmretrieve.modality import Modality


@pytest.fixture()
def media(tmp_path):
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    write_image(root / "img" / "cat photo.png", np.full((8, 8, 3), 120, np.uint8))
    write_video(root / "clip.mp4", np.zeros((2, 16, 16, 3), np.uint8), fps=4)
    write_audio(root / "beep.flac", np.zeros(800, np.float32), 8000)
    write_image(root / "noext", np.zeros((8, 8, 3), np.uint8), format="PNG")
    return root


def test_manifest_csv(media):
    text = (
        "path,caption,captions,modality,id,metadata\n"
        '"img/cat photo.png",a cat,,,,"{""lens"": ""35mm""}"\n'
        '"img/cat photo.png",a grey cat,,,,\n'
        'clip.mp4,,"[""a black clip"", ""darkness""]",,c1,\n'
        "beep.flac,,silence|nothing,,,\n"
        "noext,,a dark square,image,,\n"
    )
    (media / "m.csv").write_text(text, encoding="utf-8")
    ds = read_manifest(media / "m.csv")
    by_id = {s.item_id: s for s in ds}
    assert list(by_id) == ["img/cat photo.png", "c1", "beep.flac", "noext"]
    cat = by_id["img/cat photo.png"]
    assert cat.captions == ("a cat", "a grey cat") and cat.modality is Modality.IMAGE  # rows merged
    assert cat.path == os.path.join(str(media), "img", "cat photo.png") and cat.metadata == {"lens": "35mm"}
    assert by_id["c1"].captions == ("a black clip", "darkness") and by_id["c1"].modality is Modality.VIDEO
    assert by_id["beep.flac"].captions == ("silence", "nothing") and by_id["beep.flac"].modality is Modality.AUDIO
    assert by_id["noext"].modality is Modality.IMAGE  # explicit column, no extension


def test_manifest_jsonl_and_tsv(media):
    lines = [
        {"path": "img/cat photo.png", "modality": "image", "captions": ["a cat", "a small cat"]},
        {"path": str(media / "clip.mp4"), "caption": "a clip"},  # absolute path
    ]
    (media / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    ds = read_manifest(media / "m.jsonl")
    assert [s.captions for s in ds] == [("a cat", "a small cat"), ("a clip",)]
    (media / "m.tsv").write_text("path\tcaption\nbeep.flac\ta beep, short\n")
    assert read_manifest(media / "m.tsv")[0].captions == ("a beep, short",)
    (media / "m.json").write_text(json.dumps(lines))
    assert len(read_manifest(media / "m.json")) == 2


def test_manifest_unknown_column_and_all_problems(media):
    (media / "typo.csv").write_text("path,captoin\nclip.mp4,x\n")
    with pytest.raises(DatasetError, match="unknown column.*captoin"):
        read_manifest(media / "typo.csv")
    (media / "bad.jsonl").write_text(
        json.dumps({"path": "gone.png", "caption": "x"}) + "\n"
        + json.dumps({"path": "clip.mp4"}) + "\n"
        + json.dumps({"path": "notes.txt", "caption": "y"}) + "\n"
    )
    with pytest.raises(DatasetError) as e:
        read_manifest(media / "bad.jsonl")
    assert len(e.value.problems) == 3  # absent file, no captions, unknown media type: all listed
    ds = read_manifest(media / "bad.jsonl", skip_missing=True)
    assert len(ds) == 0 and len(ds.skipped) == 3
    assert len(read_manifest(media / "bad.jsonl", skip_missing=True, require_captions=False)) == 1
    (media / "bad2.jsonl").write_text('{"path": "clip.mp4", "colour": "red"}\n{oops\n')
    with pytest.raises(DatasetError) as e:
        read_manifest(media / "bad2.jsonl")
    assert len(e.value.problems) == 2 and "colour" in str(e.value)
    with pytest.raises(DatasetError, match="file not found"):
        read_manifest(media / "absent.csv")


# ------------------------------------------------------------------------------------------------ shards
def _png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _tar(path, members: list[tuple[str, bytes]]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture()
def shard_dir(tmp_path):
    wav = io.BytesIO()
    import soundfile as sf

    sf.write(wav, np.zeros(400, np.float32), 8000, format="WAV")
    _tar(tmp_path / "shard-000.tar", [
        ("000000.png", _png_bytes(10)),
        ("000000.txt", "a dark square\na black tile\n".encode()),
        ("000001.json", json.dumps({"captions": ["silence"], "source": "lab"}).encode()),
        ("000001.wav", wav.getvalue()),
    ])
    _tar(tmp_path / "shard-001.tar", [
        ("sub/000002.jpg.cls", b"3"),  # ignored: not media, not caption
        ("sub/000002.png", _png_bytes(200)),
        ("sub/000002.json", json.dumps({"caption": "a bright square"}).encode()),
    ])
    return tmp_path


def test_expand_pattern(tmp_path):
    assert expand_pattern("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_pattern("{a,b}-{1..2}.tar") == ["a-1.tar", "a-2.tar", "b-1.tar", "b-2.tar"]
    (tmp_path / "x1.tar").write_bytes(b"")
    (tmp_path / "x2.tar").write_bytes(b"")
    assert expand_pattern(str(tmp_path / "x*.tar")) == [str(tmp_path / "x1.tar"), str(tmp_path / "x2.tar")]


def test_read_shards(shard_dir):
    samples = list(read_shards(str(shard_dir / "shard-{000..001}.tar")))
    assert [s.item_id for s in samples] == ["000000", "000001", "sub/000002"]
    assert all(isinstance(s, ShardSample) for s in samples)
    assert samples[0].captions == ("a dark square", "a black tile") and samples[0].modality is Modality.IMAGE
    assert samples[1].modality is Modality.AUDIO and samples[1].metadata == {"source": "lab"}
    assert samples[2].captions == ("a bright square",)
    reader = read_shards(str(shard_dir / "shard-*.tar"))
    assert next(reader).item_id == "000000" and next(reader).item_id == "000001"
    with samples[2].open() as f:
        assert np.asarray(Image.open(f).convert("RGB"))[0, 0, 0] == 200


def test_read_shards_extract(shard_dir, tmp_path):
    samples = list(read_shards([shard_dir / "shard-001.tar"], extract_to=tmp_path / "out"))
    assert samples[0].path == str(tmp_path / "out" / "sub" / "000002.png") and os.path.isfile(samples[0].path)
    assert samples[0].data == b""


def test_read_shards_errors(shard_dir):
    with pytest.raises(DatasetError) as e:
        read_shards(str(shard_dir / "shard-{000..003}.tar"))
    assert len(e.value.problems) == 2 and "shard-003.tar" in str(e.value)
    with pytest.raises(DatasetError, match="matches no file"):
        read_shards(str(shard_dir / "none-*.tar"))
    _tar(shard_dir / "bad.tar", [("a.png", _png_bytes(1)), ("b.txt", b"orphan caption"), ("c.png", _png_bytes(2)),
                                 ("c.txt", b"fine")])
    with pytest.raises(DatasetError, match="no caption"):
        list(read_shards(str(shard_dir / "bad.tar")))
    reader = read_shards(str(shard_dir / "bad.tar"), skip_missing=True)
    assert [s.item_id for s in reader] == ["c"]
    assert [w.rsplit("#", 1)[1] for w, _ in reader.skipped] == ["a", "b"]
    data = (shard_dir / "shard-000.tar").read_bytes()
    (shard_dir / "cut.tar").write_bytes(data[: data.index(b"RIFF") + 100])  # cut inside the wav member
    with pytest.raises(DatasetError, match="truncated"):
        list(read_shards(str(shard_dir / "cut.tar")))
    reader = read_shards(str(shard_dir / "cut.tar"), skip_missing=True)
    assert [s.item_id for s in reader] == ["000000"]
    assert len(reader.skipped) == 1 and "truncated" in reader.skipped[0][1]
