"""`mmretrieve verify` / `--repair` / `--prune-missing` against real damage of a real index.

Each test builds a small index (5 images and one 25 s recording = 3 windows), damages it on disk
the way a crash, a bug or a user would (SQLite rows, the faiss cache file, the manifest, the media,
leftover directories of an interrupted save), and checks that:

- `verify` reports exactly that damage (which kind, which ids / files, how many) and exits 1;
- `verify --repair` (with `--prune-missing` where it applies) exits 0;
- a second `verify` is clean, and search results equal those of an undamaged index.

The damage is done through the documented file layout (manifest.json, meta.sqlite tables,
vectors.faiss), never through private attributes of the library.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3

import numpy as np
import pytest

import mmretrieve as mmr
from mmretrieve.cli import main as cli_main
from mmretrieve.index import TuningConfig
from mmretrieve.media.write import write_audio, write_image

TINY = "tiny-random"
N_IMAGES = 5

# the fields of the JSON report that describe damage, and their value on a healthy index
_CLEAN = {"orphan_items": [], "orphan_vectors": [], "bad_vectors": [], "duplicates": [], "missing_media": [],
          "changed_media": [], "mixed_files": [], "leftovers": [], "generation_behind": None}
_CLEAN_CACHE = {"missing_ids": [], "extra_ids": [], "mismatched_ids": []}


# ---------------------------------------------------------------------------------------- helpers
def _make_media(root: str, *, seed: int = 0) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    images = [os.path.realpath(write_image(os.path.join(root, f"img{i}.png"),
                                           rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)))
              for i in range(N_IMAGES)]
    t = np.arange(25 * 16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    audio = os.path.realpath(write_audio(os.path.join(root, "tone.wav"), tone, 16000))
    return {"image": images, "audio": [audio]}


# "approximate": auto past its exact size (4 entries), so each damage is also met on a tuned approximate
# structure with its re-rank file (rerank.vec) beside the faiss cache
TUNINGS = {"exact": TuningConfig(), "approximate": TuningConfig(flat_below=4, queries=10)}


def _build(index_dir: str, media_dir: str, structure: str = "exact") -> None:
    with mmr.Retriever.create(TINY, path=index_dir, num_workers=0, tuning=TUNINGS[structure]) as r:
        report = r.add(media_dir, progress=False)
        assert not report.failed, str(report)
        r.save()
        assert r.index.structure()["exact"] == (structure == "exact")


def _results(index_dir: str) -> list[list[tuple]]:
    """Full rankings (k > entries) of a few queries: (path, modality, start, end, score)."""
    with mmr.Retriever.load(index_dir, readonly=True, num_workers=0) as r:
        queries = ["a red square", "a loud tone", "noise"]
        hits = r.search(queries, k=50)
    return [[(h.path, h.modality.value, h.start, h.end, round(float(h.score), 4)) for h in q] for q in hits]


def _assert_same_results(got: list[list[tuple]], want: list[list[tuple]]) -> None:
    assert [[h[:4] for h in q] for q in got] == [[h[:4] for h in q] for q in want]
    for q_got, q_want in zip(got, want):
        assert np.allclose([h[4] for h in q_got], [h[4] for h in q_want], atol=2e-4)


def _verify(capsys, index_dir: str, *flags: str) -> tuple[int, dict]:
    """Run `mmretrieve verify INDEX --json FLAGS` in-process: (exit code, report)."""
    capsys.readouterr()
    code = cli_main(["verify", index_dir, "--json", *flags])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _damage(report: dict) -> dict:
    """The damage fields of a JSON report that differ from a healthy index's."""
    out = {k: report[k] for k in _CLEAN if report.get(k) != _CLEAN[k]}
    cache = report["cache"]
    if cache["status"] != "ok":
        out["cache"] = cache["status"]
    out.update({f"cache.{k}": cache[k] for k in _CLEAN_CACHE if cache[k] != _CLEAN_CACHE[k]})
    if report["encoder"]["status"] != "ok":
        out["encoder"] = report["encoder"]["status"]
    return out


def _sql(index_dir: str, *statements: tuple) -> None:
    conn = sqlite3.connect(os.path.join(index_dir, "meta.sqlite"), isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for stmt in statements:
            conn.execute(*stmt)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _query(index_dir: str, sql: str, args: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(os.path.join(index_dir, "meta.sqlite"), isolation_level=None)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _id_of(index_dir: str, path: str, start: float | None = None) -> int:
    rows = _query(index_dir, "SELECT id FROM items WHERE path = ? AND seg_start IS ?", (path, start))
    assert len(rows) == 1, rows
    return rows[0][0]


def _clean_after_repair(capsys, index_dir: str, *repair_flags: str) -> dict:
    code, repaired = _verify(capsys, index_dir, "--repair", *repair_flags)
    assert code == 0, repaired["problems"]
    assert repaired["repaired"], "repair reported no action"
    code, again = _verify(capsys, index_dir)
    assert code == 0 and again["ok"] and again["problems"] == [], again["problems"]
    assert _damage(again) == {}
    return repaired


@pytest.fixture(params=sorted(TUNINGS))
def built(tmp_path, request):
    """(index dir, media files, search results of the undamaged index), exact and approximate."""
    files = _make_media(str(tmp_path / "media"))
    index_dir = str(tmp_path / "media.mmr")
    _build(index_dir, str(tmp_path / "media"), request.param)
    return index_dir, files, _results(index_dir)


# ---------------------------------------------------------------------------------------- healthy
def test_healthy_index_verifies_clean_with_counts(capsys, built):
    index_dir, files, _ = built
    code, report = _verify(capsys, index_dir)
    assert code == 0 and report["ok"] and report["problems"] == []
    assert _damage(report) == {}
    assert report["entries"] == N_IMAGES + 3 and report["files"] == N_IMAGES + 1
    assert report["counts"] == {"total": N_IMAGES + 3, "text": 0, "image": N_IMAGES, "video": 0, "audio": 3}
    assert report["cache"]["status"] == "ok" and report["encoder"]["status"] == "ok"


# ---------------------------------------------------------------------------------------- rows and vectors
@pytest.mark.parametrize("which", ["image", "audio window"])
def test_row_without_vector_detected_and_repaired(capsys, built, which):
    index_dir, files, want = built
    victim = _id_of(index_dir, files["image"][2]) if which == "image" else _id_of(index_dir, files["audio"][0], 10.0)
    _sql(index_dir, ("DELETE FROM vectors WHERE id = ?", (victim,)))

    code, report = _verify(capsys, index_dir)
    assert code == 1 and not report["ok"]
    assert _damage(report) == {"orphan_items": [victim]}
    assert report["problems"] == [f"1 metadata row(s) without a vector: ids {victim}"]

    _clean_after_repair(capsys, index_dir)
    _assert_same_results(_results(index_dir), want)


def test_vector_without_row_detected_and_repaired(capsys, built):
    index_dir, files, want = built
    stray = 1000
    _sql(index_dir, ("INSERT INTO vectors (id, vector) VALUES (?, ?)", (stray, np.ones(32, "<f4").tobytes())))

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"orphan_vectors": [stray]}
    assert report["problems"] == [f"1 vector row(s) without metadata: ids {stray}"]

    _clean_after_repair(capsys, index_dir)
    assert _query(index_dir, "SELECT COUNT(*) FROM vectors WHERE id = ?", (stray,)) == [(0,)]
    _assert_same_results(_results(index_dir), want)


@pytest.mark.parametrize("blob", ["nan", "short"])
def test_bad_vector_detected_and_repaired(capsys, built, blob):
    index_dir, files, want = built
    victim = _id_of(index_dir, files["image"][0])
    bad = np.full(32, np.nan, "<f4").tobytes() if blob == "nan" else np.ones(31, "<f4").tobytes()
    _sql(index_dir, ("UPDATE vectors SET vector = ? WHERE id = ?", (bad, victim)))

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"bad_vectors": [victim]}

    _clean_after_repair(capsys, index_dir)
    _assert_same_results(_results(index_dir), want)


def test_duplicate_row_detected_and_repaired(capsys, built):
    """A (path, window) stored twice, committed as a writer would (generation bumped)."""
    index_dir, files, want = built
    original = _id_of(index_dir, files["image"][1])
    gen = _query(index_dir, "SELECT generation FROM state")[0][0]
    _sql(index_dir,
         ("INSERT INTO items (gen, path, modality, seg_start, seg_end, content_hash, mtime, size, metadata) "
          "SELECT ?, path, modality, seg_start, seg_end, content_hash, mtime, size, metadata FROM items WHERE id = ?",
          (gen + 1, original)),
         ("INSERT INTO vectors (id, vector) SELECT (SELECT MAX(id) FROM items), vector FROM vectors WHERE id = ?",
          (original,)),
         ("UPDATE state SET generation = ?", (gen + 1,)))

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"duplicates": [original], "cache": "stale"}
    assert report["problems"] == [f"1 duplicate row(s): ids {original}"]

    _clean_after_repair(capsys, index_dir)
    paths = [p for (p,) in _query(index_dir, "SELECT path FROM items")]
    assert paths.count(files["image"][1]) == 1
    _assert_same_results(_results(index_dir), want)


def test_stored_vector_differing_from_cache_is_reembedded(capsys, built):
    """The database vector of a file was altered after the cache was written: one of the two is wrong,
    so repair re-embeds the file from its media rather than trusting either copy."""
    index_dir, files, want = built
    victim = _id_of(index_dir, files["image"][3])
    other = np.zeros(32, "<f4")
    other[0] = 1.0
    _sql(index_dir, ("UPDATE vectors SET vector = ? WHERE id = ?", (other.tobytes(), victim)))

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"cache.mismatched_ids": [victim]}

    _clean_after_repair(capsys, index_dir)
    _assert_same_results(_results(index_dir), want)


# ---------------------------------------------------------------------------------------- faiss cache
def test_truncated_cache_detected_and_rebuilt(capsys, built):
    index_dir, files, want = built
    cache = os.path.join(index_dir, "vectors.faiss")
    size = os.path.getsize(cache)
    with open(cache, "r+b") as f:
        f.truncate(size // 2)

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"cache": "corrupt"}
    assert "vectors.faiss" in report["cache"]["detail"]

    repaired = _clean_after_repair(capsys, index_dir)
    assert any("moved the bad faiss cache aside" in a for a in repaired["repaired"])
    assert os.path.getsize(cache) > size // 2
    _assert_same_results(_results(index_dir), want)


def test_cache_of_another_index_detected_and_rebuilt(capsys, built, tmp_path):
    index_dir, files, want = built
    other_media = str(tmp_path / "other")
    _make_media(other_media, seed=7)
    other = str(tmp_path / "other.mmr")
    _build(other, other_media)
    shutil.copyfile(os.path.join(other, "vectors.faiss"), os.path.join(index_dir, "vectors.faiss"))

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"cache": "foreign"}

    _clean_after_repair(capsys, index_dir)
    _assert_same_results(_results(index_dir), want)


def test_stale_cache_is_reported_caught_up_and_refreshed(capsys, built, tmp_path):
    """A cache from an older generation is normal (a writer died before saving it): verify says so,
    exits 0, search catches it up from the database, and repair writes a current one."""
    index_dir, files, _ = built
    cache = os.path.join(index_dir, "vectors.faiss")
    old = str(tmp_path / "old.faiss")
    shutil.copyfile(cache, old)
    extra = os.path.realpath(write_image(str(tmp_path / "media" / "late.png"),
                                         np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8)))
    with mmr.Retriever.load(index_dir, num_workers=0) as r:
        r.add(extra, progress=False)
        r.save()
    want = _results(index_dir)
    shutil.copyfile(old, cache)

    code, report = _verify(capsys, index_dir)
    assert code == 0 and report["ok"]
    assert _damage(report) == {"cache": "stale"}
    assert report["cache"]["generation"] == 1 and report["generation"] == 2
    _assert_same_results(_results(index_dir), want)

    code, repaired = _verify(capsys, index_dir, "--repair")
    assert code == 0 and repaired["cache"]["status"] == "ok" and repaired["cache"]["generation"] == 2
    _assert_same_results(_results(index_dir), want)


def test_generation_counter_behind_the_data_detected_and_repaired(capsys, built):
    """The state table says generation 0 while rows were written at generation 1: a stale cache
    catch-up would miss those rows, so verify reports it and repair moves the counter forward."""
    index_dir, files, want = built
    _sql(index_dir, ("UPDATE state SET generation = 0",))
    os.remove(os.path.join(index_dir, "vectors.faiss"))  # the counter alone, independent of the cache

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"generation_behind": 1, "cache": "missing"}
    assert report["problems"] == ["generation counter 0 is behind the data (rows written at generation 1)"]

    _clean_after_repair(capsys, index_dir)
    assert _query(index_dir, "SELECT generation FROM state")[0][0] >= 1
    _assert_same_results(_results(index_dir), want)


# ---------------------------------------------------------------------------------------- fingerprint
def test_manifest_fingerprint_edited_is_refused_then_restored_from_the_database(capsys, built):
    index_dir, files, want = built
    manifest = os.path.join(index_dir, "manifest.json")
    with open(manifest) as f:
        body = json.load(f)
    body["fingerprint"]["encoder"]["image"]["size"] = 64
    with open(manifest, "w") as f:
        json.dump(body, f)

    capsys.readouterr()
    assert cli_main(["verify", index_dir]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "disagrees with meta.sqlite" in err
    with pytest.raises(mmr.IndexCorruptError, match="manifest.json"):
        mmr.Retriever.load(index_dir, readonly=True)

    _clean_after_repair(capsys, index_dir)
    with open(manifest) as f:
        assert json.load(f)["fingerprint"]["encoder"]["image"]["size"] == 32
    _assert_same_results(_results(index_dir), want)


def test_fingerprint_of_another_encoder_is_reported_and_never_repaired_away(capsys, built):
    """Manifest and database both name a preprocessing the preset does not produce: the vectors came
    from another encoder. Repair cannot know which, so it leaves every row in place and still fails."""
    index_dir, files, _ = built
    manifest = os.path.join(index_dir, "manifest.json")
    with open(manifest) as f:
        body = json.load(f)
    body["fingerprint"]["encoder"]["image"]["size"] = 64
    with open(manifest, "w") as f:
        json.dump(body, f)
    _sql(index_dir, ("UPDATE meta SET value = ? WHERE key = 'fingerprint'",
                     (json.dumps(body["fingerprint"], sort_keys=True),)))
    rows_before = _query(index_dir, "SELECT i.id, i.path, v.vector FROM items i JOIN vectors v USING (id) ORDER BY id")

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"encoder": "mismatch"}
    assert report["problems"] == [f"encoder mismatch: {report['encoder']['detail']}"]
    assert "keys: image" in report["encoder"]["detail"]

    code, repaired = _verify(capsys, index_dir, "--repair")
    assert code == 1 and _damage(repaired) == {"encoder": "mismatch"}
    assert _query(index_dir, "SELECT i.id, i.path, v.vector FROM items i JOIN vectors v USING (id) ORDER BY id") \
        == rows_before
    with pytest.raises(mmr.EncoderMismatchError):
        mmr.Retriever.load(index_dir, readonly=True)


# ---------------------------------------------------------------------------------------- media
def test_changed_media_detected_and_reembedded(capsys, built, tmp_path):
    index_dir, files, _ = built
    changed = files["image"][4]
    write_image(changed, np.random.default_rng(99).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    fresh = str(tmp_path / "fresh.mmr")
    _build(fresh, str(tmp_path / "media"))

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"changed_media": [changed]}
    assert report["problems"] == [f"1 file(s) changed since indexing: {changed}"]

    repaired = _clean_after_repair(capsys, index_dir)
    assert "re-embedded 1 changed file(s)" in repaired["repaired"]
    _assert_same_results(_results(index_dir), _results(fresh))


def test_changed_media_that_no_longer_decodes_is_removed(capsys, built):
    index_dir, files, _ = built
    broken = files["image"][4]
    with open(broken, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")

    code, report = _verify(capsys, index_dir)
    assert code == 1 and _damage(report) == {"changed_media": [broken]}

    repaired = _clean_after_repair(capsys, index_dir)
    assert [a for a in repaired["repaired"] if a.startswith(f"removed {broken}: it changed and no longer decodes")]
    paths = [p for (p,) in _query(index_dir, "SELECT path FROM items")]
    assert broken not in paths and len(paths) == N_IMAGES - 1 + 3


def test_deleted_media_reported_kept_by_repair_and_dropped_by_prune(capsys, built, tmp_path):
    """A deleted file is reported (it may sit on an unplugged drive) but is not damage: exit 0, and a
    plain repair keeps its rows. --prune-missing drops them: search then equals an index without it."""
    index_dir, files, _ = built
    gone = files["audio"][0]
    os.remove(gone)
    fresh = str(tmp_path / "fresh.mmr")
    _build(fresh, str(tmp_path / "media"))

    code, report = _verify(capsys, index_dir)
    assert code == 0
    assert _damage(report) == {"missing_media": [gone]}
    capsys.readouterr()
    cli_main(["verify", index_dir])
    assert f"missing media: 1 file(s) no longer exist: {gone}" in capsys.readouterr().out

    code, kept = _verify(capsys, index_dir, "--repair")
    assert code == 0 and kept["missing_media"] == [gone] and kept["entries"] == N_IMAGES + 3

    code, pruned = _verify(capsys, index_dir, "--repair", "--prune-missing")
    assert code == 0 and "removed 3 row(s) of 1 missing file(s)" in pruned["repaired"]
    code, again = _verify(capsys, index_dir)
    assert code == 0 and _damage(again) == {} and again["entries"] == N_IMAGES
    _assert_same_results(_results(index_dir), _results(fresh))


# ---------------------------------------------------------------------------------------- interrupted saves
def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_leftover_directories_of_an_interrupted_save_detected_and_removed(capsys, built):
    index_dir, files, want = built
    pid = _dead_pid()
    tmp_copy = f"{index_dir}.tmp-{pid}-0badc0de"
    old_copy = f"{index_dir}.old-{pid}-0badbeef"
    shutil.copytree(index_dir, tmp_copy)
    shutil.copytree(index_dir, old_copy)

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"leftovers": sorted([tmp_copy, old_copy])}

    _clean_after_repair(capsys, index_dir)
    assert not os.path.exists(tmp_copy) and not os.path.exists(old_copy)
    _assert_same_results(_results(index_dir), want)


def test_save_interrupted_between_its_renames_is_restored_by_repair(capsys, built):
    """The index was renamed to <index>.old-PID-* and the process died before the new copy took its
    place: verify reads that copy, names it as the leftover of an interrupted save and exits 1; repair
    moves it back."""
    index_dir, files, want = built
    aside = f"{index_dir}.old-{_dead_pid()}-00c0ffee"
    os.rename(index_dir, aside)

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"leftovers": [aside]}
    assert report["entries"] == N_IMAGES + 3

    _clean_after_repair(capsys, index_dir)
    assert os.path.isfile(os.path.join(index_dir, "manifest.json")) and not os.path.exists(aside)
    _assert_same_results(_results(index_dir), want)


# ---------------------------------------------------------------------------------------- more damage
def test_rows_of_one_file_with_different_contents_detected_and_reembedded(capsys, built):
    """One window of a recording carries another content hash (rows written from two versions of the
    file): verify names the file, repair re-embeds it whole."""
    index_dir, files, want = built
    audio = files["audio"][0]
    _sql(index_dir, ("UPDATE items SET content_hash = '!older' WHERE path = ? AND seg_start = 10.0", (audio,)))

    code, report = _verify(capsys, index_dir)
    assert code == 1
    assert _damage(report) == {"mixed_files": [audio]}
    assert report["problems"] == [f"1 file(s) with rows of different contents: {audio}"]

    repaired = _clean_after_repair(capsys, index_dir)
    assert "re-embedded 1 changed file(s)" in repaired["repaired"]
    assert _query(index_dir, "SELECT COUNT(DISTINCT content_hash) FROM items WHERE path = ?", (audio,)) == [(1,)]
    _assert_same_results(_results(index_dir), want)


def test_manifest_that_no_longer_parses_is_rewritten_from_the_database(capsys, built):
    index_dir, files, want = built
    manifest = os.path.join(index_dir, "manifest.json")
    with open(manifest, "wb") as f:
        f.write(b"{\"format\": \"mmretrieve-ind")  # cut short

    capsys.readouterr()
    assert cli_main(["verify", index_dir]) == 2
    assert "manifest.json" in capsys.readouterr().err

    repaired = _clean_after_repair(capsys, index_dir)
    assert repaired["repaired"][0] == f"rewrote {manifest} from meta.sqlite"
    with open(manifest) as f:
        assert json.load(f)["fingerprint"]["encoder"]["preset"] == TINY
    _assert_same_results(_results(index_dir), want)


def test_text_report_says_ok_or_lists_each_problem(capsys, built):
    index_dir, files, _ = built
    capsys.readouterr()
    assert cli_main(["verify", index_dir]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"index {index_dir}: {N_IMAGES + 3} entries from {N_IMAGES + 1} file(s) "
                      f"(text 0, image {N_IMAGES}, video 0, audio 3), generation 1")
    assert out[1] == "faiss cache: ok"
    assert out[2].startswith(f"encoder: ok ({TINY} ")
    assert out[3:] == ["OK: vectors, metadata, faiss cache and encoder agree"]

    victim = _id_of(index_dir, files["image"][0])
    _sql(index_dir, ("DELETE FROM vectors WHERE id = ?", (victim,)))
    assert cli_main(["verify", index_dir, "--no-encoder"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "encoder: skipped"
    assert out[3:] == [f"PROBLEM: 1 metadata row(s) without a vector: ids {victim}"]


def test_no_hash_checks_existence_only(capsys, built):
    index_dir, files, _ = built
    changed = files["image"][4]
    write_image(changed, np.random.default_rng(99).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    os.remove(files["image"][0])

    code, report = _verify(capsys, index_dir, "--no-hash")
    assert code == 0 and _damage(report) == {"missing_media": [files["image"][0]]}
    code, report = _verify(capsys, index_dir)
    assert code == 1 and _damage(report) == {"missing_media": [files["image"][0]], "changed_media": [changed]}


def test_index_without_an_encoder_record_is_checked_but_not_reembedded(tmp_path):
    """An index filled with vectors from elsewhere (no Retriever encoder record): the encoder check is
    skipped with its reason, a changed file is reported, and repair says why it cannot re-embed it."""
    from mmretrieve.index import Record, UnifiedIndex
    from mmretrieve.verify import verify_index

    media = _make_media(str(tmp_path / "media"))
    path = media["image"][0]
    index_dir = str(tmp_path / "plain.mmr")
    vecs = np.eye(2, 8, dtype=np.float32)
    with UnifiedIndex.create(8, {"format": "vectors-from-elsewhere"}, path=index_dir) as ix:
        ix.add(vecs, [Record(path, "image", content_hash="sha256:" + "0" * 64), Record(None, "text")])
        ix.save()

    report = verify_index(index_dir)
    assert report.encoder.status == "skipped" and report.encoder.detail == "not a Retriever index (no encoder record)"
    assert report.changed_media == (path,) and not report.ok and report.entries == 2 and report.files == 1

    repaired = verify_index(index_dir, repair=True)
    assert repaired.repaired == ("cannot re-embed 1 changed file(s): the index has no encoder record",
                                 "rebuilt and saved the faiss cache")
    assert repaired.changed_media == (path,) and repaired.entries == 2


def test_problems_name_cache_ids_and_abbreviate_long_lists():
    from mmretrieve.index import CacheCheck
    from mmretrieve.verify import EncoderCheck, VerifyReport

    base = dict(path="/i.mmr", generation=4, entries=9, files=3, counts={"total": 9}, orphan_items=(),
                orphan_vectors=(), bad_vectors=(), duplicates=(), encoder=EncoderCheck("ok"))
    report = VerifyReport(cache=CacheCheck("ok", generation=4, missing_ids=(3, 4), extra_ids=(70,)), **base)
    assert report.problems() == ["faiss cache ok; 2 id(s) missing from faiss; 1 id(s) in faiss but not in SQLite"]
    assert not report.ok
    report = VerifyReport(cache=CacheCheck("corrupt", "vectors.faiss: bad header"),
                          **{**base, "orphan_vectors": tuple(range(1, 8))})
    assert report.problems() == ["7 vector row(s) without metadata: ids 1, 2, 3, 4, 5 (+2 more)",
                                 "faiss cache corrupt; vectors.faiss: bad header"]
    report = VerifyReport(cache=CacheCheck("stale", generation=2), encoder=EncoderCheck("unavailable", "no weights"),
                          **{k: v for k, v in base.items() if k != "encoder"})
    assert report.problems() == ["encoder unavailable: no weights"]
    assert VerifyReport(cache=CacheCheck("missing"), **base).ok
    assert EncoderCheck("skipped").ok and not EncoderCheck("mismatch").ok
