"""The launched server (in-process, no browser): loopback, only indexed media served, uploads size-limited."""
from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

import pytest

gr = pytest.importorskip("gradio")

from mmretrieve.demo import LaunchOptions, build_demo, launch  # noqa: E402


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def _post_upload(base: str, size: int) -> int:
    boundary = "mmrboundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
        "Content-Type: image/png\r\n\r\n"
    ).encode() + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(
        base + "gradio_api/upload", data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def served(demo_retriever):
    demo = build_demo(demo_retriever, tabs=["text-image"], max_upload_bytes=100_000)
    url = launch(demo, demo_retriever, LaunchOptions(max_file_size=100_000, quiet=True), block=False)
    yield url
    demo.close()


def file_url(base: str, path: str) -> str:
    return base + "gradio_api/file=" + urllib.parse.quote(path, safe="/")


def test_binds_loopback_on_a_free_port(served):
    assert served.startswith("http://127.0.0.1:") and not served.endswith(":7860/")
    assert _get(served) == 200


def test_only_indexed_media_are_served(served, demo_index):
    assert _get(file_url(served, demo_index.images[0])) == 200
    assert _get(file_url(served, demo_index.long_video)) == 200  # a space in the name
    assert _get(file_url(served, "/etc/passwd")) == 403
    assert _get(file_url(served, demo_index.stray)) == 403  # beside the media, not indexed
    assert _get(file_url(served, demo_index.root + "/images/../../../../../etc/passwd")) == 403
    assert _get(file_url(served, demo_index.index)) == 403  # the index folder itself
    assert _get(served + "gradio_api/file=pyproject.toml") == 403  # nothing from the working directory


def test_upload_size_limit(served):
    assert _post_upload(served, 200_000) == 413
    assert _post_upload(served, 1_000) == 200


def test_busy_port_is_a_readable_error(served, demo_retriever):
    port = int(served.rstrip("/").rsplit(":", 1)[1])
    demo = build_demo(demo_retriever, tabs=["index"])
    with pytest.raises(ValueError, match="cannot serve there"):
        launch(demo, demo_retriever, LaunchOptions(port=port, quiet=True), block=False)
