"""The HTTP API in-process (ASGI test client): every route, every refusal with its status and reason."""
from __future__ import annotations

import json
import os
import pathlib
import time

import pytest
from fastapi.testclient import TestClient

from mmretrieve import Composed, Query
from mmretrieve.server import ServeConfig, hit_to_dict
from mmretrieve.server.app import create_app

TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def api(served):
    r, files = served
    with TestClient(create_app(r, ServeConfig())) as client:
        yield client, r, files


def _same(got: list, hits: list) -> None:
    assert got == [hit_to_dict(h) for h in hits]


def _upload(path: str, name: str = "file0") -> tuple:
    return (name, (os.path.basename(path), open(path, "rb").read(), "application/octet-stream"))


def test_health_and_info(api):
    client, r, _ = api
    assert client.get("/health").json() == {"status": "ok", "entries": len(r)}
    info = client.get("/info").json()
    assert info["counts"] == r.info()["counts"]
    assert info["server"]["writes"] is False


def test_openapi_schema_lists_every_route(api):
    client, _, _ = api
    schema = client.get("/openapi.json").json()
    assert {"/search", "/items/{item_id}", "/media/{item_id}", "/files/{file_path}", "/info", "/health",
            "/items", "/remove"} <= set(schema["paths"])
    body = schema["paths"]["/search"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}


def test_text_search_with_modality_k_where_matches_the_retriever(api):
    client, r, _ = api
    got = client.post("/search", json={"query": {"text": "a red circle"}, "k": 3, "modality": "image"}).json()
    _same(got, r.search("a red circle", k=3, modality="image"))
    got = client.post("/search", json={"query": {"text": "shapes"}, "modality": ["text"], "where": {"album": "shapes"}}).json()
    _same(got, r.search("shapes", modality=["text"], where={"album": "shapes"}))
    assert {h["metadata"]["album"] for h in got} == {"shapes"} and len(got) == 2
    got = client.get("/search", params={"q": "a flute", "k": 2, "modality": "text"}).json()
    _same(got, r.search("a flute", k=2, modality="text"))


def test_upload_search_matches_the_retriever_and_own_file_is_first(api):
    client, r, files = api
    path = files["image"][1]
    got = client.post("/search", data={"request": json.dumps({"query": {"upload": "file0"}, "k": 4})},
                      files=[_upload(path)]).json()
    _same(got, r.search(pathlib.Path(path), k=4))
    assert got[0]["path"] == path


def test_composed_arithmetic_and_batch_queries(api):
    client, r, files = api
    img, clip = files["image"][0], files["video"][0]
    body = {"query": [
        {"composed": {"reference": {"upload": "a"}, "text": "at night", "weight": 0.3}},
        {"terms": [{"weight": 1.0, "query": {"upload": "b", "modality": "video"}},
                   {"weight": -0.5, "query": {"text": "day"}}]},
        {"text": "a blue square"},
    ], "k": 5}
    got = client.post("/search", data={"request": json.dumps(body)}, files=[_upload(img, "a"), _upload(clip, "b")]).json()
    expected = r.search([Composed(image=img, text="at night", weight=0.3),
                         Query.video(clip) * 1.0 - Query.text("day") * 0.5, "a blue square"], k=5)
    assert len(got) == 3
    for row, hits in zip(got, expected):
        _same(row, hits)


def test_item_lookup_and_unknown_id(api):
    client, r, files = api
    hit = r.search(pathlib.Path(files["audio"][0]), k=1)[0]
    got = client.get(f"/items/{hit.id}").json()
    assert got["path"] == hit.path and got["score"] is None and got["modality"] == "audio"
    missing = client.get("/items/987654")
    assert missing.status_code == 404 and "987654" in missing.json()["detail"]


def test_media_streaming_with_range_requests(api):
    client, r, files = api
    path = files["video"][2]  # long.mp4: several windows
    hits = [h for h in r.search(pathlib.Path(path), k=50, modality="video") if h.path == path]
    window = next(h for h in hits if h.start and h.start > 0)
    data = open(path, "rb").read()
    whole = client.get(f"/media/{window.id}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/media/{window.id}", headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == data[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(data)}"
    assert hit_to_dict(window)["media_url"] == f"/media/{window.id}#t={window.start:g},{window.end:g}"
    by_path = client.get("/files" + path, headers={"Range": "bytes=0-3"})
    assert by_path.status_code == 206 and by_path.content == data[:4]


def test_media_of_a_text_entry_is_404(api):
    client, r, _ = api
    text_hit = r.search("a quiet flute", modality="text", k=1)[0]
    resp = client.get(f"/media/{text_hit.id}")
    assert resp.status_code == 404 and "in-memory" in resp.json()["detail"]


@pytest.mark.parametrize("url", [
    "/files/%2e%2e/%2e%2e/etc/passwd",
    "/files/tmp/%2e%2e/etc/passwd",
    "/files/tmp/%2e/x.jpg",
    "/files/tmp/..%5c..%5cetc/passwd",
])
def test_path_traversal_in_media_urls_is_400(api, url):
    client, _, _ = api
    resp = client.get(url)
    assert resp.status_code == 400 and "traversal" in resp.json()["detail"]


def test_files_outside_the_index_are_404(api, tmp_path):
    client, _, files = api
    other = tmp_path / "secret.jpg"
    other.write_bytes(open(files["image"][0], "rb").read())
    for path in (str(other), "/etc/passwd", files["bad"][0]):
        resp = client.get("/files" + path)
        assert resp.status_code == 404 and "not a file of this index" in resp.json()["detail"]


def test_bad_json_is_400(api):
    client, _, _ = api
    resp = client.post("/search", content=b'{"query": {"text": "x"', headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["detail"]
    resp = client.post("/search", data={"request": "{oops"}, files=[("f", ("a.jpg", b"x", "image/jpeg"))])
    assert resp.status_code == 400 and "'request' field is not valid JSON" in resp.json()["detail"]


@pytest.mark.parametrize("body, words", [
    ({"query": {"text": "x"}, "modality": "smell"}, "'smell' is not a modality"),
    ({"query": {"text": "x"}, "k": 0}, "k=0 must be an integer"),
    ({"query": {"text": "x"}, "k": 5000}, "k=5000"),
    ({"query": {"text": "x"}, "where": {"album": {"nested": 1}}}, "where"),
    ({"query": {"upload": "nothing"}}, "names no uploaded file part"),
    ({"query": {"text": "x", "upload": "f"}}, "exactly one of"),
    ({"query": {"terms": [{"weight": 1, "query": {"text": "a"}}, {"weight": -1, "query": {"text": "a"}}]}}, "cancel out"),
    ({"quer": {"text": "x"}}, "unknown field"),
])
def test_invalid_search_requests_are_422_with_the_reason(api, body, words):
    client, _, _ = api
    resp = client.post("/search", json=body)
    assert resp.status_code == 422 and words in resp.json()["detail"]


def test_unreadable_upload_is_422_naming_it(api):
    client, _, files = api
    request = json.dumps({"query": {"upload": "file0"}})
    resp = client.post("/search", data={"request": request},
                       files=[("file0", ("holiday.jpg", b"not an image at all", "image/jpeg"))])
    assert resp.status_code == 422
    assert resp.json()["detail"].startswith("upload 'file0' ('holiday.jpg'): cannot be read as media")
    resp = client.post("/search", data={"request": request}, files=[("file0", ("notes.xyz", b"abc", "text/plain"))])
    assert resp.status_code == 422 and "unknown media extension" in resp.json()["detail"]
    resp = client.post("/search", data={"request": request}, files=[("file0", ("empty.jpg", b"", "image/jpeg"))])
    assert resp.status_code == 422 and "is empty" in resp.json()["detail"]


def test_unsupported_content_type_is_415(api):
    client, _, _ = api
    resp = client.post("/search", content=b"q=x", headers={"content-type": "text/plain"})
    assert resp.status_code == 415


def test_oversized_bodies_are_413(served):
    r, files = served
    with TestClient(create_app(r, ServeConfig(max_upload_bytes=2000))) as client:
        big = open(files["video"][2], "rb").read()
        assert len(big) > 2000
        resp = client.post("/search", data={"request": json.dumps({"query": {"upload": "f"}})},
                           files=[("f", ("long.mp4", big, "video/mp4"))])
        assert resp.status_code == 413 and "limit of 2000 bytes" in resp.json()["detail"]

        def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(10):
                yield b" " * 500

        resp = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
        assert resp.status_code == 413 and "limit of 2000 bytes" in resp.json()["detail"]
        assert client.post("/search", json={"query": {"text": "ok"}}).status_code == 200


class _Slow:
    """A retriever whose searches take 2 s (through the public search method only)."""

    def __init__(self, inner):
        self._inner = inner
        self.index = inner.index

    def search(self, *args, **kwargs):
        time.sleep(2.0)
        return self._inner.search(*args, **kwargs)


def test_request_timeout_is_504(served):
    r, _ = served
    with TestClient(create_app(_Slow(r), ServeConfig(timeout=0.3))) as client:
        t0 = time.monotonic()
        resp = client.post("/search", json={"query": {"text": "slow"}})
        assert resp.status_code == 504 and "0.3 s timeout" in resp.json()["detail"]
        assert time.monotonic() - t0 < 1.5


def test_writes_are_off_by_default(api):
    client, _, _ = api
    resp = client.post("/items", json={"texts": ["x"]}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 403 and "--allow-writes" in resp.json()["detail"]
    assert client.post("/remove", json={"ids": [1]}).status_code == 403


def test_writes_need_the_bearer_token(tmp_path, media_factory):
    import mmretrieve as mmr

    files = media_factory(str(tmp_path / "m"), corrupt=False)
    with mmr.Retriever.create("tiny-random", path=str(tmp_path / "w.mmr"), num_workers=0) as r:
        with TestClient(create_app(r, ServeConfig(allow_writes=True, token=TOKEN))) as client:
            body = {"paths": files["image"][:2], "texts": ["a green triangle"], "metadata": {"who": "api"}}
            assert client.post("/items", json=body).status_code == 401
            wrong = client.post("/items", json=body, headers={"Authorization": "Bearer wrong-token-000000000"})
            assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong bearer token"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            bad = client.post("/items", content=b"[1,", headers={**auth, "content-type": "application/json"})
            assert bad.status_code == 400
            report = client.post("/items", json=body, headers=auth).json()
            assert sorted(report["added"]) == sorted(files["image"][:2]) and len(report["ids"]) == 3
            assert len(r) == 3
            hits = client.post("/search", json={"query": {"text": "green"}, "where": {"who": "api"}, "k": 5}).json()
            assert len(hits) == 3
            removed = client.post("/remove", json={"paths": [files["image"][0]], "ids": [report["ids"][-1]]}, headers=auth)
            assert removed.json() == {"removed": 2} and len(r) == 1
        with mmr.Retriever.load(str(tmp_path / "w.mmr"), readonly=True) as saved:
            assert len(saved) == 1  # writes were saved


def test_write_token_must_be_given_when_writes_are_on():
    with pytest.raises(ValueError, match="bearer token"):
        ServeConfig(allow_writes=True)


def test_dedup_reaches_the_search(api):
    client, r, _ = api
    got = client.post("/search", json={"query": {"text": "a red circle"}, "k": 4, "dedup": 0.9}).json()
    _same(got, r.search("a red circle", k=4, dedup=0.9))
    resp = client.post("/search", json={"query": {"text": "x"}, "dedup": 2})
    assert resp.status_code == 422 and "dedup=2" in resp.json()["detail"]
