"""ReSeFa: region directions as generalised eigenvectors of (A, B) (arXiv 2202.09649 Sec. 3;
zhujiapeng/resefa ``compute_direction.py``).

Maximise the generalised Rayleigh quotient ``R(n) = nᵀAn / nᵀBn``; stationary points solve ``An = λBn``. The
suite solves the symmetric-definite problem with ``scipy.linalg.eigh(A, B)`` (``solver='eigh'``);
``solver='eig_inv'`` is the official ``eig(inv(B) @ A)`` path. Optional regulariser ``B ← B + τ·tr(B)·I``
(official ``--full_rank``, ``--tao 1e-3``, default off). Directions are sorted by eigenvalue (descending),
L2-normalised and sign-fixed so that the largest-magnitude entry is positive.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

SOLVERS = ("eigh", "eig_inv")


def _as_numpy(m: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    arr = m.detach().cpu().double().numpy() if isinstance(m, torch.Tensor) else np.asarray(m, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name}: expected a square matrix, got shape {arr.shape}")
    return arr


def fix_signs(directions: np.ndarray) -> np.ndarray:
    """Flip each row so that its largest-magnitude entry is positive (a deterministic sign)."""
    idx = np.abs(directions).argmax(axis=1)
    signs = np.sign(directions[np.arange(directions.shape[0]), idx])
    signs[signs == 0] = 1.0
    return directions * signs[:, None]


def regularise(B: np.ndarray, tau: float) -> np.ndarray:
    """``B + τ·tr(B)·I`` (official ``--full_rank`` option)."""
    return B + tau * np.trace(B) * np.eye(B.shape[0])


def rayleigh_quotient(n: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``nᵀAn / nᵀBn`` for a vector or for each row of a matrix."""
    n = np.atleast_2d(n)
    return np.einsum("ki,ij,kj->k", n, A, n) / np.einsum("ki,ij,kj->k", n, B, n)


def resefa_directions(
    A: np.ndarray | torch.Tensor,
    B: np.ndarray | torch.Tensor,
    solver: str = "eigh",
    full_rank: bool = False,
    tau: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """Directions ``[D, D]`` (rows, unit L2, best first) and their eigenvalues ``[D]`` (descending)."""
    if solver not in SOLVERS:
        raise ValueError(f"resefa.solver={solver!r}: expected one of {SOLVERS}")
    A, B = _as_numpy(A, "A"), _as_numpy(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"A {A.shape} and B {B.shape}: expected the same shape")
    A, B = 0.5 * (A + A.T), 0.5 * (B + B.T)
    if full_rank:
        B = regularise(B, tau)
    if solver == "eigh":
        try:
            values, vectors = scipy.linalg.eigh(A, B)
        except np.linalg.LinAlgError as err:
            raise np.linalg.LinAlgError(
                f"ReSeFa: B is not positive definite ({err}); set resefa.full_rank=true (B + tau*tr(B)*I)"
            ) from err
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order].T
    else:
        values, vectors = np.linalg.eig(np.linalg.inv(B) @ A)
        values, vectors = values.real, vectors.real.T
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[order]
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return fix_signs(vectors), values
