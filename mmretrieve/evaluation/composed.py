"""Composed retrieval metrics and a synthetic composed benchmark with exact ground truth.

The synthetic benchmark (``mmretrieve.data.synthetic``): a gallery holding exactly one item per
attribute combination; a query is a reference item plus a modification of ONE attribute
("make it blue"); the answer is the single item with the new value and every other attribute kept.
Some combinations are held out (``holdout_combinations``): a mapping network trained on the other
combinations is evaluated on queries whose reference and target are both held out.

``composed_recall`` is the CIRR protocol: the reference itself is removed from the ranking, then
Recall@K of the one target.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from itertools import product
from typing import Mapping, Sequence

import numpy as np

from mmretrieve.data.synthetic import VOCABULARY, SyntheticItem
from mmretrieve.modality import Modality, parse_modality

from .protocols import COMPOSED_PROTOCOLS

__all__ = [
    "ComposedTriplet",
    "MODIFIED_ATTRIBUTES",
    "modification_text",
    "combination",
    "holdout_combinations",
    "composed_triplets",
    "composed_recall",
    "rank_gallery",
    "cirr_metrics",
    "cirr_submission",
    "fashioniq_metrics",
    "fashioniq_average",
    "embed_image_files",
    "compose_vectors",
    "evaluate_composed_split",
    "COMPOSED_PROTOCOLS",
    "run_composed_protocol",
    "write_cirr_submission",
]

#: Attributes a synthetic composed query changes, per modality.
MODIFIED_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "image": ("colour", "size", "position", "shape"),
    "video": ("colour", "direction", "shape"),
}

_POSITION = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
             "centre": "in the centre"}
_DIRECTION = {"left": "to the left", "right": "to the right", "up": "upwards", "down": "downwards"}


def modification_text(modality: Modality | str, attribute: str, value: str) -> str:
    """The words of a one-attribute change: "make it blue", "make it small", "move it to the left" ..."""
    m = parse_modality(modality, "modality")
    if attribute in ("colour", "size"):
        return f"make it {value}"
    if attribute == "shape":
        return f"make it a {value}"
    if attribute == "position" and m is Modality.IMAGE:
        return f"move it {_POSITION[value]}"
    if attribute == "direction" and m is Modality.VIDEO:
        return f"make it move {_DIRECTION[value]}"
    raise ValueError(f"no modification text for {m.value} attribute {attribute!r}")


def combination(modality: Modality | str, attributes: Mapping[str, str]) -> tuple[str, ...]:
    """The attribute values in the vocabulary's order."""
    m = parse_modality(modality, "modality")
    return tuple(attributes[k] for k in VOCABULARY[m.value])


def holdout_combinations(modality: Modality | str, fraction: float, seed: int = 0) -> frozenset[tuple[str, ...]]:
    """A seeded ``fraction`` of all attribute combinations of a modality."""
    m = parse_modality(modality, "modality")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction={fraction}: must be in (0, 1)")
    combos = list(product(*VOCABULARY[m.value].values()))
    rng = random.Random(f"composed-holdout:{m.value}:{seed}")
    return frozenset(rng.sample(combos, max(1, round(len(combos) * fraction))))


@dataclass(frozen=True)
class ComposedTriplet:
    """Reference index + modification text -> target index (indices into the gallery)."""

    reference: int
    target: int
    text: str
    attribute: str
    value: str


def composed_triplets(gallery: Sequence[SyntheticItem], *, only: frozenset[tuple[str, ...]] | None = None,
                      attributes: Sequence[str] | None = None) -> list[ComposedTriplet]:
    """Every one-attribute change between gallery items of one modality, with its exact answer.

    The gallery must hold each attribute combination at most once (so the answer is unique).
    ``only``: keep queries whose reference and target combinations are both in this set.
    """
    if not gallery:
        return []
    m = gallery[0].modality
    if any(it.modality is not m for it in gallery):
        raise ValueError("composed_triplets: the gallery must hold one modality")
    where: dict[tuple[str, ...], int] = {}
    for i, it in enumerate(gallery):
        c = combination(m, it.attributes)
        if c in where:
            raise ValueError(f"{it.path}: combination {c} appears twice in the gallery; the answer would not be unique")
        where[c] = i
    keys = list(VOCABULARY[m.value])
    attrs = tuple(attributes) if attributes is not None else MODIFIED_ATTRIBUTES[m.value]
    out = []
    for i, it in enumerate(gallery):
        ref = combination(m, it.attributes)
        if only is not None and ref not in only:
            continue
        for a in attrs:
            pos = keys.index(a)
            for v in VOCABULARY[m.value][a]:
                if v == ref[pos]:
                    continue
                tgt = ref[:pos] + (v,) + ref[pos + 1:]
                if tgt in where and (only is None or tgt in only):
                    out.append(ComposedTriplet(i, where[tgt], modification_text(m, a, v), a, v))
    return out


def rank_gallery(queries: np.ndarray, gallery: np.ndarray, references: Sequence[int]) -> np.ndarray:
    """(Q, G) gallery indices by decreasing similarity, each query's reference removed (last column -1)."""
    sims = np.asarray(queries, np.float32) @ np.asarray(gallery, np.float32).T
    sims[np.arange(len(references)), np.asarray(references)] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")
    return order[:, :-1]


def composed_recall(queries: np.ndarray, gallery: np.ndarray, references: Sequence[int], targets: Sequence[int],
                    ks: Sequence[int] = (1, 5, 10, 50)) -> dict[str, float]:
    """Recall@K (percent) of each query's single target, the reference excluded from the ranking."""
    if len(queries) != len(references) or len(references) != len(targets):
        raise ValueError(f"composed_recall: {len(queries)} queries, {len(references)} references, {len(targets)} targets")
    if not len(queries):
        raise ValueError("composed_recall: no queries")
    order = rank_gallery(queries, gallery, references)
    hit = order == np.asarray(targets)[:, None]
    if not np.all(hit.sum(axis=1) == 1):
        raise ValueError("composed_recall: a target equals its reference or is not in the gallery")
    rank = hit.argmax(axis=1)
    return {f"R@{k}": float(np.mean(rank < k) * 100) for k in ks if k <= order.shape[1]}


# ------------------------------------------------------------------------------------ CIRR / FashionIQ
def cirr_metrics(queries: np.ndarray, gallery: np.ndarray, names: Sequence[str], split) -> dict[str, float]:
    """CIRR's Recall@{1,5,10,50} (whole split, reference removed) and Recall_subset@{1,2,3} (the query's
    image set, reference removed), in percent, for composed query vectors in ``split.queries`` order."""
    pos = {n: i for i, n in enumerate(names)}
    qs = [q for q in split.queries]
    if any(q.target is None for q in qs):
        raise ValueError(f"CIRR {split.split}: targets are hidden; write a submission with cirr_submission()")
    refs = [pos[q.reference] for q in qs]
    out = composed_recall(queries, gallery, refs, [pos[q.target] for q in qs], ks=(1, 5, 10, 50))
    sub_ranks = []
    sims = np.asarray(queries, np.float32) @ np.asarray(gallery, np.float32).T
    for row, q in enumerate(qs):
        members = [m for m in dict.fromkeys(q.members) if m != q.reference and m in pos]
        if q.target not in members:
            raise ValueError(f"CIRR pairid {q.pairid}: target {q.target} is not in its image set {list(q.members)}")
        scores = np.array([sims[row, pos[m]] for m in members])
        order = [members[i] for i in np.argsort(-scores, kind="stable")]
        sub_ranks.append(order.index(q.target))
    sub = np.asarray(sub_ranks)
    for k in (1, 2, 3):
        out[f"Recall_subset@{k}"] = float(np.mean(sub < k) * 100)
    out["R@5+Rs@1"] = (out["R@5"] + out["Recall_subset@1"]) / 2  # the benchmark's headline average
    return out


def cirr_submission(queries: np.ndarray, gallery: np.ndarray, names: Sequence[str], split) -> dict[str, dict]:
    """The two files CIRR's test server takes: ``recall`` (top 50 per pairid, reference removed) and
    ``recall_subset`` (top 3 of the query's image set, reference removed)."""
    pos = {n: i for i, n in enumerate(names)}
    refs = [pos[q.reference] for q in split.queries]
    order = rank_gallery(queries, gallery, refs)
    sims = np.asarray(queries, np.float32) @ np.asarray(gallery, np.float32).T
    recall = {"version": "rc2", "metric": "recall"}
    subset = {"version": "rc2", "metric": "recall_subset"}
    for row, q in enumerate(split.queries):
        recall[str(q.pairid)] = [names[j] for j in order[row, :50]]
        members = [m for m in dict.fromkeys(q.members) if m != q.reference and m in pos]
        scores = np.array([sims[row, pos[m]] for m in members])
        subset[str(q.pairid)] = [members[i] for i in np.argsort(-scores, kind="stable")[:3]]
    return {"recall": recall, "recall_subset": subset}


def fashioniq_metrics(queries: np.ndarray, gallery: np.ndarray, names: Sequence[str], split) -> dict[str, float]:
    """FashionIQ R@10 and R@50 (percent) over the category's gallery (the reference is not removed)."""
    pos = {n: i for i, n in enumerate(names)}
    sims = np.asarray(queries, np.float32) @ np.asarray(gallery, np.float32).T
    order = np.argsort(-sims, axis=1, kind="stable")
    targets = np.array([pos[q.target] for q in split.queries])
    rank = (order == targets[:, None]).argmax(axis=1)
    return {"R@10": float(np.mean(rank < 10) * 100), "R@50": float(np.mean(rank < 50) * 100)}


def embed_image_files(encoder, paths: Sequence[str], *, batch_size: int = 32, raw: bool = False) -> np.ndarray:
    """(N, D) image vectors of files through the encoder's preprocessing; ``raw`` = the image tower's
    unnormalised output (the input of Pic2Word's network)."""
    import torch

    from mmretrieve.media.image import load_image
    from mmretrieve.models.inversion import reference_features

    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            pixels = torch.stack([encoder.preprocess_image(load_image(p)) for p in paths[start:start + batch_size]])
            out.append(reference_features(encoder, pixels, "raw" if raw else "normalized").float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)


def compose_vectors(encoder, references: np.ndarray, texts: Sequence[str], *, method: str = "arithmetic",
                    weight: float = 0.5, inversion=None, template: str | None = None,
                    reference_raw: np.ndarray | None = None, batch_size: int = 64) -> np.ndarray:
    """Composed query vectors (N, D) for normalised reference vectors and modification texts.

    arithmetic: normalise((1 - weight) * ref + weight * text). inversion: ``inversion`` (a
    TextualInversion) composes; a network taking raw features needs ``reference_raw``.
    """
    import torch

    texts = list(texts)
    if method == "arithmetic":
        with torch.inference_mode():
            tv = np.concatenate([encoder.encode_text(texts[i:i + batch_size]).cpu().numpy()
                                 for i in range(0, len(texts), batch_size)])
        fused = (1.0 - weight) * np.asarray(references, np.float32) + weight * tv
        return fused / np.linalg.norm(fused, axis=1, keepdims=True)
    if method != "inversion":
        raise ValueError(f"method={method!r}: choose arithmetic or inversion")
    if inversion is None:
        raise ValueError("method='inversion' needs inversion=<TextualInversion>")
    src = references
    if inversion.config.input == "raw":
        if reference_raw is None:
            raise ValueError(f"inversion network {inversion.source} takes raw image-tower features: pass reference_raw")
        src = reference_raw
    parts = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            x = torch.from_numpy(np.asarray(src[i:i + batch_size], np.float32))
            parts.append(inversion.compose(encoder, x, texts[i:i + batch_size], template).cpu().numpy())
    return np.concatenate(parts)


def evaluate_composed_split(encoder, split, *, kind: str, method: str = "arithmetic", weight: float = 0.5,
                            inversion=None, template: str | None = None) -> dict:
    """Metrics of a CIRR (``kind="cirr"``, val/train) or FashionIQ (``kind="fashioniq"``) split, or the CIRR
    test submission (``kind="cirr"`` on test1)."""
    names = list(split.images)
    gallery = embed_image_files(encoder, [split.images[n] for n in names])
    if kind == "cirr":
        ref_paths = [split.images[q.reference] for q in split.queries]
        texts = [q.caption for q in split.queries]
    elif kind == "fashioniq":
        ref_paths = [q.reference_path for q in split.queries]
        texts = [q.text for q in split.queries]
    else:
        raise ValueError(f"kind={kind!r}: cirr or fashioniq")
    refs = embed_image_files(encoder, ref_paths)
    raw = embed_image_files(encoder, ref_paths, raw=True) if inversion is not None and inversion.config.input == "raw" else None
    q = compose_vectors(encoder, refs, texts, method=method, weight=weight, inversion=inversion, template=template,
                        reference_raw=raw)
    if kind == "cirr":
        if split.split == "test1":
            return cirr_submission(q, gallery, names, split)
        return cirr_metrics(q, gallery, names, split)
    return fashioniq_metrics(q, gallery, names, split)


def fashioniq_average(per_category: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of R@10 and R@50 over the categories (the papers' "average" column)."""
    return {k: float(np.mean([m[k] for m in per_category.values()])) for k in ("R@10", "R@50")}



def run_composed_protocol(protocol: str, encoder, root: str | os.PathLike, *, split: str | None = None,
                          categories: Sequence[str] | None = None, method: str = "arithmetic", weight: float = 0.5,
                          inversion=None, template: str | None = None, skip_missing: bool = False) -> dict:
    """Read a CIRR or FashionIQ split under ``root`` and evaluate composed queries on it.

    cirr: ``{"cirr": {split: metrics}}`` on val/train (Recall@1/5/10/50, Recall_subset@1/2/3, their
    headline mean), or ``{"submission": {"recall": ..., "recall_subset": ...}}`` on test1 (labels hidden).
    fashioniq: ``{"fashioniq": {category: {"R@10", "R@50"}, ..., "average": ...}}`` (default: all three
    categories, as the papers report). Items a reader skipped (``skip_missing``) are under ``"skipped"``.
    """
    from mmretrieve.data.cirr import read_cirr
    from mmretrieve.data.fashioniq import FASHIONIQ_CATEGORIES, read_fashioniq

    kw = dict(method=method, weight=weight, inversion=inversion, template=template)
    root = os.fspath(root)
    if protocol == "cirr":
        if categories:
            raise ValueError("categories: FashionIQ only (CIRR has one gallery per split)")
        s = read_cirr(root, split or "val", skip_missing=skip_missing)
        out = evaluate_composed_split(encoder, s, kind="cirr", **kw)
        result = {"submission": out} if s.split == "test1" else {"cirr": {s.split: out}}
        skipped = list(s.skipped)
    elif protocol == "fashioniq":
        cats = list(categories or FASHIONIQ_CATEGORIES)
        per, skipped = {}, []
        for c in cats:
            s = read_fashioniq(root, c, split or "val", skip_missing=skip_missing)
            per[c] = evaluate_composed_split(encoder, s, kind="fashioniq", **kw)
            skipped += list(s.skipped)
        per["average"] = fashioniq_average(per)
        result = {"fashioniq": per}
    else:
        raise ValueError(f"protocol={protocol!r}: choose one of {', '.join(COMPOSED_PROTOCOLS)}")
    if skipped:
        result["skipped"] = [list(x) for x in skipped]
    return result


def write_cirr_submission(submission: Mapping[str, Mapping], folder: str | os.PathLike, name: str) -> list[str]:
    """Write CIRR's two test-server files, ``recall_submission_NAME.json`` and
    ``recall_subset_submission_NAME.json``, into ``folder``; returns their paths."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for key in ("recall", "recall_subset"):
        path = os.path.join(folder, f"{key}_submission_{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(submission[key], f)
        paths.append(path)
    return paths
