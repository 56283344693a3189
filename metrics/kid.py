"""Kernel Inception Distance (arXiv 1801.01401): unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3,
averaged over ``num_subsets`` random subsets of ``m = min(n_real, n_fake, max_subset_size)`` (NVIDIA's
``kernel_inception_distance.py``; subsets drawn from a seeded RandomState instead of the global one).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics.utilities import dim_zero_cat

from metrics.feature_metric import FeatureMetric


def kernel_distance(real: np.ndarray, fake: np.ndarray, num_subsets: int, max_subset_size: int, seed: int) -> float:
    """NVIDIA's KID estimator on feature arrays [N, d]."""
    n = real.shape[1]
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 real and 2 fake samples, got {real.shape[0]} / {fake.shape[0]}")
    rnd = np.random.RandomState(seed)
    t = 0.0
    for _ in range(num_subsets):
        x = fake[rnd.choice(fake.shape[0], m, replace=False)]
        y = real[rnd.choice(real.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


class KID(FeatureMetric):
    """KID as a torchmetrics Metric (features kept, gathered with ``cat`` under DDP)."""

    higher_is_better = False
    real_states = ("real_features",)

    def __init__(
        self,
        detector: nn.Module,
        num_subsets: int = 100,
        max_subset_size: int = 1000,
        seed: int = 0,
        reset_real_features: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(detector, reset_real_features, **kwargs)
        self.num_subsets, self.max_subset_size, self.seed = num_subsets, max_subset_size, seed
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update_features(self, feats: torch.Tensor, real: bool) -> None:
        (self.real_features if real else self.fake_features).append(feats.to(torch.float32))

    def compute(self) -> torch.Tensor:
        real = _as_numpy(self.real_features, self.num_features)
        fake = _as_numpy(self.fake_features, self.num_features)
        kid = kernel_distance(real, fake, self.num_subsets, self.max_subset_size, self.seed)
        return torch.tensor(kid, dtype=torch.float64)

    @property
    def num_real(self) -> int:
        return int(sum(f.shape[0] for f in _as_list(self.real_features)))

    def real_state(self) -> dict[str, np.ndarray]:
        return {"real_features": _as_numpy(self.real_features, self.num_features).astype(np.float32)}

    def load_real_state(self, state: dict[str, np.ndarray]) -> None:
        feats = state["real_features"]
        if feats.ndim != 2 or feats.shape[1] != self.num_features:
            raise ValueError(f"cached KID features have shape {feats.shape}, expected [N, {self.num_features}]")
        self.real_features = [torch.as_tensor(feats, dtype=torch.float32, device=self.device)]


def _as_list(state: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
    return [state] if isinstance(state, torch.Tensor) else list(state)


def _as_numpy(state: list[torch.Tensor] | torch.Tensor, dim: int) -> np.ndarray:
    """A list/cat state (after sync it may be one tensor) -> float64 array [N, dim]."""
    items = _as_list(state)
    if not items:
        return np.zeros([0, dim])
    return dim_zero_cat(items).double().cpu().numpy()
