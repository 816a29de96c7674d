"""mmretrieve.Client against a live server: the same queries give exactly the hits Retriever.search gives."""
from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import mmretrieve as mmr
from mmretrieve import Composed, Query
from mmretrieve.demo.serve import free_port

pytest.importorskip("uvicorn")


def _queries(files):
    img, clip, sound = files["image"][2], files["video"][1], files["audio"][1]
    return [
        ("a red circle", {}),
        ("a red circle", {"modality": "image", "k": 3}),
        ("shapes", {"modality": ["text", "image"], "where": {"album": ["shapes", "music"]}, "k": 7}),
        (pathlib.Path(img), {"k": 5}),
        (pathlib.Path(clip), {"modality": "video"}),
        (Query.audio(sound), {"k": 4}),
        (Composed(image=img, text="at night", weight=0.25), {"k": 6}),
        (Query.image(img) - Query.text("day") + Query.text("night") * 0.5, {}),
        (["a blue square", pathlib.Path(sound)], {"k": 3}),
    ]


def test_client_search_equals_retriever_search(served, live_url):
    r, files = served
    client = mmr.Client(live_url)
    for query, kwargs in _queries(files):
        assert client.search(query, **kwargs) == r.search(query, **kwargs), (query, kwargs)


def test_client_get_info_health_and_media_url(served, live_url):
    r, files = served
    client = mmr.Client(live_url)
    hit = r.search(pathlib.Path(files["image"][0]), k=1)[0]
    got = client.get(hit.id)
    assert (got.id, got.path, got.modality) == (hit.id, hit.path, hit.modality)
    assert client.health() == {"status": "ok", "entries": len(r)}
    assert client.info()["counts"] == r.info()["counts"]
    assert client.media_url(hit) == f"{live_url}/media/{hit.id}"


def test_client_errors_are_typed_and_name_the_reason(served, live_url, tmp_path):
    client = mmr.Client(live_url)
    with pytest.raises(mmr.RequestRejectedError, match="where key") as e:
        client.search("x", where={"": 1})
    assert e.value.status == 422
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(mmr.RequestRejectedError, match=r"upload 'file0' \('broken.png'\): cannot be read as media"):
        client.search(pathlib.Path(bad))
    with pytest.raises(mmr.RequestRejectedError, match="writes are disabled") as e:
        client.add(texts=["x"])
    assert e.value.status == 403
    with pytest.raises(TypeError, match="cannot send a int query"):
        client.search(3)


def test_concurrent_client_searches_match_sequential_ones(served, live_url):
    r, files = served
    client = mmr.Client(live_url)
    queries = [q for q, _ in _queries(files)[:8]] * 3
    expected = [r.search(q, k=5) for q in queries]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda q: client.search(q, k=5), queries))
    assert got == expected


def _wait_for(url: str, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()}")
        try:
            mmr.Client(url, timeout=2).health()
            return
        except (OSError, mmr.ServerError):
            time.sleep(0.2)
    raise AssertionError("server did not answer /health in time")


def test_serve_command_runs_a_real_uvicorn_process(served, tmp_path):
    """`python -m mmretrieve serve INDEX` in its own process: loopback bind, search, raw traversal refused."""
    r, files = served
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "mmretrieve", "serve", r.index.path, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(url, proc)
        client = mmr.Client(url)
        path = pathlib.Path(files["image"][0])
        assert client.search(path, k=4) == r.search(path, k=4)
        with socket.create_connection(("127.0.0.1", port)) as s:  # a raw request no HTTP library normalises
            s.sendall(b"GET /files/../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 400") and b"path traversal" in reply
        listening = [c for c in _listeners(port)]
        assert listening == ["127.0.0.1"]
    finally:
        proc.terminate()
        proc.wait(20)


def _listeners(port: int) -> list[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp{,6})."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                out.append(socket.inet_ntoa(bytes.fromhex(addr)[::-1]) if len(addr) == 8 else "ipv6")
    return out


def test_searches_run_while_the_api_adds_entries(tmp_path):
    """Writes through the API and concurrent searches: no errors, every answer is whole and ranked."""
    import threading

    import uvicorn

    from mmretrieve.server import ServeConfig
    from mmretrieve.server.app import create_app

    token = "writer-token-0123456789"
    with mmr.Retriever.create("tiny-random", path=str(tmp_path / "rw.mmr"), num_workers=0) as r:
        r.add([f"seed text {i}" for i in range(5)], modality="text", progress=False)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(r, ServeConfig(port=port, allow_writes=True, token=token)),
                                               host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_for_thread(server)
            writer, reader = mmr.Client(url, token=token), mmr.Client(url)
            answers, errors = [], []

            def search_loop():
                for i in range(15):
                    try:
                        answers.append(reader.search(f"text {i}", k=8, modality="text"))
                    except Exception as e:  # noqa: BLE001 - collected and asserted below
                        errors.append(e)

            searchers = [threading.Thread(target=search_loop) for _ in range(3)]
            for t in searchers:
                t.start()
            for batch in range(4):
                report = writer.add(texts=[f"batch {batch} text {j}" for j in range(4)])
                assert len(report["ids"]) == 4
            for t in searchers:
                t.join(120)
            assert errors == []
            assert len(answers) == 45
            for hits in answers:
                assert 5 <= len(hits) <= 8 and len({h.id for h in hits}) == len(hits)
                assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            assert reader.health()["entries"] == 21
        finally:
            server.should_exit = True
            thread.join(10)


def _wait_for_thread(server, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not server.started:
        if time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)


def test_serve_refuses_writes_without_a_token(tmp_path, capsys, monkeypatch):
    from mmretrieve.cli import main

    monkeypatch.delenv("MMRETRIEVE_TOKEN", raising=False)
    code = main(["serve", str(tmp_path / "any.mmr"), "--allow-writes"])
    assert code == 2 and "allow_writes needs a bearer token" in capsys.readouterr().err
    (tmp_path / "short").write_text("abc\n")
    code = main(["serve", str(tmp_path / "any.mmr"), "--allow-writes", "--token-file", str(tmp_path / "short")])
    assert code == 2 and "at least 16 characters" in capsys.readouterr().err
