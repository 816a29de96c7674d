"""COCO / Karpathy, MSR-VTT and Clotho v2 readers on fixtures written in the official formats."""
from __future__ import annotations

import csv
import json
import os
import unicodedata

import numpy as np
import pytest

from mmretrieve.data.clotho import read_clotho
from mmretrieve.data.coco import read_coco
from mmretrieve.data.common import DatasetError
from mmretrieve.data.msrvtt import read_msrvtt
from mmretrieve.media.write import write_audio, write_image, write_video
from mmretrieve.modality import Modality


def _image(path) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(abs(hash(os.path.basename(path))) % 2**32)
    return write_image(path, rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))


def _video(path) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    frames[1] = 200
    return write_video(path, frames, fps=4)


def _audio(path) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(1600) / 16000
    return write_audio(path, (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)


def _write_csv(path, header, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


# ------------------------------------------------------------------------------------------------ COCO
def _karpathy_image(cocoid, split, folder, n_sent=5):
    fname = f"COCO_{folder}_{cocoid:012d}.jpg"
    sentences = [
        {"tokens": ["a", "photo"], "raw": f"Photo {cocoid} caption {j}. ", "imgid": cocoid, "sentid": cocoid * 10 + j}
        for j in range(n_sent)
    ]
    return {"filepath": folder, "filename": fname, "imgid": cocoid, "split": split,
            "sentids": [s["sentid"] for s in sentences], "sentences": sentences, "cocoid": cocoid}


@pytest.fixture()
def coco_root(tmp_path):
    root = tmp_path / "coco"
    images = [
        _karpathy_image(1, "test", "val2014", n_sent=6),  # 6 sentences: protocol keeps 5
        _karpathy_image(2, "test", "val2014"),
        _karpathy_image(3, "test", "val2014"),
        _karpathy_image(4, "val", "val2014"),
        _karpathy_image(5, "train", "train2014"),
        _karpathy_image(6, "restval", "val2014"),
    ]
    for img in images:
        if img["cocoid"] == 3:  # only present under its 2017 name
            _image(root / "val2017" / "000000000003.jpg")
        else:
            _image(root / img["filepath"] / img["filename"])
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    # official 2017 captions for val2017
    ann = {
        "info": {"description": "COCO 2017 Dataset"},
        "licenses": [],
        "images": [
            {"license": 1, "file_name": "000000000003.jpg", "coco_url": "", "height": 8, "width": 8, "id": 3},
            {"license": 1, "file_name": "000000000007.jpg", "coco_url": "", "height": 8, "width": 8, "id": 7},
        ],
        "annotations": [
            {"image_id": 7, "id": 21, "caption": "seven b"},
            {"image_id": 3, "id": 11, "caption": "three a "},
            {"image_id": 7, "id": 20, "caption": "seven a"},
            {"image_id": 3, "id": 12, "caption": "three b"},
        ],
    }
    _image(root / "val2017" / "000000000007.jpg")
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(ann))
    return root


def test_coco_karpathy_test_protocol(coco_root):
    ds = read_coco(coco_root, "karpathy-test")
    assert [s.item_id for s in ds] == ["1", "2", "3"]
    assert all(s.modality is Modality.IMAGE and os.path.isfile(s.path) for s in ds)
    assert all(len(s.captions) == 5 for s in ds)  # image 1 had 6: trimmed to the 5-per-image protocol
    assert ds[0].captions[0] == "Photo 1 caption 0."
    assert ds[2].path.endswith(os.path.join("val2017", "000000000003.jpg"))  # 2014 name absent -> 2017 file
    flat = ds.flat_captions()
    assert len(flat.captions) == 15 and flat.caption_to_item == tuple(np.repeat([0, 1, 2], 5))
    assert len(read_coco(coco_root, "karpathy-test", max_captions=None)[0].captions) == 6


def test_coco_karpathy_train_includes_restval(coco_root):
    assert sorted(s.item_id for s in read_coco(coco_root, "karpathy-train")) == ["5", "6"]
    assert [s.item_id for s in read_coco(coco_root, "karpathy-val")] == ["4"]


def test_coco_official_captions(coco_root):
    ds = read_coco(coco_root, "val2017")
    assert [s.item_id for s in ds] == ["3", "7"]
    assert ds[0].captions == ("three a", "three b")  # ordered by annotation id, stripped
    assert ds[1].captions == ("seven a", "seven b")


def test_coco_missing_images_listed_all_or_skipped(coco_root):
    os.remove(coco_root / "val2014" / "COCO_val2014_000000000001.jpg")
    os.remove(coco_root / "val2014" / "COCO_val2014_000000000002.jpg")
    with pytest.raises(DatasetError) as e:
        read_coco(coco_root, "karpathy-test")
    assert len(e.value.problems) == 2
    assert "COCO_val2014_000000000001.jpg" in str(e.value) and "COCO_val2014_000000000002.jpg" in str(e.value)
    ds = read_coco(coco_root, "karpathy-test", skip_missing=True)
    assert [s.item_id for s in ds] == ["3"] and len(ds.skipped) == 2


def test_coco_missing_annotation_and_bad_split(tmp_path, coco_root):
    with pytest.raises(DatasetError, match="dataset_coco.json not found"):
        read_coco(tmp_path, "karpathy-test")
    with pytest.raises(DatasetError) as e:
        read_coco(coco_root, "train2017")  # neither the annotation file nor the folder exists
    assert len(e.value.problems) == 2
    with pytest.raises(ValueError, match="karpathy-test"):
        read_coco(coco_root, "test5k")


def test_coco_malformed_entries_all_reported(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    bad = [{"filepath": "val2014", "split": "test"}, {"filename": "x.jpg", "split": "test", "cocoid": 9}]
    (root / "dataset_coco.json").write_text(json.dumps({"images": bad}))
    with pytest.raises(DatasetError) as e:
        read_coco(root)
    assert len(e.value.problems) == 2
    assert "images[0] lacks filename, sentences, cocoid" in str(e.value)
    (root / "dataset_coco.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid UTF-8 JSON"):
        read_coco(root)


# --------------------------------------------------------------------------------------------- MSR-VTT
@pytest.fixture()
def msrvtt_root(tmp_path):
    root = tmp_path / "msrvtt"
    splits = ["train", "train", "train", "validate", "test", "test"]
    videos = [{"category": i % 20, "url": f"https://www.youtube.com/watch?v=x{i}", "video_id": f"video{i}",
               "start time": 1.0, "end time": 11.0, "split": sp, "id": i} for i, sp in enumerate(splits)]
    sentences = [{"caption": f"video {i} sentence {j}", "video_id": f"video{i}", "sen_id": i * 3 + j}
                 for j in range(3) for i in range(6)]
    data = root / "msrvtt_data"
    data.mkdir(parents=True)
    (data / "MSRVTT_data.json").write_text(json.dumps({"info": {"year": "2016"}, "videos": videos,
                                                       "sentences": sentences}))
    _write_csv(data / "MSRVTT_train.9k.csv", ["video_id"], [["video0"], ["video1"], ["video3"]])
    _write_csv(data / "MSRVTT_train.7k.csv", ["video_id"], [["video0"], ["video1"]])
    _write_csv(data / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"],
               [["ret0", "msr5", "video5", "a man, talking about cars"], ["ret1", "msr4", "video4", "a dog runs"]])
    for i in range(6):
        _video(root / "videos" / "all" / f"video{i}.mp4")
    return root


def test_msrvtt_1k_a(msrvtt_root):
    ds = read_msrvtt(msrvtt_root, "1k-A")
    assert [s.item_id for s in ds] == ["video5", "video4"]
    assert ds[0].captions == ("a man, talking about cars",)  # one caption per video, quoted comma kept
    assert ds[0].modality is Modality.VIDEO and ds[0].path.endswith(os.path.join("all", "video5.mp4"))
    assert ds[0].metadata["key"] == "ret0"
    assert ds.num_captions == 2


def test_msrvtt_train_lists_and_json_splits(msrvtt_root):
    ds = read_msrvtt(msrvtt_root, "train-9k")
    assert [s.item_id for s in ds] == ["video0", "video1", "video3"]
    assert ds[2].captions == ("video 3 sentence 0", "video 3 sentence 1", "video 3 sentence 2")
    assert len(read_msrvtt(msrvtt_root, "train-7k")) == 2
    assert [s.item_id for s in read_msrvtt(msrvtt_root, "full-test")] == ["video4", "video5"]
    assert [s.item_id for s in read_msrvtt(msrvtt_root, "full-val")] == ["video3"]


def test_msrvtt_unknown_columns_listed(msrvtt_root):
    _write_csv(msrvtt_root / "msrvtt_data" / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentense"],
               [["ret0", "msr5", "video5", "x"]])
    with pytest.raises(DatasetError) as e:
        read_msrvtt(msrvtt_root, "1k-A")
    msg = str(e.value)
    assert "missing column(s) sentence" in msg and "unknown column(s) sentense" in msg


def test_msrvtt_absent_videos(msrvtt_root):
    os.remove(msrvtt_root / "videos" / "all" / "video4.mp4")
    os.remove(msrvtt_root / "videos" / "all" / "video5.mp4")
    with pytest.raises(DatasetError) as e:
        read_msrvtt(msrvtt_root, "1k-A")
    assert len(e.value.problems) == 2 and "video4.mp4" in str(e.value) and "skip_missing=True" in str(e.value)
    ds = read_msrvtt(msrvtt_root, "1k-A", skip_missing=True)
    assert len(ds) == 0 and {w for w, _ in ds.skipped} == {"video4", "video5"}


def test_msrvtt_missing_files(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(DatasetError) as e:
        read_msrvtt(tmp_path / "m", "train-9k")
    assert len(e.value.problems) == 2  # MSRVTT_data.json and MSRVTT_train.9k.csv both reported
    assert "MSRVTT_data.json" in str(e.value) and "MSRVTT_train.9k.csv" in str(e.value)


# ---------------------------------------------------------------------------------------------- Clotho
CLOTHO_NAMES = ["Birds at dawn, Ñandú park.wav", "rain on a tin roof.wav", "Käfer_summ 02.wav"]


@pytest.fixture()
def clotho_root(tmp_path):
    root = tmp_path / "clotho"
    rows = [[name] + [f"{name[:5]} caption {j}" for j in range(1, 6)] for name in CLOTHO_NAMES]
    root.mkdir()
    _write_csv(root / "clotho_captions_evaluation.csv", ["file_name"] + [f"caption_{j}" for j in range(1, 6)], rows)
    for name in CLOTHO_NAMES:
        on_disk = unicodedata.normalize("NFD", name) if name.startswith("Käfer") else name  # macOS-style name
        _audio(root / "evaluation" / on_disk)
    return root


def test_clotho_evaluation(clotho_root):
    ds = read_clotho(clotho_root, "evaluation")
    assert [s.item_id for s in ds] == CLOTHO_NAMES
    assert all(len(s.captions) == 5 and s.modality is Modality.AUDIO and os.path.isfile(s.path) for s in ds)
    assert ds[0].captions[0] == "Birds caption 1"
    assert ds.flat_captions().caption_to_item == tuple(np.repeat([0, 1, 2], 5))


def test_clotho_errors_list_everything(clotho_root):
    _write_csv(clotho_root / "clotho_captions_validation.csv", ["file_name", "caption_1", "caption_2"], [])
    with pytest.raises(DatasetError) as e:
        read_clotho(clotho_root, "validation")
    assert len(e.value.problems) == 2  # missing columns AND missing audio folder
    assert "caption_3, caption_4, caption_5" in str(e.value) and "audio folder" in str(e.value)


def test_clotho_absent_audio(clotho_root):
    for name in CLOTHO_NAMES[:2]:
        os.remove(clotho_root / "evaluation" / name)
    with pytest.raises(DatasetError) as e:
        read_clotho(clotho_root)
    assert len(e.value.problems) == 2 and "Ñandú" in str(e.value)
    ds = read_clotho(clotho_root, skip_missing=True)
    assert [s.item_id for s in ds] == [CLOTHO_NAMES[2]] and len(ds.skipped) == 2


def test_clotho_alternative_folder(clotho_root, tmp_path):
    os.rename(clotho_root / "evaluation", tmp_path / "eval_audio")
    with pytest.raises(DatasetError, match="audio folder"):
        read_clotho(clotho_root)
    assert len(read_clotho(clotho_root, audio_dir=tmp_path / "eval_audio")) == 3
    os.makedirs(clotho_root / "clotho_audio_evaluation")
    os.rename(tmp_path / "eval_audio", clotho_root / "clotho_audio_evaluation" / "evaluation")
    assert len(read_clotho(clotho_root)) == 3
