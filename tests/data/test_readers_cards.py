"""Every dataset card in datasets/ names reader calls and splits that exist."""
from __future__ import annotations

import importlib
import inspect
import pathlib
import re

import pytest

CARDS = pathlib.Path(__file__).resolve().parents[2] / "datasets"
_SPLITS = {"read_coco": "COCO_SPLITS", "read_msrvtt": "MSRVTT_SPLITS", "read_clotho": "CLOTHO_SPLITS"}


def _cards() -> list[pathlib.Path]:
    return sorted(CARDS.glob("*.md"))


def test_cards_exist():
    names = {p.stem for p in _cards()}
    assert {"coco", "msrvtt", "clotho", "manifest", "shards"} <= names


@pytest.mark.parametrize("card", _cards(), ids=lambda p: p.name)
def test_card_resolves(card):
    text = card.read_text(encoding="utf-8")
    imports = re.findall(r"from (mmretrieve\.data\.\w+) import (\w+)", text)
    assert imports, f"{card.name} shows no reader import"
    for module, func in imports:
        fn = getattr(importlib.import_module(module), func)
        assert callable(fn)
        for kw in re.findall(rf"{func}\([^)]*?(\w+)=", text):
            assert kw in inspect.signature(fn).parameters, f"{card.name}: {func} has no argument {kw}"
        if func in _SPLITS:
            valid = getattr(importlib.import_module(module), _SPLITS[func])
            used = set(re.findall(rf'{func}\([^)]*split="([^"]+)"', text)) | set(re.findall(r"^\| `([\w-]+)`", text, re.M))
            used |= {s for row in re.findall(r"^\| `([\w-]+)` / `([\w-]+)`(?: / `([\w-]+)`)?", text, re.M) for s in row if s}
            assert used, f"{card.name} names no split"
            assert used <= set(valid), f"{card.name}: unknown splits {sorted(used - set(valid))}"
