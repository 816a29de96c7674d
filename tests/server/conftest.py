"""A small indexed folder served in-process (ASGI test client) and by a uvicorn thread (for the Client)."""
from __future__ import annotations

import threading
import time

import pytest

from mmretrieve.demo.serve import free_port
from mmretrieve.server import ServeConfig
from mmretrieve.server.app import create_app

@pytest.fixture(scope="package")
def served(tmp_path_factory, media_factory):
    """(retriever, files) over a saved tiny-random index: the media folder plus three tagged texts."""
    import mmretrieve as mmr

    root = tmp_path_factory.mktemp("served")
    files = media_factory(str(root / "media"))
    r = mmr.Retriever.create("tiny-random", path=str(root / "index.mmr"), num_workers=0)
    r.add(str(root / "media"), progress=False)
    r.add(["a red circle", "a blue square"], modality="text", metadata={"album": "shapes"}, progress=False)
    r.add(["a quiet flute"], modality="text", metadata={"album": "music"}, progress=False)
    r.save()
    yield r, files
    r.close()


@pytest.fixture(scope="package")
def live_url(served):
    """The served index on a uvicorn server running in a thread of this process (read-only)."""
    import uvicorn

    r, _ = served
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(r, ServeConfig(port=port)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
