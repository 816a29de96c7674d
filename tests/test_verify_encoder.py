"""verify_index on a small Retriever index (tiny-random): the encoder check (ok, another
fingerprint, a preset that cannot be rebuilt, an index built with a weights file and the transformer
video head) and re-embedding during repair (changed files keep their metadata, undecodable ones are
removed). Each index is built once per module and copied per test."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3

import numpy as np
import pytest
import torch

import mmretrieve as mmr
from mmretrieve.errors import WeightsUnavailableError
from mmretrieve.media.write import write_image
from mmretrieve.models import create_encoder
from mmretrieve.models.weights import sha256_file
from mmretrieve.verify import EncoderCheck, verify_index

TINY = "tiny-random"


def _image(path, value):
    return os.path.realpath(write_image(str(path), np.full((24, 24, 3), value, dtype=np.uint8)))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify_encoder")
    media = [_image(root / "a.png", 10), _image(root / "b.png", 200)]
    index_dir = str(root / "pristine.mmr")
    with mmr.Retriever.create(TINY, path=index_dir, num_workers=0) as r:
        r.add(media[0], metadata={"album": "x", "n": 1}, progress=False)
        r.add(media[1], progress=False)
        r.save()
    return index_dir, media


@pytest.fixture
def index(pristine, tmp_path):
    """A fresh copy of the pristine index beside fresh copies of its media (paths rewritten)."""
    src_dir, src_media = pristine
    media = [str(tmp_path / os.path.basename(p)) for p in src_media]
    for s, d in zip(src_media, media):
        shutil.copyfile(s, d)
    index_dir = str(tmp_path / "i.mmr")
    shutil.copytree(src_dir, index_dir)
    _sql(index_dir, *[("UPDATE items SET path = ? WHERE path = ?", (d, s)) for s, d in zip(src_media, media)])
    return index_dir, media


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(index dir, weights file, another weights file): an index built with video_head="transformer"
    and a weights file of trained audio tower and video head (random changes to the seeded ones)."""
    root = tmp_path_factory.mktemp("verify_trained")
    src = create_encoder(TINY, device="cpu", video_head="transformer")
    files = []
    for name, seed in (("trained.safetensors", 1), ("retrained.safetensors", 2)):
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in list(src.audio.parameters()) + list(src.video_head.parameters()):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        src.save_weights(root / name, parts=["audio", "video_head"])
        files.append(str(root / name))
    del src
    index_dir = str(root / "trained.mmr")
    with mmr.Retriever.create(TINY, path=index_dir, weights=files[0], video_head="transformer", num_workers=0) as r:
        r.add(_image(root / "a.png", 10), progress=False)
        r.save()
    return index_dir, files[0], files[1]


def _sql(index_dir, *statements):
    conn = sqlite3.connect(os.path.join(index_dir, "meta.sqlite"), isolation_level=None)
    try:
        for stmt in statements:
            conn.execute(*stmt)
    finally:
        conn.close()


def _edit_fingerprint(index_dir, edit):
    """Change the recorded fingerprint in the manifest and the database alike (they must agree)."""
    manifest = os.path.join(index_dir, "manifest.json")
    with open(manifest) as f:
        body = json.load(f)
    edit(body["fingerprint"])
    with open(manifest, "w") as f:
        json.dump(body, f)
    _sql(index_dir, ("UPDATE meta SET value = ? WHERE key = 'fingerprint'", (json.dumps(body["fingerprint"], sort_keys=True),)))


def _vectors(index_dir):
    with mmr.UnifiedIndex.open(index_dir, readonly=True) as ix:
        out = {}
        for ids, vecs in ix.iter_vectors():
            for h, v in zip(ix.get(ids), vecs):
                out[h.path] = (v.copy(), h.metadata)
        return out


def test_encoder_rebuilt_from_the_record_agrees(index):
    index_dir, _ = index
    r = verify_index(index_dir)
    assert r.ok and r.encoder.status == "ok"
    with mmr.Retriever.load(index_dir, readonly=True, num_workers=0) as ret:
        encoder_id = ret.index.fingerprint["encoder_id"]
    assert r.encoder.detail == f"{TINY} {encoder_id}"


def test_another_fingerprint_is_a_mismatch_naming_the_keys(index):
    index_dir, _ = index

    def bigger_images(fp):
        fp["encoder"]["image"]["size"] = 64

    _edit_fingerprint(index_dir, bigger_images)
    r = verify_index(index_dir)
    assert r.encoder.status == "mismatch" and not r.ok
    assert r.encoder.detail == f"preset {TINY!r} now has a different fingerprint (keys: image)"
    assert r.problems() == [f"encoder mismatch: {r.encoder.detail}"]


def test_a_changed_encoder_id_alone_is_a_mismatch(index):
    index_dir, _ = index

    def other_id(fp):
        fp["encoder_id"] = "0000000000000000"

    _edit_fingerprint(index_dir, other_id)
    r = verify_index(index_dir)
    assert r.encoder.status == "mismatch"
    assert r.encoder.detail == f"preset {TINY!r} now has a different fingerprint (keys: encoder_id)"


def test_a_preset_that_cannot_be_rebuilt_is_unavailable(index):
    index_dir, _ = index

    def unknown_preset(fp):
        fp["encoder"]["preset"] = "no-such-preset"

    _edit_fingerprint(index_dir, unknown_preset)
    r = verify_index(index_dir)
    assert r.encoder.status == "unavailable" and not r.ok
    assert r.encoder.detail.startswith("cannot rebuild encoder 'no-such-preset': ")
    assert verify_index(index_dir, check_encoder=False).ok


def test_repair_reembeds_a_changed_file_with_its_metadata(index, tmp_path):
    index_dir, media = index
    before = _vectors(index_dir)
    _image(media[0], 90)
    r = verify_index(index_dir)
    assert r.changed_media == (media[0],)
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired == ("re-embedded 1 changed file(s)", "rebuilt and saved the faiss cache")
    assert fixed.ok and fixed.entries == 2
    after = _vectors(index_dir)
    assert after[media[0]][1] == {"album": "x", "n": 1}  # metadata kept
    assert not np.allclose(after[media[0]][0], before[media[0]][0])  # the new content's vector
    assert np.array_equal(after[media[1]][0], before[media[1]][0])  # the other file untouched
    fresh = str(tmp_path / "fresh.mmr")
    with mmr.Retriever.create(TINY, path=fresh, num_workers=0) as ret:
        ret.add(media[0], progress=False)
        ret.save()
    assert np.allclose(_vectors(fresh)[media[0]][0], after[media[0]][0], atol=1e-6)


def test_repair_removes_a_changed_file_that_no_longer_decodes(index):
    index_dir, media = index
    with open(media[1], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not an image any more")
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired[0] == "re-embedded 0 changed file(s)"
    assert fixed.repaired[1].startswith(f"removed {media[1]}: it changed and no longer decodes (")
    assert fixed.repaired[2:] == ("rebuilt and saved the faiss cache",)
    assert fixed.ok and fixed.entries == 1 and list(_vectors(index_dir)) == [media[0]]


def test_repair_reembeds_a_file_whose_row_lost_its_vector(index):
    index_dir, media = index
    before = _vectors(index_dir)
    _sql(index_dir, ("DELETE FROM vectors WHERE id = (SELECT id FROM items WHERE path = ?)", (media[1],)))
    r = verify_index(index_dir)
    assert len(r.orphan_items) == 1
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired == ("removed 1 orphan/bad/duplicate row(s)", "re-embedded 1 changed file(s)",
                              "rebuilt and saved the faiss cache")
    after = _vectors(index_dir)
    assert fixed.ok and sorted(after) == sorted(media)
    assert np.allclose(after[media[1]][0], before[media[1]][0], atol=1e-6)


def test_repair_reports_every_file_that_no_longer_decodes_among_several(index):
    index_dir, media = index
    with open(media[0], "wb") as f:  # a.png: first in order, now garbage
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    _image(media[1], 33)  # b.png: changed, still an image
    fixed = verify_index(index_dir, repair=True)
    assert fixed.repaired[0] == "re-embedded 1 changed file(s)"
    assert fixed.repaired[1].startswith(f"removed {media[0]}: it changed and no longer decodes (")
    assert len(fixed.repaired) == 3 and fixed.repaired[2] == "rebuilt and saved the faiss cache"
    assert fixed.ok and list(_vectors(index_dir)) == [media[1]]


def test_two_keys_and_keys_on_one_side_only_are_all_named(index):
    index_dir, _ = index

    def older_layout(fp):
        del fp["encoder"]["audio"]  # recorded fingerprint lacks a key the rebuilt one has
        fp["encoder"]["legacy"] = 1  # and has one the rebuilt one lacks

    _edit_fingerprint(index_dir, older_layout)
    r = verify_index(index_dir)
    assert r.encoder == EncoderCheck("mismatch", f"preset {TINY!r} now has a different fingerprint (keys: audio, legacy)")


def _recorded(index_dir):
    with open(os.path.join(index_dir, "manifest.json")) as f:
        return json.load(f)["fingerprint"]


def test_an_index_built_with_a_weights_file_and_the_transformer_head_is_rebuilt_from_them(trained):
    index_dir, weights, _ = trained
    fp = _recorded(index_dir)
    assert fp["weights_path"] == weights
    assert fp["encoder"]["extra_weights_sha256"] == [sha256_file(weights)] and fp["encoder"]["audio"]["trained"]
    assert fp["encoder"]["video"]["head"] == "transformer" and fp["encoder"]["video"]["head_layers"] == 2
    r = verify_index(index_dir)
    assert r.ok and r.encoder == EncoderCheck("ok", f"{TINY} {fp['encoder_id']}")


def test_a_changed_weights_file_is_a_mismatch_and_a_missing_one_unavailable(trained, tmp_path):
    src_dir, weights, other = trained
    index_dir, mine = str(tmp_path / "t.mmr"), str(tmp_path / "w.safetensors")
    shutil.copytree(src_dir, index_dir)
    shutil.copyfile(weights, mine)

    def moved_weights(fp):
        fp["weights_path"] = mine

    _edit_fingerprint(index_dir, moved_weights)
    assert verify_index(index_dir).encoder.status == "ok"
    shutil.copyfile(other, mine)  # same tensors, other values: another file hash
    r = verify_index(index_dir)
    assert r.encoder == EncoderCheck(
        "mismatch", f"preset {TINY!r} now has a different fingerprint (keys: extra_weights_sha256)")
    os.remove(mine)
    r = verify_index(index_dir)
    assert r.encoder.status == "unavailable" and r.encoder.detail.startswith(f"cannot rebuild encoder {TINY!r}: ")
    assert mine in r.encoder.detail


def test_the_encoder_check_uses_the_pretrained_weights_it_is_given(index, tmp_path):
    index_dir, _ = index
    empty = tmp_path / "no-checkpoint"
    empty.mkdir()
    r = verify_index(index_dir, pretrained=str(empty))
    assert r.encoder.status == "unavailable" and not r.ok
    assert r.encoder.detail == (f"cannot rebuild encoder {TINY!r}: pretrained: no checkpoint "
                                f"(.safetensors/.bin/.pt) in directory {empty}")


def test_repair_with_pretrained_weights_it_cannot_load_keeps_the_old_rows(index, tmp_path):
    """The pretrained override reaches the re-embedding encoder too: when it cannot be loaded, repair
    stops with that error before the changed file's rows are dropped (from a path or an open index)."""
    index_dir, media = index
    before = _vectors(index_dir)
    _image(media[0], 90)
    empty = tmp_path / "no-checkpoint"
    empty.mkdir()
    with pytest.raises(WeightsUnavailableError, match=re.escape(f"no checkpoint (.safetensors/.bin/.pt) in directory {empty}")):
        verify_index(index_dir, repair=True, pretrained=str(empty))
    with mmr.UnifiedIndex.open(index_dir) as ix, pytest.raises(WeightsUnavailableError):
        verify_index(ix, repair=True, pretrained=str(empty))
    after = _vectors(index_dir)
    assert sorted(after) == sorted(before)
    for p in media:
        assert np.array_equal(after[p][0], before[p][0]) and after[p][1] == before[p][1]
    assert verify_index(index_dir).changed_media == (media[0],)
