"""Base of the detector-feature metrics (FID/KID/PR): the detector is held OUTSIDE the module tree.

The detector is therefore never in ``state_dict()`` or a Lightning checkpoint (~95 MB of Inception weights), and all
metric states are ``persistent=False``. Real-image states survive ``reset()`` unless ``reset_real_features``,
so reference statistics are computed (or loaded from the cache) once per run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric


class FeatureMetric(Metric):
    """Feeds ``update(images, real)`` through the detector; subclasses define states and ``compute``."""

    full_state_update = False
    is_differentiable = False
    real_states: tuple[str, ...] = ()

    def __init__(self, detector: nn.Module, reset_real_features: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        num_features = getattr(detector, "num_features", None)
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"detector {type(detector).__name__} needs an int attribute num_features >= 1")
        # object.__setattr__ skips nn.Module registration: not a submodule, never in state_dict.
        object.__setattr__(self, "detector", detector)
        self.num_features = num_features
        self.reset_real_features = reset_real_features

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Detector features as float64 [N, num_features] (the detector follows the images' device)."""
        det = self.detector
        param = next(iter(det.parameters()), None)
        if param is not None and param.device != images.device:
            det.to(images.device)
        feats = det(images)
        if feats.ndim != 2 or feats.shape[1] != self.num_features:
            raise ValueError(f"detector returned {list(feats.shape)}, expected [N, {self.num_features}] (num_features)")
        return feats.to(torch.float64)

    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add a batch of images (uint8 NCHW for the image detectors) to the real or the fake side."""
        self.update_features(self.features(images), real)

    def update_features(self, feats: torch.Tensor, real: bool) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        if self.reset_real_features:
            super().reset()
            return
        # torchmetrics clears list states in place: keep copies of the lists
        kept = {k: list(v) if isinstance(v, list) else v for k, v in ((k, getattr(self, k)) for k in self.real_states)}
        super().reset()
        for k, v in kept.items():
            setattr(self, k, v)

    @property
    def num_real(self) -> int:
        raise NotImplementedError

    def real_state(self) -> dict[str, np.ndarray]:
        """Local (this rank's) real-side state as NumPy arrays, for the statistics cache."""
        raise NotImplementedError

    def load_real_state(self, state: dict[str, np.ndarray]) -> None:
        """Replace the real-side state (load on ONE rank only under DDP: states are summed/concatenated)."""
        raise NotImplementedError
