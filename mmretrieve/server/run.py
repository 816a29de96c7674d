"""Start the API under uvicorn."""
from __future__ import annotations

from typing import Any

import uvicorn

from .app import create_app
from .config import ServeConfig

__all__ = ["serve"]


def serve(retriever: Any, config: ServeConfig = ServeConfig(), *, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C). One process: the encoder is loaded once and shared by every request."""
    uvicorn.run(create_app(retriever, config), host=config.host, port=config.port, log_level=log_level,
                timeout_keep_alive=5)
