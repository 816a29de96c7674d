"""Run the standard retrieval protocols on an encoder and report R@1/5/10, MdR, MnR both ways.

Protocols (the field's conventions):

- ``coco-5k``: Karpathy 5k test split, 5,000 images x 25,000 captions (5 per image). text->image
  queries every caption; image->text counts a hit when any of the image's 5 captions is retrieved.
- ``msrvtt-1k-a``: the 1k-A (JSFusion) test set, 1,000 videos, one caption each.
- ``msrvtt-full-test``: the official test split of ``MSRVTT_data.json``, 2,990 videos x 20 captions;
  video->text by CLIP4Clip's multi-sentence rule (each video's best caption).
- ``clotho-eval``: Clotho v2 evaluation split, 1,045 clips x 5,225 captions (5 per clip);
  text->audio over every caption.
- ``synthetic``: the generated corpus (``mmretrieve.data.synthetic``). Several items may share the
  attributes a caption names, so text->X counts a hit when the top item has every attribute the
  caption mentions (``caption_queries``); the chance level of that test is reported beside it.

Similarities are exact and computed in blocks (``metrics.similarity_blocks``), so 25k x 5k fits in
memory. Media go through the indexing route (``mmretrieve.embedding``) with the same sampling: a
long video or recording is embedded over all its windows and scored by its whole-item vector, the
mean of its L2-normalised window vectors, renormalised (what ``Retriever.embed(path)`` returns).

Conventions (``metrics.CONVENTIONS``; each report names the ones used): ties broken by item order and
MdR = floor(median of 0-based ranks) + 1 (open_clip, LAION-CLAP) unless ``ties`` / ``median`` say
otherwise; item->text counts any own caption among all captions (COCO, Clotho), except for video, where
CLIP4Clip's multi-sentence rule ranks each video's best caption (``default_x2t``); mAP@10 as DCASE and
LAION-CLAP compute it. ``max_words`` truncates every caption to that many tokens (start and end token
included), as CLIP4Clip's ``max_words`` does; None keeps the tokenizer's full context.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import torch

from mmretrieve.data.common import Dataset, Sample
from mmretrieve.embedding import Sampling, autocast, embed_items, encode_texts, source_of_sample, to_numpy
from mmretrieve.modality import Modality

from .metrics import describe_conventions, evaluate_pair, format_table, retrieval_metrics_multi
from .protocols import PROTOCOLS

__all__ = ["PROTOCOLS", "item_vectors", "embed_captions", "evaluate_samples", "evaluate_synthetic",
           "run_protocol", "results_table", "write_results", "default_x2t", "conventions_for", "conventions_text"]



def embed_captions(encoder, captions: Sequence[str], *, batch_size: int = 256, max_words: int | None = None) -> np.ndarray:
    """(N, D) float32 L2-normalised text vectors (captions cut to ``max_words`` tokens when given)."""
    with torch.inference_mode(), autocast(encoder.device):
        return to_numpy(encode_texts(encoder, captions, batch_size, max_words=max_words))


def item_vectors(encoder, samples: Sequence[Sample], *, sampling: Sampling | None = None,
                 num_frames: int | None = None, batch_size: int = 32, progress: bool = False,
                 cache: dict | None = None) -> np.ndarray:
    """(N, D) whole-item vectors of media samples of ONE modality, through the indexing route.

    ``sampling`` defaults to the encoder preset's; ``num_frames`` overrides its frames per window.
    """
    chosen = sampling or Sampling.from_preset(encoder.preset)
    if num_frames is not None:
        chosen = chosen.override(num_frames=num_frames)
    return embed_items(encoder, [source_of_sample(s) for s in samples], sampling=chosen, batch_size=batch_size,
                       progress=progress, cache=cache)


def default_x2t(modality: Modality | str) -> str:
    """The item->text convention of a modality's reference: CLIP4Clip's best-caption rule for video,
    any-caption (COCO, Clotho, open_clip) otherwise."""
    return "best-caption" if Modality(modality) is Modality.VIDEO else "any-caption"


def conventions_for(modalities: Sequence[str], *, ties: str = "item-order", median: str = "floor") -> dict:
    """``{modality: {convention: description}}`` for the modalities of a result."""
    return {m: describe_conventions(ties, median, default_x2t(m)) for m in modalities}


def conventions_text(conventions: dict) -> str:
    """The conventions of a result as indented lines (shared conventions once, x2t per modality)."""
    if not conventions:
        return "conventions: (no results)"
    first = next(iter(conventions.values()))
    lines = ["conventions:"]
    for key in ("ties", "median", "map"):
        lines.append(f"  {key}: {first[key]}")
    for modality, conv in conventions.items():
        lines.append(f"  x2t ({modality}): {conv['x2t']}")
    return "\n".join(lines)


def evaluate_samples(encoder, samples: Sequence[Sample] | Dataset, *, sampling: Sampling | None = None,
                     num_frames: int | None = None, batch_size: int = 32, progress: bool = False, cache: dict | None = None,
                     ties: str = "item-order", median: str = "floor", x2t: str | None = None,
                     max_words: int | None = None) -> dict:
    """Standard protocol on one modality: every caption queries the items (``t2x``), every item
    queries the captions (``x2t``; None = the modality's reference convention, ``default_x2t``)."""
    samples = tuple(samples.samples if isinstance(samples, Dataset) else samples)
    caps, owner = [], []
    for i, s in enumerate(samples):
        caps.extend(s.captions)
        owner.extend([i] * len(s.captions))
    items = item_vectors(encoder, samples, sampling=sampling, num_frames=num_frames, batch_size=batch_size,
                         progress=progress, cache=cache)
    texts = embed_captions(encoder, caps, max_words=max_words)
    x2t = x2t or (default_x2t(samples[0].modality) if samples else "any-caption")
    return evaluate_pair(texts, items, owner, ties=ties, median=median, x2t=x2t)


def evaluate_synthetic(encoder, samples: Sequence[Sample], *, sampling: Sampling | None = None,
                       num_frames: int | None = None, complete_only: bool = True, cache: dict | None = None, ties: str = "item-order",
                       median: str = "floor", max_words: int | None = None) -> dict:
    """Attribute-aware text->X metrics on synthetic items (Samples whose metadata hold attributes and
    mentions), plus the strict protocol and the chance level of R@1 for the same queries."""
    from mmretrieve.data.synthetic import SyntheticItem, caption_queries

    items = [SyntheticItem(s.path, s.modality, tuple(s.captions), dict(s.metadata["attributes"]),
                           tuple(dict(m) for m in s.metadata["mentions"])) for s in samples]
    queries = caption_queries(items, complete_only=complete_only)
    vecs = item_vectors(encoder, samples, sampling=sampling, num_frames=num_frames, cache=cache)
    texts = embed_captions(encoder, [q.text for q in queries], max_words=max_words)
    t2x = retrieval_metrics_multi(texts, vecs, [q.relevant for q in queries], ties=ties, median=median)
    t2x["chance_R@1"] = float(100.0 * np.mean([len(q.relevant) / len(items) for q in queries]))
    strict = evaluate_pair(embed_captions(encoder, [c for s in samples for c in s.captions], max_words=max_words), vecs,
                           [i for i, s in enumerate(samples) for _ in s.captions], ties=ties, median=median,
                           x2t=default_x2t(samples[0].modality))
    return {"t2x": t2x, "x2t": strict["x2t"], "t2x_strict": strict["t2x"]}


def run_protocol(protocol: str, encoder, root: str | os.PathLike | None = None, *, num_frames: int | None = None,
                 batch_size: int = 32, progress: bool = True, skip_missing: bool = False, seed: int = 0,
                 ties: str = "item-order", median: str = "floor", max_words: int | None = None,
                 sampling: Sampling | None = None) -> dict:
    """Read the protocol's split under ``root`` and evaluate. Returns ``{modality: {direction: metrics}}``;
    ``conventions_for(result, ties=..., median=...)`` names the conventions used. ``sampling`` (default:
    the encoder preset's) is how every item is decoded; ``num_frames`` overrides its frames per window."""
    if num_frames is not None:
        sampling = (sampling or Sampling.from_preset(encoder.preset)).override(num_frames=num_frames)
    conv = {"ties": ties, "median": median, "max_words": max_words, "sampling": sampling}
    if protocol == "coco-5k":
        from mmretrieve.data.coco import read_coco

        ds = read_coco(_need(root, protocol), "karpathy-test", skip_missing=skip_missing)
        return {"image": evaluate_samples(encoder, ds, batch_size=batch_size, progress=progress, **conv)}
    if protocol in ("msrvtt-1k-a", "msrvtt-full-test"):
        from mmretrieve.data.msrvtt import read_msrvtt

        split = "1k-A" if protocol == "msrvtt-1k-a" else "full-test"
        ds = read_msrvtt(_need(root, protocol), split, skip_missing=skip_missing)
        return {"video": evaluate_samples(encoder, ds, batch_size=batch_size, progress=progress, **conv)}
    if protocol == "clotho-eval":
        from mmretrieve.data.clotho import read_clotho

        ds = read_clotho(_need(root, protocol), "evaluation", skip_missing=skip_missing)
        return {"audio": evaluate_samples(encoder, ds, batch_size=batch_size, progress=progress, **conv)}
    if protocol == "synthetic":
        from mmretrieve.data.synthetic import load_corpus, make_corpus
        from mmretrieve.train.data import synthetic_samples

        root = _need(root, protocol)
        manifest = os.path.join(root, "manifest.jsonl")
        if os.path.isfile(manifest):
            corpus = load_corpus(manifest)
        else:
            corpus = make_corpus(root, seed=seed)
            corpus.write_manifest(manifest, ground_truth=True)
        out = {}
        for m in (Modality.IMAGE, Modality.VIDEO, Modality.AUDIO):
            items = synthetic_samples(corpus.of(m))
            if len(items) >= 2:
                out[m.value] = evaluate_synthetic(encoder, items, **conv)
        return out
    raise ValueError(f"protocol: unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def _need(root, protocol: str) -> str:
    if root is None:
        raise ValueError(f"{protocol}: the dataset folder is required (--data DIR)")
    return os.fspath(root)


def results_table(results: dict) -> str:
    """One aligned table for ``{modality: {direction: metrics}}``."""
    rows: dict[str, dict] = {}
    names = {"t2x": "text->{m}", "x2t": "{m}->text", "t2x_strict": "text->{m} (strict)"}
    for modality, dirs in results.items():
        for direction, metrics in dirs.items():
            rows[names.get(direction, direction).format(m=modality)] = metrics
    return format_table(rows)


def write_results(results: dict, path: str | os.PathLike, extra: dict | None = None) -> str:
    """Write results (and ``extra`` context) as JSON; returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**(extra or {}), "results": results}, f, indent=2)
    return path
