"""Fixtures in the official CIRR and FashionIQ file formats (small, generated images), for tests."""
from __future__ import annotations

import json
import os

import numpy as np

from mmretrieve.media.write import write_image

__all__ = ["make_cirr", "make_fashioniq"]


def _img(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_image(path, np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def make_cirr(root, *, n_sets=2, missing: str | None = None) -> dict:
    """CIRR rc2 layout: captions/cap.rc2.{val,test1}.json, image_splits/split.rc2.*.json, dev/ and test1/ images.
    Each image set has 6 members; the query's reference is member 0, its target member 1 (first query of the set) or 2 (second)."""
    out = {}
    for split, folder in (("val", "dev"), ("test1", "test1")):
        names, caps = {}, []
        for s in range(n_sets):
            members = [f"{folder}-{s}-{k}-img0" for k in range(6)]
            for k, name in enumerate(members):
                names[name] = f"./{folder}/{name}.png"
                if name != missing:
                    _img(os.path.join(root, folder, f"{name}.png"), (s * 6 + k) * 7 + len(split))
            for q in range(2):
                pairid = s * 10 + q
                row = {"pairid": pairid, "reference": members[0], "caption": f"make it {['red', 'blue'][q]}",
                       "img_set": {"id": s, "members": members}}
                if split != "test1":
                    target = members[1 + q]
                    row.update({"target_hard": target, "target_soft": {target: 1.0}})
                caps.append(row)
        os.makedirs(os.path.join(root, "captions"), exist_ok=True)
        os.makedirs(os.path.join(root, "image_splits"), exist_ok=True)
        with open(os.path.join(root, "captions", f"cap.rc2.{split}.json"), "w") as f:
            json.dump(caps, f)
        with open(os.path.join(root, "image_splits", f"split.rc2.{split}.json"), "w") as f:
            json.dump(names, f)
        out[split] = (names, caps)
    return out


def make_fashioniq(root, category="dress", *, n=6) -> list[dict]:
    """FashionIQ layout: captions/cap.CAT.val.json, image_splits/split.CAT.val.json, images/NAME.png."""
    names = [f"B00{category[:2].upper()}{i:04d}" for i in range(n)]
    for i, name in enumerate(names):
        _img(os.path.join(root, "images", f"{name}.png"), i + 100 * len(category))
    caps = [{"target": names[(i + 1) % n], "candidate": names[i], "captions": ["is longer.", "has a red colour"]}
            for i in range(n)]
    os.makedirs(os.path.join(root, "captions"), exist_ok=True)
    os.makedirs(os.path.join(root, "image_splits"), exist_ok=True)
    with open(os.path.join(root, "captions", f"cap.{category}.val.json"), "w") as f:
        json.dump(caps, f)
    with open(os.path.join(root, "image_splits", f"split.{category}.val.json"), "w") as f:
        json.dump(names, f)
    return caps
