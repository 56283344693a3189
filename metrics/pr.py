"""Improved precision and recall (Kynkäänniemi et al., arXiv 1904.06991) with k-NN manifolds, k = 3.

As NVIDIA's ``precision_recall.py``: the radius of each manifold point is the distance to its k-th nearest
neighbour in the same set (``kthvalue(k + 1)``: the point itself is at distance 0); precision = fraction of
fakes inside the real manifold, recall = fraction of reals inside the fake manifold. Suite choice [D]:
distances in float32 (NVIDIA rounds the radii to float16).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics.utilities import dim_zero_cat

from metrics.feature_metric import FeatureMetric


def _within_manifold(manifold: torch.Tensor, probes: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Boolean per probe: inside the union of k-NN balls around the manifold points."""
    if manifold.shape[0] <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per side, got {manifold.shape[0]}")
    radii = torch.cat([torch.cdist(m, manifold).kthvalue(k + 1, dim=1).values for m in manifold.split(batch)])
    return torch.cat([(torch.cdist(p, manifold) <= radii[None, :]).any(dim=1) for p in probes.split(batch)])


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, batch: int = 1024) -> tuple[float, float]:
    """(precision, recall) of ``fake`` against ``real`` feature sets [N, d]."""
    real, fake = real.float(), fake.float()
    precision = _within_manifold(real, fake, k, batch).float().mean().item()
    recall = _within_manifold(fake, real, k, batch).float().mean().item()
    return precision, recall


class PrecisionRecall(FeatureMetric):
    """Precision/recall as a torchmetrics Metric; ``compute()`` returns a tensor [precision, recall]."""

    higher_is_better = True
    real_states = ("real_features",)

    def __init__(self, detector: nn.Module, k: int = 3, reset_real_features: bool = False, **kwargs: Any) -> None:
        super().__init__(detector, reset_real_features, **kwargs)
        self.k = k
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update_features(self, feats: torch.Tensor, real: bool) -> None:
        (self.real_features if real else self.fake_features).append(feats.to(torch.float32))

    def compute(self) -> torch.Tensor:
        real = dim_zero_cat(self.real_features)
        fake = dim_zero_cat(self.fake_features)
        return torch.tensor(precision_recall(real, fake, self.k))

    @property
    def num_real(self) -> int:
        st = self.real_features
        return int(st.shape[0]) if isinstance(st, torch.Tensor) else sum(int(f.shape[0]) for f in st)

    def real_state(self) -> dict:
        st = self.real_features
        if isinstance(st, list) and not st:
            return {"real_features": torch.zeros(0, self.num_features).numpy()}
        return {"real_features": dim_zero_cat(st).cpu().numpy()}

    def load_real_state(self, state: dict) -> None:
        feats = state["real_features"]
        if feats.ndim != 2 or feats.shape[1] != self.num_features:
            raise ValueError(f"cached PR features have shape {feats.shape}, expected [N, {self.num_features}]")
        self.real_features = [torch.as_tensor(feats, dtype=torch.float32, device=self.device)]
