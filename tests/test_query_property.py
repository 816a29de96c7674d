"""Property tests of queries on a tiny-random retriever: arbitrary text, arithmetic and composed weights.

Text: any unicode string (control characters, NUL, lone surrogates, whitespace only, very long)
either gives hits with finite scores in [-1, 1] sorted best first, or — only when it is empty after
strip() — a ValueError; never another exception. The same text always gives the same vector.
Weights: any finite weights of an Arithmetic query give a unit vector or a ValueError when the
weighted terms cancel; a Composed query interpolates between its reference and its text.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mmretrieve as mmr
from mmretrieve.query import Arithmetic, Composed, Query

TINY = "tiny-random"
TEXTS = ["a red square", "a blue circle on grass", "night sky", "Ünïcödé ✓", "x" * 200]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(SETTINGS, max_examples=25)

# hypothesis and function-scoped fixtures do not mix: the retrievers are built once per module
_RETRIEVERS: dict[str, mmr.Retriever] = {}
_VECTORS: dict[str, np.ndarray] = {}


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)


def retriever() -> mmr.Retriever:
    if "r" not in _RETRIEVERS:
        r = mmr.Retriever.create(TINY, num_workers=0)
        r.add(TEXTS, modality="text", progress=False)
        r.add(_image(1), modality="image", metadata={"kind": "noise"}, progress=False)
        r.add(_image(2), modality="image", progress=False)
        _RETRIEVERS["r"] = r
    return _RETRIEVERS["r"]


def second_retriever() -> mmr.Retriever:
    """Another instance of the same preset: its seeded weights must give the same vectors."""
    if "r2" not in _RETRIEVERS:
        _RETRIEVERS["r2"] = mmr.Retriever.create(TINY, num_workers=0)
    return _RETRIEVERS["r2"]


@pytest.fixture(scope="module", autouse=True)
def _close_retrievers():
    yield
    for r in _RETRIEVERS.values():
        r.close()
    _RETRIEVERS.clear()
    _VECTORS.clear()


def text_vector(text: str) -> np.ndarray:
    return _cached("t:" + text, lambda: retriever().embed(Query.text(text)))


def _cached(key: str, compute) -> np.ndarray:
    if key not in _VECTORS:
        _VECTORS[key] = compute()
    return _VECTORS[key]


# --------------------------------------------------------------------------------------- strategies
WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2007\u2028\u2029\u202f\u205f\u3000"
any_char = st.characters(exclude_categories=())  # includes control characters and lone surrogates
texts = st.one_of(
    st.text(any_char, max_size=60),
    st.text(st.sampled_from(WHITESPACE), max_size=8),  # empty after strip
    st.builds(lambda a, b: a + "\x00" + b, st.text(any_char, max_size=10), st.text(any_char, max_size=10)),
    st.builds(lambda s, n: s * n, st.text(any_char, min_size=1, max_size=4), st.integers(200, 4000)),  # long
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Mn", "So"]), min_size=1, max_size=20),
)
modalities = st.sampled_from([None, "text", "image", ["text", "image"], "video"])


def _check_hits(hits, k: int, modality) -> None:
    r = retriever()
    expected = r.index.count(modality) if modality is not None else len(r)
    assert len(hits) == min(k, expected)
    scores = [h.score for h in hits]
    assert all(math.isfinite(s) and -1.0001 <= s <= 1.0001 for s in scores), scores
    assert all(a >= b for a, b in zip(scores, scores[1:])), scores
    assert len({h.id for h in hits}) == len(hits)


# ------------------------------------------------------------------------------------------ text
@SETTINGS
@given(text=texts, k=st.integers(1, 12), modality=modalities)
def test_any_text_gives_sorted_finite_hits_or_a_value_error_for_empty_text(text, k, modality):
    r = retriever()
    try:
        hits = r.search(text, k=k, modality=modality)
    except ValueError as exc:
        assert not text.strip(), f"{text[:40]!r} refused: {exc}"
        assert "empty" in str(exc)
        return
    assert text.strip(), "text that is empty after strip() must be refused"
    _check_hits(hits, k, modality)


@FEW
@given(text=texts)
def test_the_same_text_always_gives_the_same_vector(text):
    assume(text.strip())
    r = retriever()
    v1 = r.embed(text)
    v2 = r.embed(text)
    np.testing.assert_array_equal(v1, v2)
    assert v1.dtype == np.float32 and v1.shape == (r.encoder.dim,)
    assert abs(float(np.linalg.norm(v1)) - 1.0) < 1e-5
    np.testing.assert_allclose(second_retriever().embed(text), v1, rtol=0, atol=1e-6)
    # a list of queries gives what the queries give one by one
    batch = r.search([text, TEXTS[0]], k=3)
    assert [(h.id, h.score) for h in batch[0]] == [(h.id, h.score) for h in r.index.search(v1, k=3)[0]]
    assert [(h.id, h.score) for h in batch[1]] == [(h.id, h.score) for h in
                                                   r.index.search(text_vector(TEXTS[0]), k=3)[0]]


def test_indexed_text_finds_itself_first():
    r = retriever()
    for t in TEXTS:
        top = r.search(t, k=1, modality="text")[0]
        assert top.metadata["text"] == t and top.score == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------- arithmetic weights
term_texts = st.sampled_from(TEXTS[:4] + ["day", "night"])
moderate = st.one_of(st.just(0.0), st.floats(-1000, 1000).filter(lambda w: w == 0 or abs(w) >= 1e-3))
terms = st.lists(st.tuples(moderate, term_texts), min_size=1, max_size=4)


def _reference(terms_) -> tuple[np.ndarray, float]:
    """float64 weighted sum of the terms' vectors and its norm relative to sum |w|."""
    total = sum(w * text_vector(t).astype(np.float64) for w, t in terms_)
    scale = sum(abs(w) for w, _ in terms_)
    norm = float(np.linalg.norm(total))
    return total, (norm / scale if scale else 0.0)


@SETTINGS
@given(terms_=terms)
def test_arithmetic_gives_a_unit_vector_or_refuses_a_zero_sum(terms_):
    q = Arithmetic(tuple((w, Query.text(t)) for w, t in terms_))
    total, relative = _reference(terms_)
    try:
        v = retriever().embed(q)
    except ValueError as exc:
        assert "cancel" in str(exc)
        assert relative < 1e-4, f"refused although |sum| / sum|w| = {relative}"
        return
    assert v.dtype == np.float32 and np.isfinite(v).all()
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    if relative > 1e-3:  # well away from cancelling: the direction is the weighted sum's
        assert float(v @ (total / np.linalg.norm(total))) > 0.999


@SETTINGS
@given(w=st.floats(-1000, 1000).filter(lambda x: abs(x) >= 1e-3), text=term_texts)
def test_opposite_weights_on_one_term_cancel(w, text):
    q = Query.text(text) * w - Query.text(text) * w
    with pytest.raises(ValueError, match="cancel"):
        retriever().embed(q)
    one = retriever().embed(Query.text(text) * w)
    np.testing.assert_allclose(one, np.sign(w) * text_vector(text), atol=1e-5)


@FEW
@given(weight=st.floats(0.0, 1.0), text=term_texts, seed=st.sampled_from([1, 2]))
def test_composed_interpolates_between_reference_and_text(weight, text, seed):
    r = retriever()
    ref = _cached(f"img:{seed}", lambda: r.embed(Query.image(_image(seed))))
    txt = text_vector(text)
    v = r.embed(Composed(image=_image(seed), text=text, weight=weight))
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    expected = (1.0 - weight) * ref.astype(np.float64) + weight * txt.astype(np.float64)
    assert float(v @ (expected / np.linalg.norm(expected))) > 0.999
    hits = r.search(Composed(image=_image(seed), text=text, weight=weight), k=4)
    _check_hits(hits, 4, None)
    if weight == 0.0:
        assert hits[0].modality.value == "image"  # the reference itself is indexed


@pytest.mark.parametrize("w", [1e-9, 1e20, -1e25])
def test_arithmetic_is_scale_invariant(w):
    r = retriever()
    v = r.embed(Query.text(TEXTS[0]) * w)
    np.testing.assert_allclose(v, np.sign(w) * text_vector(TEXTS[0]), atol=1e-5)
