"""InsGen contrastive heads (Yang et al., NeurIPS 2021, arXiv 2106.04566, Sec. 3.2): MoCo-style projections + queue.

A :class:`ContrastiveHead` holds the query MLP ``h`` (``mlp``: in -> hidden -> ReLU -> out), its momentum copy
``h̄`` (``momentum_mlp``, no gradients), a FIFO queue of ``queue_size`` L2-normalised keys (stored as columns,
``queue`` [out, K], initialised with random unit vectors) and ``queue_ptr`` [1] (int64). State-dict keys equal
the official ``CLHead`` (genforce/insgen ``training/contrastive_head.py``: ``mlp.0.*``, ``mlp.2.*``,
``momentum_mlp.*``, ``queue``, ``queue_ptr``).

A plain module: the InfoNCE loss, the momentum update and the rank-gathered enqueue are training rules and live
in :mod:`lightning_modules.contrastive`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class ContrastiveHead(nn.Module):
    """Projection MLP, momentum MLP and key queue of one instance-discrimination task.

    Args:
        in_dim: feature width (C(4) of D: 512 for the paper presets).
        hidden_dim: hidden width of the MLP (None = ``in_dim``, the official 512 -> 512 -> 128).
        out_dim: embedding width (128).
        queue_size: number of queued negative keys K.
    """

    def __init__(self, in_dim: int = 512, hidden_dim: int | None = None, out_dim: int = 128, queue_size: int = 3500):
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("queue_size", queue_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"ContrastiveHead {name}: expected a positive integer, got {value!r}")
        hidden_dim = int(hidden_dim or in_dim)
        self.init_kwargs = dict(
            in_dim=int(in_dim), hidden_dim=hidden_dim, out_dim=int(out_dim), queue_size=int(queue_size)
        )
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
        self.momentum_mlp = copy.deepcopy(self.mlp).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(out_dim, int(queue_size)), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def queue_size(self) -> int:
        return self.queue.shape[1]

    def resize_queue(self, queue_size: int) -> None:
        """Fresh queue of ``queue_size`` random unit keys, pointer 0 (queue size resolved from the dataset)."""
        if int(queue_size) != queue_size or int(queue_size) < 1:
            raise ValueError(f"ContrastiveHead queue_size: expected a positive integer, got {queue_size!r}")
        fresh = F.normalize(torch.randn(self.queue.shape[0], int(queue_size)), dim=0)
        self.queue = fresh.to(self.queue.device)
        self.queue_ptr.zero_()
        self.init_kwargs["queue_size"] = int(queue_size)

    def query(self, feat: torch.Tensor) -> torch.Tensor:
        """q = h(f) / ||h(f)|| (gradients flow into the MLP and the features)."""
        return F.normalize(self.mlp(feat.to(torch.float32)), dim=1)

    @torch.no_grad()
    def key(self, feat: torch.Tensor) -> torch.Tensor:
        """k = h̄(f) / ||h̄(f)|| (no gradients)."""
        return F.normalize(self.momentum_mlp(feat.detach().to(torch.float32)), dim=1)
