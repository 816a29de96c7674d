"""Synthetic composed retrieval: arithmetic at several weights vs textual inversion, exact ground truth.

    python benchmarks/bench_composed.py [--root runs/bench-composed] [--steps N] [--inversion PATH]

Gallery: one synthetic image per attribute combination (4 shapes x 6 colours x 2 sizes x 5 positions =
240) and one clip per combination (4 shapes x 6 colours x 4 directions = 96), corpus seed 0. Queries:
reference + one changed attribute ("make it blue", "move it to the left", "make it move upwards");
the answer is the one item with every other attribute kept; the reference is removed from the ranking
(CIRR protocol). 30% of the combinations are held out: the inversion network is trained (Pic2Word
recipe, `sample` preset frozen) on images and clips of the other combinations only (corpus seed 1),
and the held-out rows count queries whose reference AND target are held-out combinations (the seen
rows: both in the training combinations).

Without --inversion it trains the network first with the recipe mmretrieve/recipes/pic2word-sample.yaml
(its template and compose mode as they are; --steps overrides its step count) from an index of the
training references (ROOT/train-refs.mmr, so each step reads stored vectors: about 10 minutes on 2
shared CPU cores) and writes it to ROOT/run/inversion.safetensors. Besides the network as configured,
it prints Pic2Word's plain query (template "a photo of * , {text}", the prompt's vector only) and the
network's template without the added text vector, for comparison; the verdict compares the network as
configured with the arithmetic weight that is best on the held-out queries themselves.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

import mmretrieve as mmr
from mmretrieve.data.synthetic import VOCABULARY, make_corpus, load_corpus
from mmretrieve.evaluation.composed import (combination, composed_recall, composed_triplets,
                                            holdout_combinations)
from mmretrieve.models.inversion import TextualInversion
from mmretrieve.query import Query

WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
HOLDOUT = 0.3


def corpus(root: str, **kw):
    manifest = os.path.join(root, "manifest.jsonl")
    if os.path.isfile(manifest):
        return load_corpus(manifest)
    c = make_corpus(root, progress=True, **kw)
    c.write_manifest(manifest, ground_truth=True)
    return c


def training_folder(root: str, train_corpus, held: dict) -> str:
    """Symlinks to the training corpus's images and clips whose combination is not held out."""
    folder = os.path.join(root, "train-refs")
    if os.path.isdir(folder):
        return folder
    os.makedirs(folder)
    kept = 0
    for it in train_corpus.items:
        if it.modality.value in held and combination(it.modality, it.attributes) not in held[it.modality.value]:
            os.symlink(it.path, os.path.join(folder, os.path.basename(it.path)))
            kept += 1
    print(f"training references: {kept} files (held-out combinations excluded)")
    return folder


def training_index(root: str, folder: str) -> str:
    """An index of the training references (the `sample` encoder), built once."""
    path = os.path.join(root, "train-refs.mmr")
    if not os.path.exists(path):
        r = mmr.Retriever.create("sample", path=path)
        report = r.add(folder, progress=False)
        r.save()
        r.close()
        print(f"indexed the training references: {report}")
    return path


def train_network(root: str, index: str, steps: int | None) -> str:
    from mmretrieve.train import load_recipe, override, train

    out = os.path.join(root, "run")
    changes = {"data.kind": "index", "data.root": index, "run.out": out, "run.progress": False}
    if steps is not None:
        changes["optim.max_steps"] = steps
    cfg = override(load_recipe("pic2word-sample"), changes)
    t0 = time.perf_counter()
    result = train(cfg)
    print(f"trained the inversion network: {result.step} steps in {time.perf_counter() - t0:.0f} s")
    return os.path.join(out, "inversion.safetensors")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="runs/bench-composed")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    ap.add_argument("--inversion", default=None, help="an existing network (skip training)")
    ap.add_argument("--template", action="append", default=[],
                    help="more prompt template(s) to compare, composed as the network says (repeatable)")
    args = ap.parse_args()
    gallery = corpus(os.path.join(args.root, "gallery"), n_images=240, n_videos=96, n_audio=0, seed=0)
    held = {m: holdout_combinations(m, HOLDOUT, seed=0) for m in ("image", "video")}
    path = args.inversion
    if path is None:
        train_c = corpus(os.path.join(args.root, "train-corpus"), n_images=1536, n_videos=512, n_audio=0, seed=1)
        path = train_network(args.root, training_index(args.root, training_folder(args.root, train_c, held)),
                             args.steps)
    net = TextualInversion.load(path)
    r = mmr.Retriever.create("sample")
    enc = r.encoder
    own = f"inversion ({net.config.template!r}, {net.config.compose})"
    variants = {own: net}  # label -> network (the same weights, composed differently)
    for t in args.template:
        variants[f"inversion ({t!r}, {net.config.compose})"] = net.with_query(template=t)
    other = "prompt" if net.config.compose == "prompt+text" else "prompt+text"
    variants[f"inversion ({net.config.template!r}, {other})"] = net.with_query(compose=other)
    variants["inversion ('a photo of * , {text}', prompt): Pic2Word's query"] = net.with_query(
        template="a photo of * , {text}", compose="prompt")
    print(f"inversion network: {path} ({net.config.tokens} token(s), input {net.config.input}, "
          f"template {net.config.template!r}, compose {net.config.compose})")
    rows = []
    for m in ("image", "video"):
        items = gallery.of(m)
        vecs = np.stack([r.embed(Query.file(it.path)) for it in items])
        seen = frozenset(combination(m, it.attributes) for it in items) - held[m]
        splits = {"seen": composed_triplets(items, only=seen), "held-out": composed_triplets(items, only=held[m])}
        for split, trips in splits.items():
            refs = [t.reference for t in trips]
            tgts = [t.target for t in trips]
            texts = [t.text for t in trips]
            with torch.inference_mode():
                tv = enc.encode_text(texts).cpu().numpy()
                inv = {label: v.compose(enc, torch.from_numpy(vecs[refs]), texts).cpu().numpy()
                       for label, v in variants.items()}
            ref_only = composed_recall(vecs[refs], vecs, refs, tgts)
            text_only = composed_recall(tv, vecs, refs, tgts)
            rows.append((m, split, len(trips), "reference only", ref_only))
            rows.append((m, split, len(trips), "text only", text_only))
            for w in WEIGHTS:
                fused = (1 - w) * vecs[refs] + w * tv
                fused /= np.linalg.norm(fused, axis=1, keepdims=True)
                rows.append((m, split, len(trips), f"arithmetic w={w:.1f}", composed_recall(fused, vecs, refs, tgts)))
            for label, q in inv.items():
                rows.append((m, split, len(trips), label, composed_recall(q, vecs, refs, tgts)))
    width = max(len(r[3]) for r in rows)
    print(f"\n{'modality':<8} {'queries':<16} {'method':<{width}} {'R@1':>6} {'R@5':>6} {'R@10':>6}")
    for m, split, n, method, res in rows:
        print(f"{m:<8} {split + f' ({n})':<16} {method:<{width}} {res['R@1']:6.1f} {res['R@5']:6.1f} {res['R@10']:6.1f}")
    print("\nheld-out R@1 / R@5: the arithmetic weight best ON THE HELD-OUT QUERIES vs the network as configured")
    for m in ("image", "video"):
        held_rows = {method: res for mm, s, _, method, res in rows if mm == m and s == "held-out"}
        arith = {k: v for k, v in held_rows.items() if k.startswith("arith")}
        best_w = max(arith, key=lambda k: (arith[k]["R@1"], arith[k]["R@5"]))
        a, b = arith[best_w], held_rows[own]
        verdict = "inversion ahead" if b["R@1"] > a["R@1"] else "arithmetic ahead"
        print(f"  {m:<6} {best_w}: {a['R@1']:.1f} / {a['R@5']:.1f}   {own}: {b['R@1']:.1f} / {b['R@5']:.1f}   "
              f"-> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
