"""Instance discrimination rules of InsGen (Yang et al., NeurIPS 2021, arXiv 2106.04566, Sec. 3.2), after MoCo.

The networks (:class:`networks.insgen_heads.ContrastiveHead`) are plain modules; the training rules live here:
InfoNCE against the queue, the momentum update of the key MLP (MoCo, He et al. 2020, Eq. 2) and the FIFO
enqueue of keys gathered from every rank (genforce/insgen ``training/contrastive_head.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from networks.insgen_heads import ContrastiveHead


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE(q, k+, Q) = -log exp(q.k/tau) / (exp(q.k/tau) + sum_n exp(q.n/tau)), mean over the batch.

    ``q``, ``k``: [N, D] (normalised); ``queue``: [D, K], keys as columns. Cross-entropy over
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


@torch.no_grad()
def momentum_update(head: ContrastiveHead, momentum: float) -> None:
    """theta_k <- m * theta_k + (1 - m) * theta_q for the momentum MLP (MoCo Eq. 2)."""
    for p_k, p_q in zip(head.momentum_mlp.parameters(), head.mlp.parameters(), strict=True):
        p_k.mul_(momentum).add_(p_q.detach(), alpha=1 - momentum)


@torch.no_grad()
def enqueue(
    head: ContrastiveHead, keys: torch.Tensor, gather: Callable[[torch.Tensor], torch.Tensor] = gather_across_ranks
) -> None:
    """Gather keys from all ranks (B in total); B > K: the first K overwrite the whole queue (pointer kept, as the
    official head), otherwise write at the pointer with wrap-around and advance it mod K. The pointer is updated
    on the device, so enqueueing never synchronises."""
    keys = gather(keys.detach().to(head.queue.dtype))
    b, k = keys.shape[0], head.queue_size
    if b > k:
        head.queue.copy_(keys[:k].T)
        return
    idx = (torch.arange(b, device=head.queue.device) + head.queue_ptr) % k
    head.queue[:, idx] = keys.T
    head.queue_ptr.copy_((head.queue_ptr + b) % k)


def instance_loss(
    head: ContrastiveHead,
    feat_q: torch.Tensor,
    feat_k: torch.Tensor,
    tau: float,
    momentum: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(InfoNCE loss, q, k) of query features ``feat_q`` and key features ``feat_k`` against the queue as it was
    before this call; with ``momentum`` the key MLP is updated first, as the official head does on every forward.
    Enqueueing is left to the caller (which keys go in is a choice of the method)."""
    if momentum is not None:
        momentum_update(head, momentum)
    q = head.query(feat_q)
    k = head.key(feat_k)
    return info_nce(q, k, head.queue.clone(), tau), q, k


def pool_feature(b8_output: torch.Tensor) -> torch.Tensor:
    """InsGen's instance feature from D's b8 output [N, C(4), 4, 4]: spatial mean in fp32 -> [N, C(4)]."""
    return b8_output.to(torch.float32).mean(dim=[2, 3])
