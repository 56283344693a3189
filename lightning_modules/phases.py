"""Training phases as data, as in NVlabs stylegan2-ada-pytorch ``training/training_loop.py``.

A :class:`Phase` names what one optimisation step of an iteration does: the optimisers whose parameters it
trains (all others are frozen for the phase), the loss function, the interval (lazy regularisation runs a phase
every k-th iteration, iteration 0 included) and the gain its loss is multiplied by (k for lazy regularisation,
Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN", Sec. 4 / Appendix B). A method
changes the list (adds, removes, replaces phases); the engine in :class:`lightning_modules.gan.GANModule` runs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class PhaseOutput:
    """What a phase's loss function returns: named scalar ``terms`` (summed, times the phase gain, for the
    backward pass and logged as ``loss/<name>``) and the ``records`` of the passes it ran (generator batches,
    D outputs with their taps), which a method's override reads instead of keeping tensors between calls."""

    terms: dict[str, torch.Tensor]
    records: dict[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One optimisation step of an iteration.

    Args:
        name: label in logs and profiles (``Gmain``, ``Greg``, ``Dmain``, ``Dreg``, ...).
        optimizers: names of the optimisers (see :class:`OptimizerSpec`) whose parameters this phase trains and
            steps, in order; every other optimised parameter is frozen during the phase.
        loss: ``loss(batch) -> PhaseOutput`` computed with those parameters trainable.
        interval: the phase runs when ``iteration % interval == 0``; 0 disables it.
        gain: multiplies the summed loss before the backward pass (the interval for lazy regularisation).
    """

    name: str
    optimizers: tuple[str, ...]
    loss: Callable[..., PhaseOutput]
    interval: int = 1
    gain: float = 1.0

    def __post_init__(self):
        if isinstance(self.optimizers, str) or not self.optimizers:
            raise ValueError(
                f"Phase {self.name}: optimizers must be a non-empty tuple of names, got {self.optimizers!r}"
            )
        if int(self.interval) != self.interval or self.interval < 0:
            raise ValueError(f"Phase {self.name}: interval must be an integer >= 0, got {self.interval!r}")

    def runs_at(self, iteration: int) -> bool:
        return self.interval > 0 and iteration % self.interval == 0


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """An Adam optimiser over ``params`` with the lazy-regularisation correction for ``reg_interval``."""

    name: str
    params: Callable[[], Iterable[nn.Parameter]]
    lr: float
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    reg_interval: int | None = None
    impl: str = "fused"  # choice [D]: torch's fused Adam kernel (the original: the per-tensor loop); rounding only

    def build(self) -> torch.optim.Optimizer:
        return lazy_adam(self.params(), self.lr, self.betas, self.eps, self.reg_interval, self.impl)


# Adam implementations of torch: one fused kernel over all tensors, multi-tensor (foreach) ops, or the per-tensor
# loop (the original's default on the CPU). The same update; fused rounds differently (last bits).
ADAM_IMPLS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}


def lazy_adam(
    params: Iterable[nn.Parameter], lr: float, betas, eps: float, reg_interval: int | None, impl: str = "fused"
):
    """Adam with the lazy-regularisation correction (Karras et al. 2020, Appendix B): lr*k/(k+1), beta**(k/(k+1));
    ``impl``: a key of :data:`ADAM_IMPLS`."""
    if impl not in ADAM_IMPLS:
        raise ValueError(f"optimizer impl={impl!r}: expected one of {sorted(ADAM_IMPLS)}")
    if reg_interval:
        ratio = reg_interval / (reg_interval + 1)
        lr = lr * ratio
        betas = tuple(b**ratio for b in betas)
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, **ADAM_IMPLS[impl])


def sanitize_gradients(params: Iterable[nn.Parameter]) -> None:
    """NaN -> 0, +inf -> 1e5, -inf -> -1e5 before every step, as NVlabs ``training_loop.py`` does."""
    grads = [p.grad for p in params if p.grad is not None]
    for g in grads:
        torch.nan_to_num(g, nan=0, posinf=1e5, neginf=-1e5, out=g)


def replace_phase(phases: list[Phase], name: str, **changes) -> list[Phase]:
    """A copy of ``phases`` with the phase ``name`` changed (``dataclasses.replace``); an unknown name is an error."""
    if name not in [p.name for p in phases]:
        raise KeyError(f"no phase {name!r}; the phases are {[p.name for p in phases]}")
    return [dataclasses.replace(p, **changes) if p.name == name else p for p in phases]
