"""Statistics reported by loss code and read by their consumers at their own intervals.

Loss code reports tensors by name (``stats.report("signs/real", logits.sign())``), as NVlabs'
``torch_utils/training_stats.py``; the sums stay on the tensors' device, so reporting never synchronises.
A consumer opens a window over the names it reads (the step logger over everything, ADA over
``signs/real``) and reads the means accumulated since its last read with one host transfer, at its own
interval: the logger every ``log_every_n_steps`` iterations, ADA every ``ada.interval`` iterations.
"""

from __future__ import annotations

import re

import torch
import torch.distributed as dist


class StatsWindow:
    """Sums (value, square) and counts of the watched names since the last :meth:`read`."""

    def __init__(self, pattern: str):
        self.pattern = re.compile(pattern)
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, sums: torch.Tensor, count: int) -> None:
        if name in self.sums:
            if self.sums[name].device != sums.device:  # restored from a checkpoint before the move to the device
                self.sums[name] = self.sums[name].to(sums.device)
            self.sums[name] += sums
        else:
            self.sums[name] = sums.clone()
        self.counts[name] = self.counts.get(name, 0) + count

    def read(self, names: list[str] | None = None, all_ranks: bool = False) -> dict[str, float]:
        """Means since the last read ({} without reports), then reset. ``names`` fixes the order and set (needed
        with ``all_ranks``: the sums of every rank are added with one all-reduce, so all ranks agree)."""
        names = sorted(self.sums) if names is None else list(names)
        if not names:
            return {}
        device = next(iter(self.sums.values())).device if self.sums else torch.device("cpu")
        zero = torch.zeros(2, dtype=torch.float64, device=device)
        sums = torch.stack([self.sums.get(n, zero) for n in names])
        counts = torch.tensor([float(self.counts.get(n, 0)) for n in names], dtype=torch.float64)
        if all_ranks and dist.is_available() and dist.is_initialized():
            packed = torch.cat([sums[:, 0], counts.to(sums.device)])
            dist.all_reduce(packed)
            sums, counts = packed[: len(names), None], packed[len(names) :]
        totals = sums[:, 0].cpu().tolist()  # the one device read of this window
        counts = counts.cpu().tolist()
        self.sums, self.counts = {}, {}
        return {n: totals[i] / counts[i] for i, n in enumerate(names) if counts[i] > 0}

    def state_dict(self) -> dict:
        return {"sums": {k: v.detach().cpu().clone() for k, v in self.sums.items()}, "counts": dict(self.counts)}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}
        self.counts = {k: int(v) for k, v in state["counts"].items()}


class TrainingStats:
    """Named windows over reported statistics; see the module docstring."""

    def __init__(self):
        self.windows: dict[str, StatsWindow] = {}

    def window(self, name: str, pattern: str = ".*") -> StatsWindow:
        """The window ``name`` (created on first use) over the names matching ``pattern`` (a regex)."""
        if name not in self.windows:
            self.windows[name] = StatsWindow(pattern)
        return self.windows[name]

    def report(self, name: str, value: torch.Tensor) -> None:
        """Add ``value`` (any shape; every element counts once) to the windows that watch ``name``."""
        watching = [w for w in self.windows.values() if w.pattern.fullmatch(name)]
        if not watching:
            return
        v = value.detach().to(torch.float64)
        sums = torch.stack([v.sum(), v.square().sum()])
        for w in watching:
            w.add(name, sums, v.numel())

    def state_dict(self) -> dict:
        return {name: w.state_dict() for name, w in self.windows.items()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        for name, st in state.items():
            if name in self.windows:
                self.windows[name].load_state_dict(st, device)
