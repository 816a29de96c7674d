"""The demo's handlers and rendering, without a browser or a server."""
from __future__ import annotations

import argparse
import os
import shutil

import pytest

import mmretrieve as mmr
from mmretrieve.demo import (
    DemoBackend,
    allowed_media_paths,
    gallery_items,
    hits_html,
    media_url,
    parse_size,
    players_html,
    status_markdown,
)
from mmretrieve.demo.handlers import SearchResult
from mmretrieve.modality import Modality


@pytest.fixture
def backend(demo_retriever):
    return DemoBackend(demo_retriever, max_upload_bytes=1024**2)


def _hit(path, modality, score=0.5, start=None, end=None, metadata=None, id=1):
    return mmr.Hit(id=id, score=score, path=path, modality=Modality(modality), start=start, end=end, metadata=metadata or {})


def test_text_search_filters_modality_and_k(backend, demo_retriever):
    res = backend.text_search("a red circle", "image", 3)
    assert res.ok and len(res.hits) == 3
    assert all(h.modality is Modality.IMAGE for h in res.hits)
    assert [h.path for h in res.hits] == [h.path for h in demo_retriever.search("a red circle", modality="image", k=3)]
    line = status_markdown(res)
    assert "3 result(s)" in line and " ms**" in line


def test_text_search_windows_of_long_media(backend, demo_index):
    res = backend.text_search("a red square", "video", 20)
    windows = sorted((h.start, h.end) for h in res.hits if h.path == demo_index.long_video)
    assert windows == [(0.0, 10.0), (10.0, 12.0)]
    html = players_html(res.hits, "video")
    assert "long%20clip.mp4#t=10,12" in html and "window 10.0–12.0 s" in html
    audio = backend.text_search("a low tone", "audio", 20)
    assert sorted((h.start, h.end) for h in audio.hits if h.path == demo_index.long_sound) == [(0.0, 10.0), (10.0, 12.0)]
    assert "long.wav#t=10,12" in players_html(audio.hits, "audio")


def test_empty_text_is_a_message(backend):
    res = backend.text_search("   ", "image", 5)
    assert not res.ok and "Type a few words" in res.error
    assert status_markdown(res).startswith("⚠️")


def test_example_search_finds_the_uploaded_image_first(backend, demo_index, tmp_path):
    upload = tmp_path / "upload.png"
    shutil.copy(demo_index.images[2], upload)
    res = backend.example_search(str(upload), ["image", "video", "audio"], 5)
    assert res.ok, res.error
    assert res.hits[0].path == demo_index.images[2]
    assert res.hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_example_search_by_sound_and_clip(backend, demo_index):
    res = backend.example_search(demo_index.sounds[0], None, 3)
    assert res.ok and res.hits[0].path == demo_index.sounds[0]
    res = backend.example_search(demo_index.videos[1], ["video"], 3)
    assert res.ok and res.hits[0].path == demo_index.videos[1]


def test_bad_uploads_give_readable_messages(backend, corrupt_png, tmp_path):
    res = backend.example_search(corrupt_png, None, 5)
    assert not res.ok and "broken.png" in res.error and "Traceback" not in res.error
    assert "\n" not in res.error
    none = backend.example_search(None, None, 5)
    assert "Upload an image" in none.error
    odd = tmp_path / "notes.xyz"
    odd.write_text("hello")
    assert "not an image, video or audio" in backend.example_search(str(odd), None, 5).error
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert "empty" in backend.example_search(str(empty), None, 5).error
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (1024**2 + 1))
    assert "over the upload limit" in backend.example_search(str(big), None, 5).error
    gone = backend.example_search(str(tmp_path / "missing.png"), None, 5)
    assert not gone.ok and "can't be read" in gone.error


def test_composed_weight_zero_is_the_reference(backend, demo_index):
    res = backend.composed_search(demo_index.images[4], "in blue", 0.0, ["image"], 3)
    assert res.ok and res.hits[0].path == demo_index.images[4]
    mixed = backend.composed_search(demo_index.images[4], "in blue", 0.7, ["image"], 3)
    assert mixed.ok and len(mixed.hits) == 3 and "text weight 0.70" in mixed.query
    plain = backend.composed_search(demo_index.images[4], "x", 0.5, None, 2)  # any modality, a one-letter change
    assert plain.ok and not plain.error and len(plain.hits) == 2
    assert "Type the change" in backend.composed_search(demo_index.images[4], "", 0.5, None, 2).error
    assert "[0, 1]" in backend.composed_search(demo_index.images[4], "x", 1.5, None, 2).error


def test_composed_with_a_clip(backend, demo_index):
    res = backend.composed_search(demo_index.videos[0], "moving left", 0.0, ["video"], 2)
    assert res.ok and res.hits[0].path == demo_index.videos[0]


def test_unexpected_errors_are_not_tracebacks(demo_retriever):
    class Broken:
        def search(self, *a, **k):
            raise RuntimeError("boom\n  File x, line 1")

        def info(self):
            return {}

    res = DemoBackend(Broken()).text_search("hello", None, 3)
    assert not res.ok and "RuntimeError" in res.error and "boom" not in res.error


def test_stats_markdown(backend):
    text = backend.stats_markdown()
    assert "6 image" in text and "4 video" in text and "4 audio" in text  # long media have two windows each
    assert "tiny-random" in text and "untrained" in text
    assert "**Searchable:** text, image, video, audio" in text
    assert "sample corpus" in DemoBackend(backend.retriever, note="built from the sample corpus").stats_markdown()


def test_rendering_escapes_and_quotes():
    weird = "/media/a <b>&\"c\".mp4"
    hits = [
        _hit(weird, "video", 0.9, 3.0, 8.5),
        _hit("/media/p q.png", "image", 0.8, id=2),
        _hit(None, "text", 0.7, metadata={"text": "<i>caption</i>"}, id=3),
        _hit("/media/s.wav", "audio", 0.6, 0.0, 10.0, id=4),
    ]
    html = players_html(hits, "video")
    assert "a <b>" not in html and "a &lt;b&gt;&amp;&quot;c&quot;.mp4" in html
    assert "%3Cb%3E" in html and "#t=3,8.5" in html
    assert players_html(hits, "audio").count("<audio") == 1
    table = hits_html(hits)
    assert table.count('class="mmr-hit"') == 4 and "&lt;i&gt;caption&lt;/i&gt;" in table and "<i>" not in table
    assert gallery_items(hits) == [("/media/p q.png", "#2 · 0.800 · p q.png")]
    assert media_url("/m/a b.mp4", 10.0, 12.0) == "gradio_api/file=/m/a%20b.mp4#t=10,12"
    assert media_url("/m/x.png") == "gradio_api/file=/m/x.png"
    assert "No results" in hits_html([])
    assert "&lt;script&gt;" in status_markdown(SearchResult(error="<script>x</script>"))


def test_parse_size():
    assert parse_size("50mb") == 50 * 1024**2
    assert parse_size("2 GB") == 2 * 1024**3
    assert parse_size(1000) == 1000 and parse_size(None) is None
    with pytest.raises(ValueError, match="max_file_size"):
        parse_size("lots")
    with pytest.raises(ValueError):
        parse_size("-1mb")


def test_allowed_paths_are_exactly_the_indexed_files(demo_retriever, demo_index):
    allowed = allowed_media_paths(demo_retriever)
    expected = sorted(demo_index.images + demo_index.videos + demo_index.sounds + (demo_index.long_video, demo_index.long_sound))
    assert allowed == expected
    assert demo_index.stray not in allowed and all(os.path.isfile(p) for p in allowed)


def test_build_demo_and_tabs(demo_retriever):
    pytest.importorskip("gradio")
    import gradio as gr

    from mmretrieve.demo import TABS, build_demo

    demo = build_demo(demo_retriever, tabs=["text-image", "index"], examples={"image": ["a red circle"]})
    assert isinstance(demo, gr.Blocks)
    assert isinstance(build_demo(demo_retriever, examples=["anything"]), gr.Blocks)
    with pytest.raises(ValueError, match="choose from"):
        build_demo(demo_retriever, tabs=["nope"])
    assert "composed" in TABS


def test_cli_registration_defaults():
    from mmretrieve.commands import demo as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo"])
    assert args.host == "127.0.0.1" and args.port is None and args.share is False and args.index is None
    assert args.max_file_size == "50mb" and args.run is command.run
    args = parser.parse_args(["demo", "--index", "x.mmr", "--host", "0.0.0.0", "--port", "0", "--share", "--tabs", "composed"])
    assert (args.index, args.host, args.port, args.share, args.tabs) == ("x.mmr", "0.0.0.0", 0, True, "composed")


def test_sample_index_when_no_index_is_given(tmp_path):
    from mmretrieve.demo import build_sample_retriever
    from mmretrieve.models import list_presets

    shown = build_sample_retriever(tmp_path / "corpus", preset="tiny-random", n_images=3, n_videos=1, n_audio=1)
    try:
        assert shown.retriever.info()["counts"]["image"] == 3
        assert "tiny-random" in shown.note and "sample corpus" in shown.note
        assert set(shown.examples) == {"image", "video", "audio"}
        assert all(isinstance(e, str) and e for v in shown.examples.values() for e in v) and shown.examples["image"]
        assert all(p.startswith(str(tmp_path)) for p in allowed_media_paths(shown.retriever))
    finally:
        shown.close()
    auto = build_sample_retriever(tmp_path / "auto", n_images=2, n_videos=0, n_audio=0)
    try:  # "sample" when its weights load, else a tiny-random fallback that says why
        preset = auto.retriever.info()["preset"]
        assert preset in ("sample", "tiny-random")
        assert ("sample" in list_presets()) or preset == "tiny-random"
        assert preset in auto.note
    finally:
        auto.close()


def test_composed_by_inversion(backend, demo_index, tmp_path):
    import torch

    from mmretrieve.demo.handlers import DemoBackend
    from mmretrieve.models.inversion import TextualInversion, config_for

    # the tiny preset ships no network: the tab says so instead of failing
    res = backend.composed_search(demo_index.images[4], "in blue", 0.5, ["image"], 3, "inversion")
    assert not res.ok and "ships no inversion network" in res.error
    torch.manual_seed(0)
    path = TextualInversion(config_for(backend.retriever.encoder, hidden_dim=16)).save(tmp_path / "inv.safetensors")
    own = DemoBackend(backend.retriever, inversion=path)
    res = own.composed_search(demo_index.images[4], "in blue", 0.5, ["image"], 3, "inversion")
    assert res.ok and len(res.hits) == 3 and "textual inversion" in res.query
    want = backend.retriever.search(mmr.Composed(image=demo_index.images[4], text="in blue", method="inversion",
                                                 inversion=path), modality="image", k=3)
    assert [h.path for h in res.hits] == [h.path for h in want]
    res = own.composed_search(demo_index.videos[0], "moving left", 0.5, ["video"], 2, "inversion")
    assert res.ok and {h.modality.value for h in res.hits} == {"video"}


def test_composed_tab_starts_on_inversion_only_when_a_network_is_at_hand(backend, tmp_path):
    from mmretrieve.demo.handlers import DemoBackend

    assert backend.default_composed_method() == "arithmetic"  # tiny-random ships no network
    assert DemoBackend(backend.retriever, inversion=str(tmp_path / "inv.safetensors")).default_composed_method() == \
        "inversion"
    sample = mmr.Retriever.create("sample")
    try:
        assert DemoBackend(sample).default_composed_method() == "inversion"  # the sample model ships one
    finally:
        sample.close()
