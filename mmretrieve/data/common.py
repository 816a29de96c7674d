"""Types shared by the dataset readers: a sample, a dataset, and the error that lists every problem.

Readers collect problems (missing files, unknown columns, captions pointing at absent media) instead of
stopping at the first one, so a user fixes a broken layout in one round. With ``skip_missing=True`` the
per-item problems become ``Dataset.skipped`` entries and the reader returns what is usable.
"""
from __future__ import annotations

import csv
import json
import os
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

from mmretrieve.errors import MMRError
from mmretrieve.modality import Modality

__all__ = ["Sample", "Dataset", "DatasetError", "FlatCaptions"]

_SHOWN_PROBLEMS = 25


@dataclass(frozen=True)
class Sample:
    """One media item and its captions. ``path`` is absolute (or a shard member, see shards.py)."""

    path: str
    modality: Modality
    captions: tuple[str, ...]
    item_id: str
    metadata: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class FlatCaptions:
    """Every caption of a dataset in order, with the index of the sample it describes."""

    captions: tuple[str, ...]
    caption_to_item: tuple[int, ...]


@dataclass(frozen=True)
class Dataset:
    """The samples of one split; ``skipped`` holds (what, reason) for items left out by ``skip_missing``."""

    name: str
    split: str
    samples: tuple[Sample, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    @property
    def num_captions(self) -> int:
        return sum(len(s.captions) for s in self.samples)

    def flat_captions(self) -> FlatCaptions:
        """All captions, and for each the index of its sample: the input of ``evaluate_pair``."""
        caps: list[str] = []
        owner: list[int] = []
        for i, s in enumerate(self.samples):
            caps.extend(s.captions)
            owner.extend([i] * len(s.captions))
        return FlatCaptions(tuple(caps), tuple(owner))

    def summary(self) -> str:
        text = f"{self.name} {self.split}: {len(self.samples)} items, {self.num_captions} captions"
        if self.skipped:
            text += f", {len(self.skipped)} skipped"
        return text


class DatasetError(MMRError, ValueError):
    """A dataset layout is wrong; ``problems`` lists every problem found, not just the first."""

    def __init__(self, name: str, problems: Sequence[str], hint: str | None = None):
        self.name = name
        self.problems = tuple(problems)
        self.hint = hint
        shown = "\n".join(f"  - {p}" for p in self.problems[:_SHOWN_PROBLEMS])
        more = len(self.problems) - _SHOWN_PROBLEMS
        if more > 0:
            shown += f"\n  ... and {more} more (see DatasetError.problems)"
        n = len(self.problems)
        msg = f"{name}: {n} problem{'s' if n != 1 else ''} found:\n{shown}"
        if hint:
            msg += f"\n{hint}"
        super().__init__(msg)


# ----------------------------------------------------------------------------------------- helpers
class _Problems:
    """Collects fatal problems and per-item problems (skippable) while a reader runs."""

    def __init__(self, name: str, hint: str | None = None):
        self.name = name
        self.hint = hint
        self.fatal: list[str] = []
        self.items: list[tuple[str, str]] = []

    def add(self, message: str) -> None:
        self.fatal.append(message)

    def item(self, what: str, reason: str) -> None:
        self.items.append((what, reason))

    def raise_fatal(self) -> None:
        if self.fatal:
            raise DatasetError(self.name, self.fatal, self.hint)

    def finish(self, skip_missing: bool) -> tuple[tuple[str, str], ...]:
        """Raise for everything unless skipping; then return the skipped items."""
        if self.fatal or (self.items and not skip_missing):
            problems = self.fatal + [f"{what}: {reason}" for what, reason in self.items]
            hint = self.hint
            if self.items and not skip_missing:
                extra = "Pass skip_missing=True to leave these items out and get them in Dataset.skipped."
                hint = f"{hint}\n{extra}" if hint else extra
            raise DatasetError(self.name, problems, hint)
        return tuple(self.items)


def _load_json(path: str, problems: _Problems) -> object | None:
    if not os.path.isfile(path):
        problems.add(f"{path}: file not found")
        return None
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.add(f"{path}: not valid UTF-8 JSON ({e})")
        return None


def _read_csv(
    path: str,
    problems: _Problems,
    required: Iterable[str],
    allowed: Iterable[str] | None = None,
    delimiter: str = ",",
) -> list[dict[str, str]] | None:
    """Rows of a UTF-8 CSV with a header; missing required / unknown columns are problems.

    Unnamed columns (an exported index: "" or "Unnamed: 0") are ignored.
    """
    if not os.path.isfile(path):
        problems.add(f"{path}: file not found")
        return None
    try:
        with open(path, "r", encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            try:
                header = next(reader)
            except StopIteration:
                problems.add(f"{path}: empty file (expected a header row)")
                return None
            rows = list(reader)
    except UnicodeDecodeError as e:
        problems.add(f"{path}: not valid UTF-8 ({e})")
        return None
    except csv.Error as e:
        problems.add(f"{path}: malformed CSV ({e})")
        return None
    header = [h.strip() for h in header]
    named = [h for h in header if h and not h.startswith("Unnamed:")]
    required = list(required)
    missing = [c for c in required if c not in named]
    ok = True
    if missing:
        problems.add(f"{path}: missing column(s) {', '.join(missing)}; found columns {', '.join(named) or '(none)'}")
        ok = False
    if allowed is not None:
        allowed_set = set(allowed) | set(required)
        unknown = [c for c in named if c not in allowed_set]
        if unknown:
            problems.add(
                f"{path}: unknown column(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed_set))}"
            )
            ok = False
    if not ok:
        return None
    out = []
    for lineno, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(header):
            problems.add(f"{path}, line {lineno}: {len(row)} fields, header has {len(header)}")
            continue
        out.append({h: v for h, v in zip(header, row) if h})
    return out


def _find_file(directory: str, name: str, listing_cache: dict[str, dict[str, str]] | None = None) -> str | None:
    """``directory/name`` if it exists, also when the file system stores the name in another Unicode
    normal form (macOS NFD vs Linux NFC); otherwise None."""
    path = os.path.join(directory, name)
    if os.path.isfile(path):
        return path
    if listing_cache is None:
        listing_cache = {}
    listing = listing_cache.get(directory)
    if listing is None:
        try:
            listing = {unicodedata.normalize("NFC", n): n for n in os.listdir(directory)}
        except OSError:
            listing = {}
        listing_cache[directory] = listing
    real = listing.get(unicodedata.normalize("NFC", name))
    if real is not None and os.path.isfile(os.path.join(directory, real)):
        return os.path.join(directory, real)
    return None


def _first_existing(candidates: Iterable[str], kind: str = "file") -> str | None:
    for c in candidates:
        if (kind == "file" and os.path.isfile(c)) or (kind == "dir" and os.path.isdir(c)):
            return c
    return None
