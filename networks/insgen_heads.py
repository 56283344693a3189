"""InsGen contrastive heads (Yang et al. 2021, spec ``insgen.md`` §2-§3): MoCo-style projection + queue.

A :class:`ContrastiveHead` holds the query MLP ``h`` (``mlp``: in -> hidden -> ReLU -> out), its momentum copy
``h̄`` (``momentum_mlp``, no gradients), a FIFO queue of ``queue_size`` L2-normalised keys (stored as columns,
``queue`` [out, K], initialised with random unit vectors) and ``queue_ptr`` [1] (int64). State-dict keys equal
the official ``CLHead`` (``mlp.0.*``, ``mlp.2.*``, ``momentum_mlp.*``, ``queue``, ``queue_ptr``).

Distributed use (spec §11): keys are gathered across ranks before enqueueing only when a process group exists;
without one :func:`gather_across_ranks` is the identity, so the head runs on one device or the CPU. MoCo's
shuffle-BN is not reproduced: the MLP has no BatchNorm, so shuffling keys across ranks changes nothing.

Plain PyTorch (no Lightning): :func:`pooled_features` turns a StyleGAN2 discriminator into the feature
extractor the heads read (the spatially averaged input of the 4x4 epilogue).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE(q, k+, Q) = -log exp(q.k/tau) / (exp(q.k/tau) + sum_n exp(q.n/tau)), mean over the batch.

    ``q``, ``k``: [N, D] (normalised); ``queue``: [D, K], keys as columns (spec §3). Cross-entropy over
    [positive, queue] with the positive at index 0, as the official head.
    """
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue
    logits = torch.cat([l_pos, l_neg], dim=1) / tau
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


@torch.no_grad()
def gather_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks in rank order; the identity without an initialised process group."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x
    world = torch.distributed.get_world_size()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def pooled_features(D: nn.Module, img: torch.Tensor) -> torch.Tensor:
    """Instance feature f(img) (spec §2): output of D's last block b8 (the 4x4 epilogue input), averaged over
    space, fp32 -> [N, C(4)].

    Runs only the blocks b{R} ... b8 of a ``networks.stylegan2.Discriminator`` (the epilogue, its minibatch-std
    layer and the label mapping do not touch the feature), so samples are independent and batches can be
    concatenated freely. Equals ``D(img, c, return_features=True)[1][8].mean([2, 3])``.
    """
    x = None
    for res in D.block_resolutions:
        x, img = getattr(D, f"b{res}")(x, img)
    return pool_feature(x)


def pool_feature(b8_output: torch.Tensor) -> torch.Tensor:
    """The instance feature from D's b8 output [N, C(4), 4, 4]: spatial mean in fp32 -> [N, C(4)] (spec §2)."""
    return b8_output.to(torch.float32).mean(dim=[2, 3])


class ContrastiveHead(nn.Module):
    """Projection MLP, momentum MLP, key queue and temperature of one instance-discrimination task (§2).

    Args:
        in_dim: feature width (C(4) of D: 512 for the paper presets).
        hidden_dim: hidden width of the MLP (None = ``in_dim``, the official 512 -> 512 -> 128).
        out_dim: embedding width (128).
        queue_size: number of queued negative keys K.
        tau: temperature (0.2). momentum: m of the momentum MLP (0.999).
        gather: how keys from all ranks are collected before enqueueing (default
            :func:`gather_across_ranks`; tests pass a function that simulates ranks).
    """

    def __init__(
        self,
        in_dim: int = 512,
        hidden_dim: int | None = None,
        out_dim: int = 128,
        queue_size: int = 3500,
        tau: float = 0.2,
        momentum: float = 0.999,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("queue_size", queue_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"ContrastiveHead {name}: expected a positive integer, got {value!r}")
        if not tau > 0:
            raise ValueError(f"ContrastiveHead tau: expected > 0, got {tau!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"ContrastiveHead momentum: expected a value in [0, 1], got {momentum!r}")
        hidden_dim = int(hidden_dim or in_dim)
        self.init_kwargs = dict(
            in_dim=int(in_dim),
            hidden_dim=hidden_dim,
            out_dim=int(out_dim),
            queue_size=int(queue_size),
            tau=float(tau),
            momentum=float(momentum),
        )
        self.tau = float(tau)
        self.momentum = float(momentum)
        self.gather = gather or gather_across_ranks
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
        self.momentum_mlp = copy.deepcopy(self.mlp).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(out_dim, int(queue_size)), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def queue_size(self) -> int:
        return self.queue.shape[1]

    def resize_queue(self, queue_size: int) -> None:
        """Fresh queue of ``queue_size`` random unit keys, pointer 0 (queue size resolved from the dataset)."""
        if int(queue_size) < 1:
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

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m * theta_k + (1 - m) * theta_q for the momentum MLP (MoCo eq. 2)."""
        for p_k, p_q in zip(self.momentum_mlp.parameters(), self.mlp.parameters(), strict=True):
            p_k.mul_(self.momentum).add_(p_q.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Gather keys from all ranks (B in total); B > K: the first K overwrite the whole queue (pointer
        kept, as the official head), otherwise write at the pointer with wrap-around and advance it mod K
        (spec §2, queue update rule)."""
        keys = self.gather(keys.detach().to(self.queue.dtype))
        b, k = keys.shape[0], self.queue_size
        if b > k:
            self.queue.copy_(keys[:k].T)
            return
        ptr = int(self.queue_ptr)
        idx = (torch.arange(b, device=self.queue.device) + ptr) % k
        self.queue[:, idx] = keys.T
        self.queue_ptr[0] = (ptr + b) % k

    def forward(self, feat_q: torch.Tensor, feat_k: torch.Tensor, update_momentum: bool = True):
        """(InfoNCE loss, q, k) for query features ``feat_q`` and key features ``feat_k`` against the queue
        as it was before this call. ``update_momentum`` runs the momentum step first, as the official head
        does on every forward. Enqueueing is left to the caller (which keys go in is a choice, spec §10)."""
        if update_momentum:
            self.momentum_update()
        q = self.query(feat_q)
        k = self.key(feat_k)
        loss = info_nce(q, k, self.queue.clone(), self.tau)
        return loss, q, k
