"""Fixtures of the reliability tests (helpers live in rel_helpers, importable from any test folder)."""
from __future__ import annotations

import pytest
from rel_helpers import make_image_folder


@pytest.fixture(scope="session")
def image_folder_300(tmp_path_factory) -> tuple[str, list[str]]:
    root = str(tmp_path_factory.mktemp("imgs300"))
    return root, make_image_folder(root, 300)
