"""InsGen training rules: queue rule, rank consistency, InfoNCE, momentum update, instance feature (budget ~15 s)."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from lightning_modules.contrastive import enqueue, gather_across_ranks, info_nce, instance_loss, pool_feature
from networks.insgen_heads import ContrastiveHead


def unit_keys(n: int, dim: int = 4, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_queue_enqueues_at_pointer_and_wraps_around():
    head = ContrastiveHead(in_dim=8, out_dim=4, queue_size=5)
    initial = head.queue.clone()
    a, b = unit_keys(3, seed=1), unit_keys(3, seed=2)
    enqueue(head, a)
    assert int(head.queue_ptr) == 3
    torch.testing.assert_close(head.queue[:, :3], a.T)
    torch.testing.assert_close(head.queue[:, 3:], initial[:, 3:])
    enqueue(head, b)  # columns 3, 4, then wraps to 0
    assert int(head.queue_ptr) == 1
    torch.testing.assert_close(head.queue[:, 3:5], b[:2].T)
    torch.testing.assert_close(head.queue[:, 0], b[2])
    torch.testing.assert_close(head.queue[:, 1:3], a[1:].T)


def test_queue_batch_larger_than_queue_overwrites_all_and_equal_batch_wraps():
    head = ContrastiveHead(in_dim=8, out_dim=4, queue_size=5)
    enqueue(head, unit_keys(2, seed=3))
    big = unit_keys(7, seed=4)
    enqueue(head, big)  # B > K: the first K keys fill the queue, pointer kept
    torch.testing.assert_close(head.queue, big[:5].T)
    assert int(head.queue_ptr) == 2
    same = unit_keys(5, seed=5)
    enqueue(head, same)  # B == K: written from the pointer with wrap-around
    torch.testing.assert_close(head.queue[:, 2:], same[:3].T)
    torch.testing.assert_close(head.queue[:, :2], same[3:].T)
    assert int(head.queue_ptr) == 2


def test_queue_is_rank_consistent_with_simulated_gather():
    """Two ranks enqueue their own keys; the gather returns all keys in rank order on every rank."""
    per_rank = [unit_keys(3, seed=10), unit_keys(3, seed=11)]

    def gather(keys):  # what all_gather + cat returns on every rank
        return torch.cat(per_rank)

    torch.manual_seed(0)
    ranks = [ContrastiveHead(in_dim=8, out_dim=4, queue_size=8) for _ in range(2)]
    for r in range(2):
        ranks[r].queue.copy_(ranks[0].queue)
    torch.manual_seed(0)
    single = ContrastiveHead(in_dim=8, out_dim=4, queue_size=8)
    single.queue.copy_(ranks[0].queue)
    for _ in range(3):
        for r, head in enumerate(ranks):
            enqueue(head, per_rank[r], gather=gather)
        enqueue(single, torch.cat(per_rank))
    assert torch.equal(ranks[0].queue, ranks[1].queue)
    assert torch.equal(ranks[0].queue, single.queue)
    assert int(ranks[0].queue_ptr) == int(single.queue_ptr) == (3 * 6) % 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same seed on every rank: same initial queue
        head = ContrastiveHead(in_dim=8, out_dim=4, queue_size=8)
        for step in range(3):
            enqueue(head, unit_keys(3, seed=100 * step + rank))
        torch.save({"queue": head.queue, "ptr": head.queue_ptr}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_gloo_queue_equals_single_process(tmp_path):
    """2-process gloo and one process without a process group give the same queue."""
    mp.spawn(_gloo_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    single = ContrastiveHead(in_dim=8, out_dim=4, queue_size=8)
    for step in range(3):
        enqueue(single, torch.cat([unit_keys(3, seed=100 * step + r) for r in range(2)]))
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["queue"], single.queue), f"rank {rank} queue differs"
        assert int(got["ptr"]) == int(single.queue_ptr)


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 4)
    assert gather_across_ranks(x) is x


def test_info_nce_matches_hand_computation_on_three_samples():
    tau = 0.5
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=1)
    k = F.normalize(torch.tensor([[0.8, 0.6], [0.6, 0.8], [1.0, 0.0]]), dim=1)
    queue = F.normalize(torch.tensor([[1.0, 0.0], [0.0, -1.0]]), dim=1).T  # keys as columns
    expected = 0.0
    for i in range(3):
        pos = sum(q[i, d].item() * k[i, d].item() for d in range(2)) / tau
        negs = [sum(q[i, d].item() * queue[d, j].item() for d in range(2)) / tau for j in range(2)]
        expected += -math.log(math.exp(pos) / (math.exp(pos) + sum(math.exp(n) for n in negs)))
    expected /= 3
    assert info_nce(q, k, queue, tau).item() == pytest.approx(expected, rel=1e-6)


def test_momentum_update_follows_formula_and_loss_gives_grads_only_to_query_mlp():
    torch.manual_seed(0)
    head = ContrastiveHead(in_dim=6, hidden_dim=5, out_dim=4, queue_size=7)
    with torch.no_grad():
        for p in head.mlp.parameters():
            p.add_(torch.randn_like(p))
    theta_q = [p.detach().clone() for p in head.mlp.parameters()]
    theta_k = [p.detach().clone() for p in head.momentum_mlp.parameters()]
    feat_q, feat_k = torch.randn(3, 6, requires_grad=True), torch.randn(3, 6)
    loss, q, k = instance_loss(head, feat_q, feat_k, tau=0.2, momentum=0.9)
    for p_k, old_k, new_q in zip(head.momentum_mlp.parameters(), theta_k, theta_q, strict=True):
        torch.testing.assert_close(p_k, 0.9 * old_k + 0.1 * new_q)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(k, F.normalize(head.momentum_mlp(feat_k), dim=1))
    torch.testing.assert_close(loss, info_nce(q, k, head.queue, 0.2))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.mlp.parameters())
    assert all(p.grad is None for p in head.momentum_mlp.parameters())
    assert feat_q.grad is not None and feat_q.grad.abs().sum() > 0
    head2 = ContrastiveHead(in_dim=6, hidden_dim=5, out_dim=4, queue_size=7)
    before = [p.clone() for p in head2.momentum_mlp.parameters()]
    instance_loss(head2, feat_q, feat_k, tau=0.2, momentum=None)
    assert all(torch.equal(a, b) for a, b in zip(before, head2.momentum_mlp.parameters(), strict=True))


def test_instance_feature_is_the_pooled_b8_tap_and_independent_per_sample():
    from tests.lightning_modules.gan_helpers import tiny_networks  # not at module level: spawned workers import us

    _, D = tiny_networks()
    img = torch.randn(4, 3, 16, 16)
    _, taps = D(img, None, taps=["b8"])
    full = pool_feature(D.features(img, None, ["b8"])["b8"])
    torch.testing.assert_close(full, taps["b8"].mean([2, 3]))
    # Samples are independent (no minibatch-std before the tap): a sub-batch gives the same rows.
    torch.testing.assert_close(pool_feature(D.features(img[:1], None, ["b8"])["b8"]), full[:1])
