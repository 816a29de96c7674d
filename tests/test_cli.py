"""The mmretrieve command end to end on a generated folder with images, videos, audio and corrupt files."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mmretrieve.cli import main

TINY = "tiny-random"


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory, media_factory):
    root = tmp_path_factory.mktemp("cli")
    media = str(root / "media")
    files = media_factory(media)
    index = str(root / "media.mmr")
    return media, files, index


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_search_info_end_to_end(cli_index, capsys):
    media, files, index = cli_index
    code, out, err = run(capsys, "index", media, "--index", index, "--preset", TINY, "--workers", "0", "--no-progress")
    assert code == 0, err
    assert "added 10 file(s), updated 0, unchanged 0, failed 3; 14 index entries written" in out
    for bad in files["bad"]:
        assert f"skipped {bad}: " in out
    assert "3 file(s) skipped" in err

    # re-running on the same folder embeds nothing
    code, out, _ = run(capsys, "index", media, "--index", index, "--no-progress", "--workers", "0")
    assert code == 0 and "added 0 file(s), updated 0, unchanged 10" in out and "0 index entries written" in out

    # --strict turns skipped files into a failing exit status
    code, _, _ = run(capsys, "index", files["bad"][0], "--index", index, "--no-progress", "--strict")
    assert code == 1

    code, out, _ = run(capsys, "search", index, "a dog", "--modality", "video", "-k", "5", "--json")
    hits = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(hits) == 5 and {h["modality"] for h in hits} == {"video"}
    long_windows = sorted((h["start"], h["end"]) for h in hits if h["path"].endswith("long.mp4"))
    assert long_windows == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]

    img = files["image"][2]
    code, out, _ = run(capsys, "search", index, "--file", img, "-k", "1")
    assert code == 0 and img in out.splitlines()[0] and "1.0000" in out

    code, out, _ = run(capsys, "search", index, "at night", "--file", img, "--modality", "image", "-k", "2")
    assert code == 0 and len(out.strip().splitlines()) == 2

    code, out, _ = run(capsys, "info", index, "--json")
    info = json.loads(out)
    assert info["counts"]["image"] == 4 and info["counts"]["video"] == 5 and info["counts"]["audio"] == 5
    assert info["preset"] == TINY and info["audio_trained"] is False
    assert info["factory"] == "auto" and info["structure"]["structure"] == "Flat" and info["structure"]["exact"]

    code, out, _ = run(capsys, "info", index)
    assert "UNTRAINED" in out and "tiny-random" in out
    assert "search:       Flat" in out and "exact while small" in out

    code, out, _ = run(capsys, "remove", index, files["video"][2])
    assert code == 0 and "removed 3 entries" in out


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    code, _, err = run(capsys, "search", str(tmp_path / "nope.mmr"), "x")
    assert code == 2 and "nope.mmr" in err and "Traceback" not in err
    code, _, err = run(capsys, "index", str(tmp_path / "missing"), "--index", str(tmp_path / "i.mmr"), "--preset", TINY)
    assert code == 2 and "missing" in err
    code, _, err = run(capsys, "index", str(tmp_path), "--index", str(tmp_path / "j.mmr"), "--preset", "no-such-preset")
    assert code == 2 and "no-such-preset" in err


def test_module_entry_point_runs(tmp_path):
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "mmretrieve", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "index" in out.stdout and "search" in out.stdout


def test_new_index_sampling_options_are_recorded(tmp_path, capsys):
    from mmretrieve.media.write import write_audio, write_video

    media = tmp_path / "m"
    media.mkdir()
    frames = (np.arange(40)[:, None, None, None] * 6 + np.zeros((1, 32, 32, 3))).astype(np.uint8)
    write_video(media / "clip.mp4", frames, 10.0)  # 4 s
    write_audio(media / "tone.wav", np.sin(np.arange(3 * 16000) / 9.0).astype(np.float32) * 0.3, 16000)  # 3 s
    index = str(tmp_path / "idx")
    code, out, err = run(capsys, "index", str(media), "--index", index, "--preset", TINY, "--workers", "0",
                         "--no-progress", "--frames", "3", "--window", "2", "--audio-window", "0",
                         "--keyframe-snap", "--video-head", "transformer")
    assert code == 0, err
    assert "video 2, audio 1" in out  # two 2-s video windows, the whole recording as one audio entry
    code, out, err = run(capsys, "info", index, "--json")
    info = json.loads(out)
    assert info["video_head"] == "transformer" and info["audio_window"] is None
    assert info["video_sampling"]["num_frames"] == 3 and info["video_sampling"]["window"] == 2.0
    assert info["video_sampling"]["keyframe_snap"] is True
    code, out, err = run(capsys, "index", str(media), "--index", index, "--frames", "4", "--no-progress")
    assert code == 2 and "--frames: only for a new index" in err


def test_vector_dtype_float16_is_recorded_and_only_for_a_new_index(cli_index, tmp_path, capsys):
    import mmretrieve as mmr

    media, _, _ = cli_index
    index = str(tmp_path / "half")
    code, out, err = run(capsys, "index", media, "--index", index, "--preset", TINY, "--workers", "0",
                         "--no-progress", "--vector-dtype", "float16")
    assert code == 0, err
    code, out, err = run(capsys, "info", index)
    assert "vectors:      stored as float16" in out
    with mmr.Retriever.load(index, num_workers=0) as r:
        assert r.info()["vector_dtype"] == "float16"
        image = next(p for p in r.index.paths() if p.endswith(".png"))
        stored = r.index.vectors([e.id for e in r.index.entries(image)])
        fresh = r.embed(pathlib.Path(image)).reshape(1, -1)
        np.testing.assert_array_equal(stored, fresh.astype(np.float16).astype(np.float32))
    code, out, err = run(capsys, "index", media, "--index", index, "--vector-dtype", "float32", "--no-progress")
    assert code == 2 and f"--vector-dtype: only for a new index; {index} keeps the precision it was created with" in err


def test_exact_below_is_recorded_for_a_new_index_and_refused_for_an_existing_one(cli_index, tmp_path, capsys):
    from mmretrieve.index import UnifiedIndex

    media, _, _ = cli_index
    index = str(tmp_path / "approx")
    code, out, err = run(capsys, "index", media, "--index", index, "--preset", TINY, "--workers", "0",
                         "--no-progress", "--exact-below", "3")
    assert code == 0, err
    with UnifiedIndex.open(index, readonly=True) as ix:
        assert ix.tuning.flat_below == 3 and ix.structure()["chosen_at"] == len(ix) >= 3
    code, out, err = run(capsys, "index", media, "--index", index, "--exact-below", "10", "--no-progress")
    assert code == 2 and "--exact-below/--rerank-dtype/--no-tune: only for a new index" in err


def test_command_line_starts_without_the_encoders():
    """`mmretrieve --help` (and parsing any command) never imports torch: it loads in a fraction of a second."""
    probe = ("import sys\nfrom mmretrieve.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "False"
