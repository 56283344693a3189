"""ReSeFa / LowRankGAN factorisations and region masks on planted linear toys (zhujiapeng/resefa
compute_direction.py, coordinate.py; zhujiapeng/LowRankGAN RobustPCA.py). Budget for tests/editing: under 90 s on
2 cores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from editing.jacobian import JacobianEngine, accumulate_grams
from editing.lowrankgan import lowrank_directions, numerical_rank, pcp, pcp_mu
from editing.regions import box_bounds, box_mask, get_box, label_mask, region_mask
from editing.resefa import rayleigh_quotient, resefa_directions
from tests.editing.toys import LinearToyG

RES = 32


def _planted_linear(dim: int, in_rank: int, out_rank: int, overlap: int, seed: int = 0):
    """``P`` whose in-box rows span ``in_rank`` latent dims and out-of-box rows ``out_rank`` dims (sharing
    ``overlap``); returns (G, mask, P_in, P_out)."""
    g = torch.Generator().manual_seed(seed)
    mask = box_mask((10, 16, 8, 20), size=RES, base=RES)
    m = mask.reshape(-1)
    Q = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    P = torch.zeros(RES * RES, dim)
    P[m] = torch.randn(int(m.sum()), in_rank, generator=g) @ Q[:, :in_rank].T
    start = in_rank - overlap
    P[~m] = torch.randn(int((~m).sum()), out_rank, generator=g) @ Q[:, start : start + out_rank].T
    return LinearToyG(P, 1, RES), mask, P[m], P[~m]


def _grams(G, mask, reduce="mean"):
    engine = JacobianEngine(G, size=None, reduce=reduce)
    acc = accumulate_grams(engine, torch.randn(2, G.w_dim), {"r": mask}, chunk=16)
    return acc.mean("r")


def test_box_indexing_matches_official_half_open_convention():
    # eyes [120, 128, 20, 115]: rows [110, 130), columns [71, 186) on the 256 grid (coordinate.py indexing).
    assert box_bounds(get_box("eyes")) == (110, 130, 71, 186)
    m = box_mask(get_box("mouth"))
    assert m.sum() == 30 * 70 and m[169, 92] and not m[168, 92] and m[198, 161] and not m[199, 161]
    small = box_mask(get_box("eyes"), size=64)
    assert box_bounds(get_box("eyes"), size=64) == (28, 32, 18, 46)
    assert torch.equal(small, box_mask((120, 128, 20, 115), size=64))
    assert torch.equal(region_mask(box=[120, 128, 20, 115], size=64), small)
    with pytest.raises(KeyError, match="region.name='lips'"):
        get_box("lips")
    with pytest.raises(KeyError, match="dataset"):
        get_box("eyes", dataset="lsun")


def test_label_mask_union_and_resize():
    lm = np.zeros((8, 8), dtype=np.int64)
    lm[1, 2], lm[5, 5], lm[6, 6] = 4, 5, 10
    m = label_mask(lm, ["l_eye", 5])
    assert m.sum() == 2 and m[1, 2] and m[5, 5] and not m[6, 6]
    big = label_mask(lm, [10], size=16)
    assert big.shape == (16, 16) and big.sum() == 4 and big[12:14, 12:14].all()


def test_resefa_top_direction_is_analytic_rayleigh_maximiser():
    # Rank-one inside block A = c·a·aᵀ: max_n c(aᵀn)²/(nᵀBn) is attained at n ∝ B⁻¹a (Cauchy–Schwarz).
    g = torch.Generator().manual_seed(1)
    dim = 16
    mask = box_mask((10, 16, 8, 20), size=RES, base=RES)
    m = mask.reshape(-1)
    a = torch.randn(dim, generator=g)
    P = torch.zeros(RES * RES, dim)
    P[m] = torch.randn(int(m.sum()), 1, generator=g) * a
    P[~m] = torch.randn(int((~m).sum()), dim, generator=g)
    A, B = _grams(LinearToyG(P, 1, RES), mask, reduce="sum")
    dirs, values = resefa_directions(A, B)
    A, B = A.numpy(), B.numpy()
    expected = np.linalg.solve(B, a.double().numpy())
    expected /= np.linalg.norm(expected)
    assert abs(dirs[0] @ expected) == pytest.approx(1.0, abs=1e-8)
    assert values[0] == pytest.approx(a.double().numpy() @ np.linalg.solve(B, a.double().numpy()) * A[0, 0] / a[0] ** 2)
    assert np.all(np.diff(values) <= 1e-12) and np.allclose(np.linalg.norm(dirs, axis=1), 1.0)
    assert np.all(dirs[np.arange(dim), np.abs(dirs).argmax(1)] > 0)  # sign convention
    rand = np.random.RandomState(0).randn(500, dim)
    assert rayleigh_quotient(rand, A, B).max() < rayleigh_quotient(dirs[0], A, B)[0]
    official, off_values = resefa_directions(A, B, solver="eig_inv")
    assert abs(official[0] @ dirs[0]) == pytest.approx(1.0, abs=1e-6)
    assert off_values[0] == pytest.approx(values[0], rel=1e-6)


def test_resefa_singular_background_needs_regulariser():
    A = np.diag([3.0, 1.0, 0.0])
    B = np.diag([1.0, 0.0, 2.0])
    with pytest.raises(np.linalg.LinAlgError, match="full_rank"):
        resefa_directions(A, B)
    dirs, values = resefa_directions(A, B, full_rank=True, tau=1e-3)
    # B + 1e-3·tr(B)·I = diag(1.003, 0.003, 2.003): the best ratio is e2 with 1/0.003.
    assert np.allclose(np.abs(dirs[0]), [0, 1, 0]) and values[0] == pytest.approx(1 / 0.003)


def test_pcp_recovers_low_rank_plus_sparse():
    g = torch.Generator().manual_seed(0)
    n, r = 60, 3
    L0 = (torch.randn(n, r, generator=g) @ torch.randn(r, n, generator=g)).double()
    support = torch.rand(n, n, generator=g) < 0.05
    S0 = torch.where(support, 10 * (torch.rand(n, n, generator=g) - 0.5), torch.zeros(n, n)).double()
    iterations = {}
    for mu_norm in ("induced", "entrywise"):
        res = pcp(L0 + S0, lambda_inv=None, mu_norm=mu_norm)  # class default λ = 1/√n
        assert torch.linalg.norm(res.low_rank - L0) / torch.linalg.norm(L0) < 1e-6
        assert numerical_rank(res.low_rank) == r
        assert torch.equal(res.sparse.abs() > 1e-3, support)
        iterations[mu_norm] = res.iterations
    # the induced-norm μ is larger (smaller SVT threshold): same answer, more iterations
    assert iterations["induced"] > iterations["entrywise"]
    fractional = pcp(L0 + S0, lambda_inv=float(np.sqrt(n)), mu_norm="entrywise")
    assert torch.allclose(fractional.low_rank, res.low_rank, atol=1e-5) and fractional.lam == pytest.approx(n**-0.5)
    M = torch.tensor([[1.0, -2.0], [3.0, 4.0]], dtype=torch.float64)
    assert pcp_mu(M, "induced") == pytest.approx(4 / (4 * 6)) and pcp_mu(M, "entrywise") == pytest.approx(4 / 40)


def test_lowrankgan_projected_directions_leave_outside_unchanged():
    G, mask, P_in, P_out = _planted_linear(dim=64, in_rank=3, out_rank=8, overlap=1)
    A, B = _grams(G, mask)
    res = lowrank_directions(A, B, lambda_inv=None)  # λ = 1/√64 (class default; 1/60 is tuned for 512-d)
    assert (res.rank_fore, res.rank_back) == (3, 8)
    raw, proj = torch.from_numpy(res.raw).float(), torch.from_numpy(res.projected).float()
    assert ((P_out @ raw.T).norm(dim=0) / P_out.norm()).max() > 1e-2  # raw directions leak (shared dimension)
    assert ((P_out @ proj.T).norm(dim=0) / P_out.norm()).max() < 1e-5
    assert ((P_in @ proj.T).norm(dim=0) / P_in.norm()).min() > 0.1
    w = torch.randn(1, 64)
    ws = w[:, None].repeat(1, 4, 1)
    before = G.synthesis(ws)[0, 0]
    after = G.synthesis(ws + 3.0 * proj[0])[0, 0]
    assert torch.allclose(after[~mask], before[~mask], atol=1e-4) and (after[mask] - before[mask]).abs().max() > 0.1
    relaxed = lowrank_directions(A, B, lambda_inv=None, num_relax=2)
    assert relaxed.null_start == 6
