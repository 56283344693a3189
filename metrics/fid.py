"""Fréchet Inception Distance on detector features: float64 sums, all-reduced under DDP.

FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_g S_r)^{1/2}), covariances unbiased (N-1) as ``np.cov``,
matrix square root by ``scipy.linalg.sqrtm`` (real part), as NVIDIA's ``frechet_inception_distance.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import nn

from metrics.feature_metric import FeatureMetric


def mean_cov(total: torch.Tensor, outer: torch.Tensor, n: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance from sum, sum of outer products and count."""
    n = int(n)
    if n < 2:
        raise ValueError(f"FID needs at least 2 samples per side, got {n}")
    mu = (total / n).cpu().numpy()
    cov = ((outer - n * torch.outer(total / n, total / n)) / (n - 1)).cpu().numpy()
    return mu, cov


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians (NVIDIA's formula, scipy sqrtm, real part)."""
    m = np.square(mu1 - mu2).sum()
    s, _ = scipy.linalg.sqrtm(np.dot(cov2, cov1), disp=False)
    return float(np.real(m + np.trace(cov2 + cov1 - s * 2)))


class FID(FeatureMetric):
    """FID as a torchmetrics Metric; ``update(images, real=True|False)``, ``compute()`` on every rank."""

    higher_is_better = False
    real_states = ("real_sum", "real_outer", "real_n")

    def __init__(self, detector: nn.Module, reset_real_features: bool = False, **kwargs: Any) -> None:
        super().__init__(detector, reset_real_features, **kwargs)
        d = self.num_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_n", torch.zeros([], dtype=torch.int64), dist_reduce_fx="sum")

    def update_features(self, feats: torch.Tensor, real: bool) -> None:
        side = "real" if real else "fake"
        feats = feats.to(torch.float64)
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + feats.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + feats.T @ feats)
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + feats.shape[0])

    def compute(self) -> torch.Tensor:
        mu_r, cov_r = mean_cov(self.real_sum, self.real_outer, self.real_n)
        mu_g, cov_g = mean_cov(self.fake_sum, self.fake_outer, self.fake_n)
        return torch.tensor(frechet_distance(mu_r, cov_r, mu_g, cov_g), dtype=torch.float64)

    @property
    def num_real(self) -> int:
        return int(self.real_n)

    def real_state(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k).cpu().numpy() for k in self.real_states}

    def load_real_state(self, state: dict[str, np.ndarray]) -> None:
        for k in self.real_states:
            ref = getattr(self, k)
            if tuple(state[k].shape) != tuple(ref.shape):
                raise ValueError(f"cached FID state {k} has shape {state[k].shape}, expected {tuple(ref.shape)}")
            setattr(self, k, torch.as_tensor(state[k], dtype=ref.dtype, device=ref.device))
