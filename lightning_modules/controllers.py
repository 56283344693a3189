"""Training controllers: the ADA augmentation-probability controller.

Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data" (arXiv 2006.06676), Sec. 3:
the overfitting heuristic r_t = E[sign(D(x_real))] is measured over ``interval`` iterations and p moves by
sign(r_t - target) * batch * interval / (kimg * 1000), clamped at 0 (NVlabs ``training/training_loop.py``).
The controller reads r_t from the ``signs/real`` statistic that the loss reports (a window of
:class:`~lightning_modules.training_stats.TrainingStats`, summed over all ranks), so every rank applies the same
update; the host keeps p as a float, read by the training loop without touching the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lightning_modules.training_stats import TrainingStats

ADA_STAT = "signs/real"


class AdaptiveAugment:
    """p controller of ADA over an ``AugmentPipe`` (``pipe.p`` is a buffer; this keeps its host copy).

    Args:
        pipe: the augment pipe whose ``p`` buffer is driven.
        stats: the module's statistics; the controller opens its window ``ada`` on :data:`ADA_STAT`.
        target: r_t target (0.6). interval: iterations between adjustments (4). kimg: images (x1000) for p to
            move by 1 (500; NVlabs uses 100 when a run starts from a snapshot).
    """

    def __init__(self, pipe, stats: TrainingStats, target: float = 0.6, interval: int = 4, kimg: float = 500):
        if int(interval) != interval or interval < 1:
            raise ValueError(f"model.ada.interval: expected a positive integer, got {interval!r}")
        if not kimg > 0:
            raise ValueError(f"model.ada.kimg: expected > 0, got {kimg!r}")
        self.pipe = pipe
        self.window = stats.window("ada", pattern=ADA_STAT)
        self.target = float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self.last_rt = math.nan

    def update(self, iteration: int, global_batch: int, p: float) -> float:
        """After iteration ``iteration`` (1-based count of finished iterations): every ``interval``-th reads r_t
        over the interval (one host transfer) and returns the new p; otherwise returns ``p`` unchanged. An
        interval without reports leaves p unchanged."""
        if iteration % self.interval != 0:
            return p
        r_t = self.window.read([ADA_STAT], all_ranks=True).get(ADA_STAT)
        if r_t is None:
            self.last_rt = math.nan
            return p
        self.last_rt = r_t
        step = global_batch * self.interval / (self.kimg * 1000)
        adjust = math.copysign(step, r_t - self.target) if r_t != self.target else 0.0
        # float32 arithmetic as the reference's in-place update of the fp32 buffer, so host and buffer agree.
        return max(float(np.float32(p) + np.float32(adjust)), 0.0)


@torch.no_grad()
def set_augment_p(pipe, p: float) -> None:
    """Write the host value ``p`` into the pipe's buffer (a host-to-device copy, never a read)."""
    pipe.p.fill_(p)
