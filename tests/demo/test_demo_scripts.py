"""The apps in demos/: public API only, and each one answers --help."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

DEMOS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "demos")
SCRIPTS = sorted(f for f in os.listdir(DEMOS) if f.endswith(".py"))
PUBLIC = {"mmretrieve", "mmretrieve.demo"}


def test_there_is_a_combined_app_and_per_task_apps():
    assert {"app.py", "text_to_image.py", "text_to_video.py", "text_to_audio.py", "search_by_example.py", "composed.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_uses_only_the_public_api(script):
    tree = ast.parse(open(os.path.join(DEMOS, script), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmretrieve"):
            pytest.fail(f"{script}: `from {node.module} import ...`; use `import mmretrieve` / `import mmretrieve.demo`")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mmretrieve"):
                    assert alias.name in PUBLIC, f"{script}: imports {alias.name}"
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            pytest.fail(f"{script}: uses the private name {node.attr}")


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    out = subprocess.run([sys.executable, os.path.join(DEMOS, script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--index" in out.stdout and "--host" in out.stdout and "--share" in out.stdout and "--port" in out.stdout
