"""mmretrieve search output options: --json (JSON Lines), --paths-only, --copy-to, --link-to, --dedup."""
from __future__ import annotations

import filecmp
import json
import os

import pytest

import mmretrieve as mmr
from mmretrieve.cli import main


@pytest.fixture(scope="module")
def index(tmp_path_factory, media_factory):
    root = tmp_path_factory.mktemp("search-out")
    files = media_factory(str(root / "media"), corrupt=False)
    path = str(root / "i.mmr")
    with mmr.Retriever.create("tiny-random", path=path, num_workers=0) as r:
        r.add(str(root / "media"), progress=False)
        r.save()
    return path, files


def _expected(path, **kwargs):
    with mmr.Retriever.load(path, readonly=True) as r:
        return r.search("a dog", **kwargs)


def test_json_prints_one_object_per_hit(index, capsys):
    path, _ = index
    assert main(["search", path, "a dog", "-k", "6", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    hits = _expected(path, k=6)
    assert len(lines) == 6
    for rank, (line, hit) in enumerate(zip(lines, hits), 1):
        obj = json.loads(line)
        assert obj == {"rank": rank, "id": hit.id, "score": hit.score, "path": hit.path, "modality": hit.modality.value,
                       "start": hit.start, "end": hit.end, "metadata": hit.metadata}


def test_paths_only_prints_each_file_once_in_rank_order(index, capsys):
    path, files = index
    assert main(["search", path, "a dog", "-k", "14", "--paths-only"]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = list(dict.fromkeys(h.path for h in _expected(path, k=14)))
    assert out == expected and len(out) == len(set(out))
    assert sorted(out) == sorted(files["image"] + files["video"] + files["audio"])  # 14 entries = all 10 files


def test_copy_to_and_link_to_gather_the_hits(index, tmp_path, capsys):
    path, _ = index
    hits = list(dict.fromkeys(h.path for h in _expected(path, k=4, modality="image")))
    copies, links = tmp_path / "copies", tmp_path / "links"
    assert main(["search", path, "a dog", "-k", "4", "-m", "image", "--copy-to", str(copies)]) == 0
    assert f"copied 4 file(s) into {copies}" in capsys.readouterr().err
    names = sorted(os.listdir(copies))
    assert names == [f"{i:02d}-{os.path.basename(p)}" for i, p in enumerate(hits, 1)]
    assert all(filecmp.cmp(copies / n, p, shallow=False) and not os.path.islink(copies / n) for n, p in zip(names, hits))
    # a second run reuses identical files; a different file already there is never overwritten
    (copies / names[0]).write_bytes(b"someone else's file")
    assert main(["search", path, "a dog", "-k", "4", "-m", "image", "--copy-to", str(copies)]) == 0
    stem, ext = os.path.splitext(names[0])
    assert sorted(os.listdir(copies)) == sorted(names + [f"{stem}-2{ext}"])
    assert (copies / names[0]).read_bytes() == b"someone else's file"
    assert main(["search", path, "a dog", "-k", "4", "-m", "image", "--link-to", str(links)]) == 0
    assert [os.readlink(links / n) for n in sorted(os.listdir(links))] == hits


def test_output_options_exclude_each_other(index, capsys):
    path, _ = index
    with pytest.raises(SystemExit):
        main(["search", path, "x", "--json", "--paths-only"])
    with pytest.raises(SystemExit):
        main(["search", path, "x", "--copy-to", "a", "--link-to", "b"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_dedup_option_reaches_the_search(index, capsys):
    path, _ = index
    assert main(["search", path, "a dog", "-k", "5", "--dedup", "0.5", "--json"]) == 0
    got = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert got == [h.id for h in _expected(path, k=5, dedup=0.5)]
