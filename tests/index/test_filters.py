"""Search filters as SQL: what each filter selects from a real SQLite table of JSON metadata, that
user keys and values only ever travel as parameters, and the exact errors for what cannot match."""
from __future__ import annotations

import json
import math
import sqlite3

import pytest

from mmretrieve.index.filters import MAX_FILTER_KEY_LENGTH, build_filter, normalize_modalities
from mmretrieve.modality import Modality

ROWS = [  # id, modality, metadata
    (1, "image", {"a": "x", "n": 1, "flag": True}),
    (2, "image", {"a": "1", "n": 1.0, "flag": False}),
    (3, "audio", {"a": 1, "n": 2.5, "flag": None}),
    (4, "video", {"a": None, "n": True, "other": "x"}),
    (5, "text", {"n": 0, "flag": 1, "x'); DROP TABLE items; --": "boom"}),
    (6, "audio", {"a": "y", "n": -3, "list": ["x"]}),
]


@pytest.fixture(scope="module")
def db():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, modality TEXT, metadata TEXT)")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, m, json.dumps(md)) for i, m, md in ROWS])
    yield conn
    conn.close()


def _select(db, modality=None, where=None) -> list[int]:
    built = build_filter(modality, where)
    if built is None:
        return [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    clause, params = built
    return [r[0] for r in db.execute(f"SELECT id FROM items WHERE {clause} ORDER BY id", params)]


# ---------------------------------------------------------------------------------------- modalities
def test_normalize_modalities():
    assert normalize_modalities(None) is None
    assert normalize_modalities("Image ") == ("image",)
    assert normalize_modalities(Modality.AUDIO) == ("audio",)
    assert normalize_modalities(["video", Modality.IMAGE, "VIDEO"]) == ("video", "image")  # order kept, once each
    assert normalize_modalities(m for m in ("text",)) == ("text",)


@pytest.mark.parametrize("modality, message", [
    ([], r"^modality=\[\] selects nothing; pass None for every modality$"),
    (5, r"^modality=5 must be a modality name or a sequence of them$"),
    (["image", "smell"], r"^modality='smell' is not a modality; choose one of: "),
    ("smell", r"^modality='smell' is not a modality"),
])
def test_bad_modalities_are_refused(modality, message):
    with pytest.raises(ValueError, match=message):
        normalize_modalities(modality)


def test_modality_filter_selects_those_modalities(db):
    assert build_filter() is None and build_filter(None, {}) is None
    assert _select(db, "audio") == [3, 6]
    assert _select(db, ["video", "text", "video"]) == [4, 5]
    assert build_filter(["video", "text"]) == ("modality IN (?,?)", ["video", "text"])


# ---------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("where, ids", [
    ({"a": "x"}, [1]),
    ({"a": "1"}, [2]),  # the string "1", not the number
    ({"a": 1}, [3]),  # the number, not the string
    ({"n": 1}, [1, 2]),  # 1 and 1.0 are the same number
    ({"n": 2.5}, [3]),
    ({"n": -3}, [6]),
    ({"n": True}, [4]),  # a JSON true is not the number 1
    ({"flag": False}, [2]),
    ({"flag": 1}, [5]),  # ... and the number 1 is not true
    ({"a": None}, [4]),  # JSON null; a missing key is not null
    ({"flag": None}, [3]),
    ({"a": ["x", 1, None]}, [1, 3, 4]),  # a list is "any of", each value type-exact
    ({"a": ["x", "y", "z"]}, [1, 6]),
    ({"flag": [True, False]}, [1, 2]),
    ({"n": [2.5, -3, 7]}, [3, 6]),
    ({"a": ("y",), "n": {-3, 2.5}}, [6]),  # keys combine with AND
    ({"n": frozenset([0, True])}, [4, 5]),
    ({"a": []}, []),  # an empty list matches nothing
    ({"list": "x"}, []),  # an array is not a string
    ({"missing": "x"}, []),
])
def test_where_selects_exactly_the_matching_rows(db, where, ids):
    assert _select(db, where=where) == ids


def test_modality_and_where_combine(db):
    assert _select(db, "image", {"n": 1}) == [1, 2]
    assert _select(db, ["audio", "video"], {"a": [1, None, "x"]}) == [3, 4]
    assert _select(db, "text", {"a": []}) == []


def test_keys_and_values_only_travel_as_parameters(db):
    hostile_key = "x'); DROP TABLE items; --"
    hostile_value = "boom' OR '1'='1"
    clause, params = build_filter("text", {hostile_key: [hostile_value, "boom"], "with space": 3})
    assert hostile_key not in clause and hostile_value not in clause and "boom" not in clause
    assert f'$."{hostile_key}"' in params and hostile_value in params and '$."with space"' in params
    assert _select(db, where={hostile_key: "boom"}) == [5]
    assert _select(db, where={hostile_key: hostile_value}) == []
    assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == len(ROWS)


# ---------------------------------------------------------------------------------------- errors
def test_where_must_be_a_mapping():
    with pytest.raises(ValueError, match=r"^where=\[\('a', 1\)\] must be a mapping of metadata key -> value$"):
        build_filter(where=[("a", 1)])


@pytest.mark.parametrize("key, message", [
    ("", r"^where key '' must be a non-empty string$"),
    (3, r"^where key 3 must be a non-empty string$"),
    ("k" * (MAX_FILTER_KEY_LENGTH + 1), r"^where key 'k{32}'\.\.\. is longer than 256 characters$"),
    ('say "hi"', r"""^where key 'say "hi"' must not contain quotes, backslashes or control characters$"""),
    ("back\\slash", "must not contain quotes, backslashes or control characters"),
    ("tab\there", "must not contain quotes, backslashes or control characters"),
    ("unit\x1fsep", "must not contain quotes, backslashes or control characters"),
])
def test_keys_that_cannot_be_a_json_path_are_refused(key, message):
    with pytest.raises(ValueError, match=message):
        build_filter(where={key: 1})


def test_the_longest_key_and_printable_keys_are_accepted(db):
    assert MAX_FILTER_KEY_LENGTH == 256
    assert _select(db, where={"k" * 256: 1}) == []
    assert _select(db, where={" ": 1, "ü.~": 2, "X-ray": 3}) == []  # space, letters and non-ASCII are fine


@pytest.mark.parametrize("value, message", [
    (math.nan, r"^where\['n'\]=nan: NaN/inf can never match stored JSON$"),
    ([1, -math.inf], r"^where\['n'\]=-inf: NaN/inf can never match stored JSON$"),
    ("a\x00b", r"^where\['n'\]='a\\x00b': metadata strings never hold NUL characters$"),
    (b"raw", r"^where\['n'\] value b'raw' of type bytes is not supported; use str, int, float, bool, None or a "
             r"list of them$"),
    ([{"x": 1}], r"^where\['n'\] value \{'x': 1\} of type dict is not supported"),
])
def test_values_that_can_never_match_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        build_filter(where={"n": value})
