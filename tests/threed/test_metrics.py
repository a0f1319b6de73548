"""Point-cloud metrics against brute-force references and PointFlow's definitions (Fréchet and
KID: tests/core/test_metrics.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from threed.metrics import (
    chamfer,
    compute_all_metrics,
    emd,
    mmd_cov,
    one_nn_accuracy,
    pairwise_chamfer,
    pairwise_emd,
)


def _clouds(n: int, points: int, seed: int) -> torch.Tensor:
    return torch.randn(n, points, 3, generator=torch.Generator().manual_seed(seed))


def _brute_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    def one_way(x, y):
        return sum(min(float(((p - q) ** 2).sum()) for q in y) for p in x) / len(x)

    return one_way(a, b) + one_way(b, a)


def _brute_emd(a: np.ndarray, b: np.ndarray) -> float:
    return min(
        sum(float(np.linalg.norm(a[i] - b[j])) for i, j in enumerate(perm)) / len(a)
        for perm in itertools.permutations(range(len(b)))
    )


def _pointflow_knn_acc(m_rr, m_rs, m_ss) -> float:
    """PointFlow's ``knn(Mxx, Mxy, Myy, k=1)`` accuracy, transcribed (refs labelled 1)."""
    n0, n1 = m_rr.shape[0], m_ss.shape[0]
    label = torch.cat((torch.ones(n0), torch.zeros(n1)))
    m = torch.cat((torch.cat((m_rr, m_rs), 1), torch.cat((m_rs.t(), m_ss), 1)), 0)
    _, idx = (m + torch.diag(float("inf") * torch.ones(n0 + n1))).topk(1, 0, False)
    pred = torch.ge(label.index_select(0, idx[0]), 0.5).float()
    return float(torch.eq(label, pred).float().mean())


def test_chamfer_matches_brute_force():
    a, b = _clouds(3, 5, 0), _clouds(4, 7, 1)
    d = pairwise_chamfer(a, b)
    for i, j in itertools.product(range(3), range(4)):
        assert d[i, j].item() == pytest.approx(_brute_chamfer(a[i].numpy(), b[j].numpy()), rel=1e-5)
    assert torch.allclose(chamfer(a[:2], b[:2]), d[[0, 1], [0, 1]], rtol=1e-5)


def test_pairwise_self_matrix_is_the_symmetric_full_one():
    a = _clouds(5, 16, 2)
    full, sym = pairwise_chamfer(a, a), pairwise_chamfer(a)
    assert torch.equal(sym, sym.T) and torch.all(sym.diagonal() == 0)
    off = ~torch.eye(5, dtype=torch.bool)
    assert torch.allclose(full[off], sym[off], rtol=1e-5)


def test_emd_is_the_exact_matching_mean_euclidean_distance():
    a, b = _clouds(2, 6, 3), _clouds(2, 6, 4)
    for i in range(2):
        assert emd(a[i], b[i]) == pytest.approx(_brute_emd(a[i].numpy(), b[i].numpy()), rel=1e-6)
    assert emd(a[0], a[0][torch.randperm(6)]) == pytest.approx(0.0, abs=1e-9)
    d = pairwise_emd(a)
    assert d[0, 1].item() == pytest.approx(emd(a[0], a[1]), rel=1e-6) and d[0, 0] == 0
    with pytest.raises(ValueError, match="equal size"):
        emd(a[0], b[0, :5])


def test_pairwise_emd_on_threads_matches_the_pair_by_pair_values():
    a, b = _clouds(4, 7, 8), _clouds(3, 7, 9)
    cross = pairwise_emd(a, b, workers=3)
    assert cross.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            assert cross[i, j].item() == pytest.approx(emd(a[i], b[j]), rel=1e-6)
    assert torch.equal(pairwise_emd(a, workers=1), pairwise_emd(a, workers=2))
    with pytest.raises(ValueError, match="equal size"):
        pairwise_emd(a, b[:, :5])


def test_mmd_cov_as_pointflow():
    d = torch.rand(6, 4, generator=torch.Generator().manual_seed(5))  # (gen, ref)
    mmd, cov = mmd_cov(d)
    assert mmd == pytest.approx(np.mean([min(d[g, r].item() for g in range(6)) for r in range(4)]))
    assert cov == len({int(np.argmin(d[g].numpy())) for g in range(6)}) / 4
    # every generated cloud nearest to reference 2: coverage 1/4
    d2 = torch.ones(3, 4)
    d2[:, 2] = 0.1
    assert mmd_cov(d2) == (pytest.approx((1 + 1 + 0.1 + 1) / 4), 0.25)


def test_one_nn_accuracy_matches_pointflow_knn():
    g = torch.Generator().manual_seed(6)
    for r, n in ((5, 5), (4, 7)):
        m_rr, m_ss = torch.rand(r, r, generator=g), torch.rand(n, n, generator=g)
        m_rr, m_ss = m_rr + m_rr.T, m_ss + m_ss.T
        m_rs = torch.rand(r, n, generator=g)
        assert one_nn_accuracy(m_rs.T, m_rr, m_ss) == pytest.approx(_pointflow_knn_acc(m_rr, m_rs, m_ss))


def test_known_cases():
    ref = _clouds(6, 32, 7)
    # identical sets: every cloud's nearest other cloud is its twin in the other set -> 0, not 0.5
    same = compute_all_metrics(ref.clone(), ref, with_emd=True)
    assert same["1-NNA-CD"] == 0.0 and same["1-NNA-EMD"] == 0.0
    assert same["MMD-CD"] == pytest.approx(0.0, abs=1e-6) and same["COV-CD"] == 1.0
    # far-apart sets are told apart perfectly; all generated clouds share one nearest reference
    far = compute_all_metrics(ref + 100.0, ref, with_emd=False)
    assert far["1-NNA-CD"] == 1.0 and set(far) == {"MMD-CD", "COV-CD", "1-NNA-CD"}
    assert far["MMD-CD"] > 1e4
