"""LowRankGAN: principal component pursuit + null-space projection (arXiv 2106.04488 Sec. 3;
zhujiapeng/LowRankGAN ``compute_directions.py``, ``RobustPCA.py``).

PCP (Candès et al.) by the augmented-Lagrangian loop with a fixed penalty, as
zhujiapeng/LowRankGAN:RobustPCA.py: ``L ← SVT_{1/μ}(M − S + Y/μ)``, ``S ← soft_{λ/μ}(M − L + Y/μ)``, ``Y ← Y +
μ(M − L − S)``, from ``S = Y = 0``, until ``‖M − L − S‖_F < tol·‖M‖_F`` or ``max_iter``. Constants: ``λ =
1/lambda_inv`` (CLI ``--lamb 60``), ``μ = n₁n₂ / (4‖M‖₁)`` with numpy's ``ord=1`` *induced* norm (max absolute
column sum, ``mu_norm='induced'``, the original) or the textbook entry-wise ℓ1 (``mu_norm='entrywise'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PCPResult:
    low_rank: torch.Tensor
    sparse: torch.Tensor
    iterations: int
    residual: float
    mu: float
    lam: float


def _to_tensor(m: np.ndarray | torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    t = torch.as_tensor(m).detach().to(torch.float64)
    return t.to(device) if device is not None else t


def pcp_mu(M: torch.Tensor, mu_norm: str = "induced") -> float:
    """``n₁n₂ / (4‖M‖₁)``; ``induced`` = max absolute column sum (numpy ``ord=1``), ``entrywise`` =
    Σ|M_ij|.
    """
    if mu_norm == "induced":
        norm = M.abs().sum(dim=0).max()
    elif mu_norm == "entrywise":
        norm = M.abs().sum()
    else:
        raise ValueError(f"lowrank.mu_norm={mu_norm!r}: expected 'induced' or 'entrywise'")
    if float(norm) == 0.0:
        raise ValueError("PCP: the input matrix is all zeros")
    return float(M.shape[0] * M.shape[1] / (4.0 * norm))


def pcp(
    M: np.ndarray | torch.Tensor,
    lambda_inv: float | None = 60,
    mu_norm: str = "induced",
    max_iter: int = 10000,
    tol: float = 1e-7,
    device: str | torch.device | None = None,
) -> PCPResult:
    """Principal component pursuit ``min ‖L‖_* + λ‖S‖₁ s.t. M = L + S`` (constants of zhujiapeng/LowRankGAN
    ``RobustPCA.py``).

    ``lambda_inv`` falsy gives the class default ``λ = 1/√max(n₁, n₂)``; fractional values are allowed.
    """
    M = _to_tensor(M, device)
    if M.ndim != 2:
        raise ValueError(f"PCP: expected a 2-D matrix, got shape {tuple(M.shape)}")
    lam = 1.0 / float(lambda_inv) if lambda_inv else 1.0 / float(np.sqrt(max(M.shape)))
    mu = pcp_mu(M, mu_norm)
    mu_inv = 1.0 / mu
    threshold = tol * float(torch.linalg.norm(M))
    S = torch.zeros_like(M)
    Y = torch.zeros_like(M)
    L = torch.zeros_like(M)
    residual = float("inf")
    it = 0
    while it < max_iter:
        U, s, Vh = torch.linalg.svd(M - S + mu_inv * Y, full_matrices=False)
        L = (U * (s - mu_inv).clamp_min(0)) @ Vh
        X = M - L + mu_inv * Y
        S = X.sign() * (X.abs() - lam * mu_inv).clamp_min(0)
        R = M - L - S
        Y = Y + mu * R
        it += 1
        residual = float(torch.linalg.norm(R))
        if residual < threshold:
            break
    return PCPResult(L, S, it, residual, mu, lam)


def numerical_rank(M: torch.Tensor) -> int:
    """numpy ``matrix_rank`` default tolerance: ``σ_max · max(n₁, n₂) · eps``."""
    s = torch.linalg.svdvals(M)
    tol = s.max() * max(M.shape) * torch.finfo(M.dtype).eps
    return int((s > tol).sum())


@dataclass
class LowRankDirections:
    raw: np.ndarray  # [r_f, D] principal directions of the region (rows of Vᵀ of L_A)
    projected: np.ndarray  # [r_f, D] the same projected onto null(L_B) and normalised
    rank_fore: int
    rank_back: int
    null_start: int
    iterations: tuple[int, int]


def lowrank_directions(
    A: np.ndarray | torch.Tensor,
    B: np.ndarray | torch.Tensor,
    lambda_inv: float | None = 60,
    mu_norm: str = "induced",
    max_iter: int = 10000,
    tol: float = 1e-7,
    num_relax: int = 0,
    device: str | torch.device | None = None,
) -> LowRankDirections:
    """The steps of the original's ``compute_directions.py``: PCP on A and B, ranks, null basis of L_B (with
    relaxation), projected directions.
    """
    fore = pcp(A, lambda_inv, mu_norm, max_iter, tol, device)
    back = pcp(B, lambda_inv, mu_norm, max_iter, tol, device)
    L_f, L_b = fore.low_rank.cpu(), back.low_rank.cpu()
    dim = L_f.shape[1]
    r_f, r_b = numerical_rank(L_f), numerical_rank(L_b)
    if r_f == 0:
        raise ValueError("LowRankGAN: the low-rank part of A is zero (region too small or lambda_inv too low)")
    _, _, Vh_f = torch.linalg.svd(L_f)
    _, _, Vh_b = torch.linalg.svd(L_b)
    V_f = Vh_f[:r_f]
    start = min(max(1, r_b - num_relax), dim - 1)
    N_b = Vh_b[start:]
    projected = (V_f @ N_b.T) @ N_b
    norms = projected.norm(dim=1, keepdim=True).clamp_min(torch.finfo(projected.dtype).tiny)
    return LowRankDirections(
        raw=V_f.numpy(),
        projected=(projected / norms).numpy(),
        rank_fore=r_f,
        rank_back=r_b,
        null_start=start,
        iterations=(fore.iterations, back.iterations),
    )
