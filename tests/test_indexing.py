"""The commit loop shared by Retriever.add and index_with_ray: whole files, batch_size files per transaction."""
from __future__ import annotations

import numpy as np
import pytest

from mmretrieve.index import UnifiedIndex
from mmretrieve.indexing import AddReport, commit_files, file_records
from mmretrieve.modality import Modality
from mmretrieve.pipeline import Embedded, Failure, Source

DIM = 8


def _embedded(path: str | None, n_windows: int, seed: int, modality=Modality.AUDIO, value=None) -> Embedded:
    v = np.random.default_rng(seed).standard_normal((n_windows, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    windows = tuple((10.0 * w, 10.0 * w + 10.0) for w in range(n_windows))
    return Embedded(Source(modality, path, value, {"album": "a"}), v, windows, f"h{seed}", 1.0, 10)


@pytest.fixture
def index(tmp_path):
    ix = UnifiedIndex.create(DIM, {"encoder": "test"}, path=str(tmp_path / "idx"))
    yield ix
    ix.close()


def test_file_records_one_per_window_with_text_kept():
    recs = file_records(_embedded("/a.wav", 3, 0))
    assert [(r.path, r.start, r.end, r.content_hash, r.metadata) for r in recs] == [
        ("/a.wav", 0.0, 10.0, "h0", {"album": "a"}), ("/a.wav", 10.0, 20.0, "h0", {"album": "a"}),
        ("/a.wav", 20.0, 30.0, "h0", {"album": "a"})]
    text = file_records(Embedded(Source(Modality.TEXT, None, "a dog", {}), np.zeros((1, DIM), np.float32),
                                 ((None, None),), None, None, None))
    assert text[0].metadata == {"text": "a dog"} and text[0].path is None


def test_batches_of_whole_files_one_transaction_each(index):
    before = index.generation
    stream = [_embedded(f"/f{i}.wav", 1 + i % 3, i) for i in range(5)]
    stream.insert(2, Failure(Source(Modality.AUDIO, "/bad.wav"), "cannot decode"))
    stream.insert(4, Failure(Source(Modality.IMAGE, None, object()), "not an image"))
    report = commit_files(index, stream, batch_size=2, unchanged=("/same.wav",), failed=[("/x.bin", "unknown")])
    assert index.generation - before == 3  # 5 files in batches of 2, 2, 1
    assert report == AddReport(added=tuple(f"/f{i}.wav" for i in range(5)), updated=(), unchanged=("/same.wav",),
                               failed=(("/x.bin", "unknown"), ("/bad.wav", "cannot decode"), ("<in-memory #4>", "not an image")),
                               ids=report.ids)
    assert report.entries == len(index) == 1 + 2 + 3 + 1 + 2
    assert {p: len(index.entries(p)) for p in index.paths()} == {f"/f{i}.wav": 1 + i % 3 for i in range(5)}


def test_a_changed_file_is_replaced_and_reported_as_updated(index):
    commit_files(index, [_embedded("/a.wav", 3, 0)], batch_size=4)
    report = commit_files(index, [_embedded("/a.wav", 2, 1), _embedded("/b.wav", 1, 2)], batch_size=4,
                          replacing=frozenset({"/a.wav"}))
    assert report.updated == ("/a.wav",) and report.added == ("/b.wav",)
    assert [h.start for h in index.entries("/a.wav")] == [0.0, 10.0] and index.file_state("/a.wav")[0] == "h1"


def test_an_interrupted_stream_keeps_the_committed_batches_only(index):
    def stream():
        for i in range(3):
            yield _embedded(f"/f{i}.wav", 2, i)
        raise KeyboardInterrupt  # the embedding side dies with a batch half full

    with pytest.raises(KeyboardInterrupt):
        commit_files(index, stream(), batch_size=2)
    assert index.paths() == ["/f0.wav", "/f1.wav"]
    assert [len(index.entries(p)) for p in index.paths()] == [2, 2]


def test_batch_size_must_be_positive(index):
    with pytest.raises(ValueError, match="batch_size=0"):
        commit_files(index, [], batch_size=0)
