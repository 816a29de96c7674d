"""How the server listens and what it allows."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServeConfig", "DEFAULT_MAX_UPLOAD", "DEFAULT_TIMEOUT"]

DEFAULT_MAX_UPLOAD = 50 * 1024**2
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class ServeConfig:
    """Server settings.

    ``max_upload_bytes`` bounds each request body (uploads included); ``timeout`` bounds the work of one
    request (reading its body and running its search) in seconds; ``concurrency`` is how many searches
    run at once (more wait). Writes (add, remove) are refused unless ``allow_writes`` and then need
    ``Authorization: Bearer <token>``.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    allow_writes: bool = False
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = 4
    max_k: int = 1000

    def __post_init__(self) -> None:
        if self.allow_writes and not self.token:
            raise ValueError("allow_writes needs a bearer token (--token-file or MMRETRIEVE_TOKEN)")
        if self.token is not None and len(self.token) < 16:
            raise ValueError("the bearer token must be at least 16 characters")
        if self.max_upload_bytes <= 0:
            raise ValueError(f"max_upload_bytes={self.max_upload_bytes} must be positive")
        if not self.timeout > 0:
            raise ValueError(f"timeout={self.timeout} must be positive seconds")
        if self.concurrency < 1:
            raise ValueError(f"concurrency={self.concurrency} must be >= 1")
        if self.max_k < 1:
            raise ValueError(f"max_k={self.max_k} must be >= 1")
