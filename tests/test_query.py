"""Composed and arithmetic query maths, and explicit modalities."""
import pathlib

import numpy as np
import pytest

from mmretrieve.modality import Modality
from mmretrieve.query import (
    DEFAULT_COMPOSED_TEXT_WEIGHT,
    Arithmetic,
    AudioArray,
    Composed,
    Query,
    VideoArray,
    as_query,
    fuse,
)


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_fuse_is_normalised_weighted_sum():
    a, b = unit([1, 0, 0]), unit([0, 1, 0])
    out = fuse(np.stack([a, b]), [0.25, 0.75])
    np.testing.assert_allclose(out, unit([0.25, 0.75, 0]), atol=1e-6)
    assert out.dtype == np.float32
    assert abs(np.linalg.norm(out) - 1) < 1e-6


def test_fuse_refuses_cancelling_terms():
    a = unit([1, 2, 3])
    with pytest.raises(ValueError, match="cancel"):
        fuse(np.stack([a, a]), [1.0, -1.0])


def test_fuse_checks_weight_count():
    with pytest.raises(ValueError, match="2 weights for 3 vectors"):
        fuse(np.eye(3, dtype=np.float32), [1.0, 1.0])


def test_arithmetic_builds_signed_weighted_terms():
    q = Query.image("a.jpg") - Query.text("day") + 0.5 * Query.text("night")
    assert isinstance(q, Arithmetic)
    assert [(w, t.modality, t.value) for w, t in q.terms] == [
        (1.0, Modality.IMAGE, "a.jpg"),
        (-1.0, Modality.TEXT, "day"),
        (0.5, Modality.TEXT, "night"),
    ]
    scaled = 2 * q
    assert [w for w, _ in scaled.terms] == [2.0, -2.0, 1.0]


def test_composed_default_weight_and_arithmetic_form():
    c = Composed(image="ref.jpg", text="at night")
    assert c.weight == DEFAULT_COMPOSED_TEXT_WEIGHT == 0.5
    terms = c.as_arithmetic().terms
    assert terms[0][1] == Query.image("ref.jpg") and terms[0][0] == pytest.approx(0.5)
    assert terms[1][1] == Query.text("at night") and terms[1][0] == pytest.approx(0.5)
    c2 = Composed(video="clip.mp4", text="slower", weight=0.2)
    assert c2.reference.modality is Modality.VIDEO
    assert [w for w, _ in c2.as_arithmetic().terms] == pytest.approx([0.8, 0.2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(text="x"), "exactly one reference"),
        (dict(text="x", image="a.jpg", video="b.mp4"), "exactly one reference"),
        (dict(text="  ", image="a.jpg"), "non-empty modification"),
        (dict(text="x", image="a.jpg", weight=1.5), "within"),
    ],
)
def test_composed_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Composed(**kwargs)


def test_modality_is_explicit():
    assert as_query("a dog") == Query.text("a dog")
    assert as_query(pathlib.Path("x/clip.MP4")).modality is Modality.VIDEO
    assert as_query(VideoArray(np.zeros((2, 4, 4, 3), np.uint8), 8)).modality is Modality.VIDEO
    assert as_query(AudioArray(np.zeros(10, np.float32), 16000)).modality is Modality.AUDIO
    with pytest.raises(TypeError, match="cannot tell the modality"):
        as_query(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="empty text"):
        as_query("   ")
    with pytest.raises(ValueError, match="unknown media extension"):
        Query.file("notes.txt")
    with pytest.raises(ValueError, match="fps"):
        VideoArray(np.zeros((1, 2, 2, 3)), fps=0)
