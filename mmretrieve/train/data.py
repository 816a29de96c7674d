"""Training data: (caption, media) pairs per modality, batched as a pure function of the step.

Media go through the embedding route (``mmretrieve.embedding``: the same decoding, sampling and
deterministic preprocessing as indexing and evaluation; shard members are decoded from their bytes,
read with one seek into the shard). A long item is all its windows: the trainer encodes every window
and pools them (``pool_windows``) into the item's vector, so training hears every window as
evaluation does. With ``data.augment`` the route's seeded augmentation instead gives each item one
random audio crop / video window with random frame times, drawn from ``(seed, task, step, item)``.

The only other randomness is which caption an item uses at a step, and the order of items; both are
drawn from generators seeded by ``(seed, task, step or cycle)``, so batch ``s`` is the same whether
a run started at 0 or resumed at ``s`` — exact resume needs no sampler state. Under DDP each rank
takes its slice of the global batch.
"""
from __future__ import annotations

import hashlib
import os
import random
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mmretrieve.data.common import Sample
from mmretrieve.embedding import Preparer, collate, source_of_sample
from mmretrieve.modality import Modality, modality_of_path

__all__ = ["PairSet", "Batch", "TaskStream", "load_pairs", "collate", "folder_samples", "batch_order", "split_items"]


@dataclass(frozen=True)
class PairSet:
    """The items of one modality with their captions (``samples[i].captions``)."""

    modality: Modality
    samples: tuple[Sample, ...]

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class Batch:
    """One contrastive batch of a task on this rank.

    ``media`` holds every window of every item, collated; ``owners[w]`` is the item (row of
    ``captions``) window ``w`` belongs to. ``precomputed``: ``media`` is instead the items' stored
    L2-normalised vectors (N, D) (inversion runs from an index, ``train.index_data``).
    """

    modality: Modality
    media: Any  # images (W,3,S,S) | (frames (W,T,3,S,S), mask (W,T)) | mels (W,1,M,F)
    captions: tuple[str, ...]
    item_keys: tuple[int, ...]  # equal keys = the same item (multi-positive)
    indices: tuple[int, ...]
    owners: tuple[int, ...] = ()
    precomputed: bool = False


def _seed_int(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little")


def batch_order(n_units: int, global_batch: int, per_cycle: int, seed: int, task: str, step: int) -> list[int]:
    """The units of the global batch at ``step``: a fresh seeded permutation per cycle (epoch)."""
    cycle, pos = divmod(step, per_cycle)
    g = torch.Generator().manual_seed(_seed_int("order", seed, task, cycle) % (2**63))
    perm = torch.randperm(n_units, generator=g).tolist()
    return perm[pos * global_batch:(pos + 1) * global_batch]


class TaskStream:
    """An endless, seeded stream of batches of one task; ``batch(step)`` is a pure function of step.

    A cycle (an epoch) visits every unit once in a fresh permutation (``cycle = step // batches_per_cycle``);
    the last incomplete batch of a cycle is dropped (a set smaller than the batch is one batch). With
    ``epoch="items"`` a unit is an item, captioned by a seeded draw among its captions at each step;
    with ``epoch="captions"`` a unit is one (item, caption) pair (CLIP4Clip's expanded sentences).
    ``preparer`` is the embedding route's; with an ``augment`` its windows are drawn per step and
    never cached.
    """

    def __init__(self, pairs: PairSet, preparer: Preparer, *, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, cache: bool = True, num_workers: int = 0,
                 epoch: str = "items") -> None:
        if len(pairs) < 2:
            raise ValueError(f"{pairs.modality.value}: need at least 2 training items, got {len(pairs)}")
        if epoch not in ("items", "captions"):
            raise ValueError(f"epoch={epoch!r}: choose 'items' or 'captions'")
        self.pairs, self.preparer = pairs, preparer
        self.sources = [source_of_sample(s) for s in pairs.samples]
        self.epoch = epoch
        # unit u -> (item, caption index); caption index -1 = drawn per step
        if epoch == "captions":
            self._units = [(i, c) for i, s in enumerate(pairs.samples) for c in range(len(s.captions))]
        else:
            self._units = [(i, -1) for i in range(len(pairs))]
        self.global_batch = min(batch_size * world_size, len(self._units))
        if self.global_batch % world_size:
            self.global_batch -= self.global_batch % world_size
        if self.global_batch < world_size:
            raise ValueError(f"{pairs.modality.value}: {len(self._units)} training {epoch} cannot fill one batch per rank")
        self.per_cycle = max(1, len(self._units) // self.global_batch)
        self.seed, self.rank, self.world = seed, rank, world_size
        self.task = pairs.modality.value
        self.augmenting = preparer.augment is not None
        self._cache: dict[int, list[torch.Tensor]] | None = {} if cache and not self.augmenting else None
        self.num_workers = num_workers
        self._pool = None

    def __len__(self) -> int:
        return self.per_cycle

    @property
    def units(self) -> int:
        """How many units one epoch visits (items, or (item, caption) pairs)."""
        return len(self._units)

    def global_units(self, step: int) -> list[int]:
        """The units of the global batch at ``step``."""
        return batch_order(len(self._units), self.global_batch, self.per_cycle, self.seed, self.task, step)

    def global_indices(self, step: int) -> list[int]:
        """The items of the global batch at ``step`` (an item may repeat with ``epoch="captions"``)."""
        return [self._units[u][0] for u in self.global_units(step)]

    def caption(self, step: int, index: int) -> str:
        caps = self.pairs.samples[index].captions
        if not caps:  # caption-less items (data.kind=folder) train inversion runs, which read no captions
            return ""
        return caps[random.Random(_seed_int("caption", self.seed, self.task, step, index)).randrange(len(caps))]

    def _unit_caption(self, step: int, unit: int) -> str:
        index, c = self._units[unit]
        return self.caption(step, index) if c < 0 else self.pairs.samples[index].captions[c]

    def _decode(self, step: int, index: int) -> list[torch.Tensor]:
        draw = (self.task, step, index) if self.augmenting else ()
        return self.preparer.prepare(self.sources[index], draw=draw).tensors

    def windows(self, step: int, index: int) -> list[torch.Tensor]:
        """The preprocessed windows item ``index`` contributes at ``step`` (all of them unless augmenting)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        t = self._decode(step, index)
        if self._cache is not None:
            self._cache[index] = t
        return t

    def _windows_of(self, step: int, indices: list[int]) -> list[list[torch.Tensor]]:
        missing = list(dict.fromkeys(i for i in indices if self._cache is None or i not in self._cache))
        if self.num_workers > 0 and len(missing) > 1:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.num_workers)  # decoders release the GIL
            decoded = dict(zip(missing, self._pool.map(lambda j: self._decode(step, j), missing)))
            if self._cache is None:
                return [decoded[i] for i in indices]
            self._cache.update(decoded)
        return [self.windows(step, i) for i in indices]

    def batch(self, step: int) -> Batch:
        units = self.global_units(step)
        per = len(units) // self.world
        my_units = units[self.rank * per:(self.rank + 1) * per]
        mine = [self._units[u][0] for u in my_units]
        captions = tuple(self._unit_caption(step, u) for u in my_units)
        per_item = self._windows_of(step, mine)
        flat = [t for ws in per_item for t in ws]
        owners = tuple(row for row, ws in enumerate(per_item) for _ in ws)
        return Batch(self.pairs.modality, collate(self.pairs.modality, flat), captions, tuple(mine), tuple(mine),
                     owners)

    def warm(self) -> None:
        """Decode every item once (fills the cache; nothing to do when augmenting or not caching)."""
        if self._cache is not None:
            self._windows_of(0, list(range(len(self.pairs))))


def split_items(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) positions of ``n`` items: a seeded ``fraction`` held out (at least one, never all)."""
    if fraction <= 0 or n < 2:
        return list(range(n)), []
    rng = random.Random(_seed_int("split", seed))
    order = list(range(n))
    rng.shuffle(order)
    k = min(max(1, round(n * fraction)), n - 1)
    held = set(order[:k])
    return [i for i in range(n) if i not in held], [i for i in range(n) if i in held]


def _split(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    tr, va = split_items(len(samples), fraction, seed)
    return [samples[i] for i in tr], [samples[i] for i in va]


def synthetic_samples(items) -> list[Sample]:
    """SyntheticItems as reader Samples (attributes and mentions kept in metadata)."""
    return [Sample(path=it.path, modality=it.modality, captions=tuple(it.captions), item_id=os.path.basename(it.path),
                   metadata={"attributes": dict(it.attributes), "mentions": [dict(m) for m in it.mentions]})
            for it in items]


def load_pairs(data, seed: int = 0) -> tuple[dict[str, PairSet], dict[str, PairSet]]:
    """(train, val) pair sets per task from a :class:`~mmretrieve.train.config.DataConfig`."""
    kind = data.kind
    tasks = [Modality(t) for t in data.tasks]
    train: list[Sample] = []
    val: list[Sample] = []
    if kind == "synthetic":
        from mmretrieve.data.synthetic import load_corpus, make_corpus, split_corpus

        if data.root is None:
            raise ValueError("data.root: the folder for the synthetic corpus is required")
        manifest = os.path.join(data.root, "manifest.jsonl")
        opts = dict(data.synthetic)
        if os.path.isfile(manifest) and not opts.pop("regenerate", False):
            corpus = load_corpus(manifest)
        else:
            opts.pop("regenerate", None)
            corpus = make_corpus(data.root, **opts)
            corpus.write_manifest(manifest, ground_truth=True)
        tr, va = split_corpus(corpus, data.val_fraction, seed=seed)
        train, val = synthetic_samples(tr.items), synthetic_samples(va.items)
    elif kind == "manifest":
        from mmretrieve.data.manifest import read_manifest

        ds = read_manifest(data.root, skip_missing=data.skip_missing)
        _warn_skipped(ds.skipped, "manifest row")
        for m in tasks:
            a, b = _split([s for s in ds.samples if s.modality is m], data.val_fraction, seed)
            train += a
            val += b
    elif kind == "shards":
        train, val = _read_shards(data, tasks, seed)
    elif kind == "folder":
        for m in tasks:
            a, b = _split([s for s in folder_samples(data.root) if s.modality is m], data.val_fraction, seed)
            train += a
            val += b
    else:
        train, val = _read_official(data, seed)
    out_train = {m.value: PairSet(m, tuple(s for s in train if s.modality is m)) for m in tasks}
    out_val = {m.value: PairSet(m, tuple(s for s in val if s.modality is m)[: data.max_val_items or None])
               for m in tasks}
    empty = [k for k, v in out_train.items() if len(v) == 0]
    if empty:
        raise ValueError(f"data: no training items for task(s) {empty} in {kind} data at {data.root}")
    return out_train, out_val


def folder_samples(root: str | None) -> list[Sample]:
    """Every media file under ``root`` (recursively, sorted, modality from the extension), without captions."""
    if not root or not os.path.isdir(root):
        raise ValueError(f"data.root={root!r}: data.kind=folder needs an existing folder of images or clips")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.abspath(os.path.join(dirpath, name))
            m = modality_of_path(path)
            if m is not None and m is not Modality.TEXT:
                out.append(Sample(path=path, modality=m, captions=(), item_id=os.path.relpath(path, root)))
    return out


# (train, validation) splits; never a test split for validation (config.TEST_SPLITS)
_DEFAULT_SPLITS = {"coco": ("karpathy-train", "karpathy-val"), "msrvtt": ("train-9k", "none"),
                   "clotho": ("development", "validation")}


def _read_official(data, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    from mmretrieve.data import clotho, coco, msrvtt

    reader = {"coco": coco.read_coco, "msrvtt": msrvtt.read_msrvtt, "clotho": clotho.read_clotho}[data.kind]
    tr_split, va_split = _DEFAULT_SPLITS[data.kind]
    train = reader(data.root, split=data.train_split or tr_split, skip_missing=data.skip_missing)
    va_split = data.val_split or va_split
    skipped = list(train.skipped)
    samples = list(train.samples)
    if va_split == "none":
        val: list[Sample] = []
    elif va_split == "holdout":
        samples, val = _split(samples, data.val_fraction, seed)
    else:
        vds = reader(data.root, split=va_split, skip_missing=data.skip_missing)
        skipped += vds.skipped
        val = list(vds.samples)
    _warn_skipped(skipped, f"{data.kind} item")
    return samples, val


def _warn_skipped(skipped: Sequence[tuple[str, str]], what: str) -> None:
    """One warning listing what ``data.skip_missing`` left out (the first five, and how many)."""
    if skipped:
        shown = "; ".join(f"{item}: {reason}" for item, reason in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        warnings.warn(f"data.skip_missing: left out {len(skipped)} unusable {what}(s): {shown}{more}", stacklevel=4)


def _read_shards(data, tasks: Sequence[Modality], seed: int) -> tuple[list[Sample], list[Sample]]:
    """Index ``data.root`` (and ``data.val_root``) shards; without val_root hold out a seeded
    ``val_fraction`` of each task's samples, as for a manifest."""
    from mmretrieve.data.shards import expand_pattern, index_shards

    if not data.root:
        raise ValueError("data.root: a pattern of tar shards is required for data.kind=shards "
                         "(e.g. /data/shards-{0000..0099}.tar)")
    if data.val_root:
        both = sorted({os.path.abspath(p) for p in expand_pattern(data.root)}
                      & {os.path.abspath(p) for p in expand_pattern(data.val_root)})
        if both:
            raise ValueError(f"data.val_root: {len(both)} shard(s) are also in data.root (e.g. {both[0]}); "
                             f"validation shards must be held out of training")
    ds = index_shards(data.root, skip_missing=data.skip_missing)
    skipped = list(ds.skipped)
    samples = [s for s in ds.samples if s.modality in tasks]
    if data.val_root:
        vds = index_shards(data.val_root, skip_missing=data.skip_missing)
        skipped += vds.skipped
        train, val = samples, [s for s in vds.samples if s.modality in tasks]
    else:
        train, val = [], []
        for m in tasks:
            a, b = _split([s for s in samples if s.modality is m], data.val_fraction, seed)
            train += a
            val += b
    _warn_skipped(skipped, "shard sample")
    if data.cache and len(train) > _LARGE_CACHE:
        warnings.warn(f"data.cache is true: all {len(train)} training samples are decoded before the first "
                      f"step and kept in memory; set data.cache=false for shard sets larger than memory",
                      stacklevel=3)
    return train, val


_LARGE_CACHE = 50_000
