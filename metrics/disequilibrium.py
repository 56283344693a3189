"""Disequilibrium indicator (DI) of EqGAN-SA (Wang et al., CVPR 2022, arXiv 2112.00718; the FID/DI ablation table
of the project page, genforce/eqgan-sa ``docs/assets/quan.png``).

DI is reported in the paper but **not implemented in the released code** (genforce/eqgan-sa has no DI code).
Suite definition, unverified [M]: DI = E_x[D(x)] − E_z[D(G(z))] on D's raw logits (the paper's values > 1 rule out
probabilities). Positive when D separates reals from fakes; ≈ 0 for a freshly initialised D. The protocol (sample
count, which G, augmentation, which reals) is an open choice [X]: :func:`evaluate_dataset_di` is the paper-style
measurement (fixed networks, reals drawn from a given, ideally held-out, set); the training-time monitor of
``lightning_modules.eqgan_sa`` scores the reals D was just updated on and is optimistic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric


class DisequilibriumIndicator(Metric):
    """DI as a torchmetrics Metric: ``update(logits, real=True|False)``; ``compute()`` = mean real − mean fake.

    Sums are float64 and all-reduced (sum) under DDP, so every rank computes the same value.
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros([], dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_n", torch.zeros([], dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, real: bool) -> None:
        side = "real" if real else "fake"
        logits = logits.detach().to(torch.float64).reshape(-1)
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + logits.sum())
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + logits.numel())

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean real logit, mean fake logit) of the local state; raises if a side has no samples."""
        if int(self.real_n) == 0 or int(self.fake_n) == 0:
            raise ValueError(
                f"DisequilibriumIndicator needs real and fake logits, got {int(self.real_n)} real and "
                f"{int(self.fake_n)} fake"
            )
        return self.real_sum / self.real_n, self.fake_sum / self.fake_n

    def compute(self) -> torch.Tensor:
        real, fake = self.means()
        return real - fake


def _cycle(loader: Iterable) -> Iterator:
    while True:
        yield from loader


@torch.no_grad()
def evaluate_di(
    G: nn.Module,
    D: nn.Module,
    reals: Iterable,
    n_samples: int = 10000,
    batch_size: int = 32,
    augment: nn.Module | None = None,
    seed: int = 0,
    G_kwargs: dict | None = None,
) -> dict[str, float]:
    """DI protocol [X]: ``n_samples`` reals and as many fakes, pure batches, D and G in eval mode.

    ``reals`` yields uint8 images or ``(img, c)`` batches (cycled if shorter than ``n_samples``); fakes come from
    ``G`` (the trained G by default in the suite, ``di.generator``) with the real batch's labels. Every random draw
    (z, and G's own: EqGAN-SA heatmaps, noise) comes from ``seed`` without touching the caller's random state.
    ``augment`` (None = ``di.augment: false``) is applied to both sides. Returns DI and both means.
    """
    device = next(iter(D.parameters()), torch.empty(0)).device
    metric = DisequilibriumIndicator().to(device)
    gen = torch.Generator().manual_seed(seed)
    d_mode, g_mode = D.training, G.training
    D.eval()
    G.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            seen = 0
            for batch in _cycle(reals):
                img, c = (batch[0], batch[1]) if isinstance(batch, list | tuple) else (batch, None)
                img = img[: min(batch_size, n_samples - seen)].to(device)
                if img.dtype == torch.uint8:
                    img = img.to(torch.float32) / 127.5 - 1
                n = img.shape[0]
                c = torch.zeros([n, 0]) if c is None else c[:n]
                c = c.to(device=device, dtype=torch.float32)
                z = torch.randn([n, G.z_dim], generator=gen).to(device)
                fake = G(z, c, **(G_kwargs or {}))
                if augment is not None:
                    img, fake = augment(img), augment(fake)
                metric.update(D(img, c), real=True)
                metric.update(D(fake, c), real=False)
                seen += n
                if seen >= n_samples:
                    break
        real, fake = metric.means()
        return {"DI": float(real - fake), "D_real": float(real), "D_fake": float(fake), "n": seen}
    finally:
        D.train(d_mode)
        G.train(g_mode)


def evaluate_dataset_di(
    G: nn.Module,
    D: nn.Module,
    dataset,
    n_samples: int = 10000,
    batch_size: int = 32,
    seed: int = 0,
    reals: str = "",
    generator: str = "G",
) -> dict[str, Any]:
    """The paper-style DI of fixed networks: ``n_samples`` distinct reals of ``dataset`` (a map-style dataset of
    ``(uint8 image, label)``; pass a held-out set where one exists) in a seeded random order, as many fakes.

    Returns ``{"name": "di", "results": {DI, D_real, D_fake}, "protocol": {...}}``, the record layout of
    ``metrics.evaluation.evaluate_generator``; ``reals`` (the set's name) and ``generator`` (``G`` or ``G_ema``)
    are recorded. Fewer images than ``n_samples``: each is used once and ``n`` says how many.
    """
    from torch.utils.data import DataLoader, Subset

    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n_samples]
    loader = DataLoader(Subset(dataset, order.tolist()), batch_size=batch_size, shuffle=False)
    n = min(n_samples, len(order))
    out = evaluate_di(G, D, loader, n_samples=n, batch_size=batch_size, seed=seed)
    protocol = {
        "metric": "di",
        "definition": "E[D(x)] - E[D(G(z))], raw logits, D and G in eval mode, pure batches, no augmentation",
        "n_real": out["n"],
        "n_fake": out["n"],
        "reals": reals,
        "generator": generator,
        "seed": seed,
    }
    return {"name": "di", "results": {k: out[k] for k in ("DI", "D_real", "D_fake")}, "protocol": protocol}
