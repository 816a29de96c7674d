import math

import torch
import torch.nn.functional as F

from mmretrieve.train import LogitScale, contrastive_loss, positives_matrix


def test_plain_infonce_when_no_duplicates():
    torch.manual_seed(0)
    t, m = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * t @ m.t()
    ref = 0.5 * (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.t(), torch.arange(6)))
    got = contrastive_loss(t, m, scale, positives_matrix(list(range(6)), [f"c{i}" for i in range(6)]))
    assert torch.allclose(got, ref, atol=1e-6)


def test_duplicates_are_positives_not_negatives():
    # item 0 appears twice (two captions); both copies are identical vectors
    m = F.normalize(torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]), dim=-1).requires_grad_(True)
    t = m.detach().clone()
    pos = positives_matrix([0, 0, 1], ["a red circle", "a circle in red", "a blue square"])
    assert pos.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    scale = torch.tensor(50.0)
    multi = contrastive_loss(t, m, scale, pos)
    # at this perfect alignment the multi-positive loss is at its minimum (the targets' entropy):
    # nothing pushes the two copies of item 0 apart
    assert math.isclose(float(multi.detach()), 2 * math.log(2) / 3, rel_tol=1e-4)
    (grad,) = torch.autograd.grad(multi, m)
    assert grad.abs().max() < 1e-6
    torch.manual_seed(0)
    for _ in range(5):  # no nearby configuration does better
        moved = F.normalize(m.detach() + 0.05 * torch.randn(3, 3), dim=-1)
        assert contrastive_loss(t, moved, scale, pos) >= multi - 1e-6


def test_multi_positive_matches_explicit_formula():
    torch.manual_seed(1)
    t, m = F.normalize(torch.randn(5, 4), dim=-1), F.normalize(torch.randn(5, 4), dim=-1)
    keys = [0, 1, 0, 2, 1]
    pos = positives_matrix(keys)
    logits = 3.0 * t @ m.t()

    def side(lg, p):
        rows = []
        for i in range(lg.shape[0]):
            lsm = torch.log_softmax(lg[i], dim=0)
            rows.append(-lsm[p[i]].mean())
        return torch.stack(rows).mean()

    ref = 0.5 * (side(logits, pos) + side(logits.t(), pos.t()))
    assert torch.allclose(contrastive_loss(t, m, torch.tensor(3.0), pos), ref, atol=1e-6)


def test_same_caption_counts_as_positive():
    pos = positives_matrix([0, 1], ["a red circle", "a red circle"])
    assert pos.all()


def test_logit_scale_is_learnable_and_clamped():
    s = LogitScale(0.07, max_scale=100.0)
    assert math.isclose(s.temperature, 0.07, rel_tol=1e-5) and s.log_scale.requires_grad
    with torch.no_grad():
        s.log_scale.fill_(10.0)
    assert math.isclose(float(s().detach()), 100.0, rel_tol=1e-5)
