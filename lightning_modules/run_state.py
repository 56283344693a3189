"""Run state of a GAN training run, kept on the host and checkpointed.

Images seen and the iteration count drive every schedule (kimg stop, lazy regularisation, EMA ramp-up, ADA,
progressive growing, sample grids, checkpoints, metrics). They live here as Python integers, so reading them
never synchronises with an accelerator; the data sampler, the callbacks and the progress bar read the same
object (``pl_module.progress``). The random streams of every rank are captured and restored with them, so a
resumed run continues exactly.
"""

from __future__ import annotations

import dataclasses
import random
import time

import numpy as np
import torch


@dataclasses.dataclass
class RunProgress:
    """Host-side counters: ``seen_img`` (global real images shown to D), ``iteration`` (training steps), and the
    ``total_kimg`` budget, with the wall-clock rate since this process started (for the ETA)."""

    total_kimg: float
    seen_img: int = 0
    iteration: int = 0
    _start: tuple[float, int] | None = dataclasses.field(default=None, repr=False)

    @property
    def kimg(self) -> float:
        return self.seen_img / 1000

    @property
    def done(self) -> bool:
        return self.kimg >= self.total_kimg

    def advance(self, global_batch: int) -> None:
        if self._start is None:
            self._start = (time.monotonic(), self.seen_img)
        self.seen_img += int(global_batch)
        self.iteration += 1

    def seconds_per_kimg(self) -> float | None:
        """Wall-clock seconds per kimg since the first step of this process (None before two steps)."""
        if self._start is None or self.seen_img <= self._start[1]:
            return None
        return (time.monotonic() - self._start[0]) / ((self.seen_img - self._start[1]) / 1000)

    def eta_seconds(self) -> float | None:
        rate = self.seconds_per_kimg()
        return None if rate is None else max(self.total_kimg - self.kimg, 0.0) * rate

    @property
    def kimg_decimals(self) -> int:
        """Decimals that show kimg against the budget: 1, or 3 for runs shorter than 1 kimg (smoke runs)."""
        return 1 if self.total_kimg >= 1 else 3

    def summary(self) -> str:
        """``kimg 12.0/25000 (0.0 %), 3.1 s/kimg, ETA 21:33:20`` for logs and the progress bar."""
        pct = 100 * self.kimg / self.total_kimg if self.total_kimg > 0 else 100.0
        text = f"kimg {self.kimg:.{self.kimg_decimals}f}/{self.total_kimg:g} ({pct:.1f} %)"
        rate, eta = self.seconds_per_kimg(), self.eta_seconds()
        if rate is not None:
            text += f", {rate:.1f} s/kimg, ETA {format_duration(eta)}"
        return text

    def state_dict(self) -> dict:
        return {"seen_img": self.seen_img, "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        missing = {"seen_img", "iteration"} - set(state)
        if missing:
            raise KeyError(f"checkpoint run_state lacks {sorted(missing)} (expected seen_img and iteration)")
        self.seen_img, self.iteration = int(state["seen_img"]), int(state["iteration"])
        self._start = None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


def seed_rank(seed: int, rank: int, world_size: int) -> int:
    """Seed every random stream of this process from ``seed * world_size + rank`` (one stream per rank)."""
    rank_seed = seed * world_size + rank
    torch.manual_seed(rank_seed)
    np.random.seed(rank_seed % 2**32)  # noqa: NPY002 (seeds the global stream other code draws from)
    random.seed(rank_seed)
    return rank_seed


def capture_rng_state() -> dict:
    """torch (CPU and the current CUDA device) / numpy / python random states as plain types and tensors
    (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def gather_rng_states() -> list[dict]:
    """Every rank's random state, in rank order (a collective when a process group exists)."""
    state = capture_rng_state()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        states = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(states, state)
        return states
    return [state]
