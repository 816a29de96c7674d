"""Fixtures for the distributed tests: a small local Ray (2 CPUs) per module, Milvus Lite files in tmp."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray tests need the extra: pip install 'mmretrieve[ray]'")
    pytest.importorskip("ray.data", reason="Ray tests need Ray Data: pip install 'mmretrieve[ray]'")
    started = not ray.is_initialized()
    if started:
        for attempt in (1, 2):
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
                break
            except Exception as exc:  # Ray waits a fixed 30 s for its raylet: a loaded machine can miss it once
                ray.shutdown()
                if attempt == 2 or "timed out during startup" not in str(exc):
                    raise
    yield ray
    if started:
        ray.shutdown()
