"""InsGen contrastive head network: official state-dict keys, queue resizing (budget ~1 s)."""

from __future__ import annotations

import pytest
import torch

from networks.insgen_heads import ContrastiveHead


def test_state_dict_keys_match_official_clhead_and_resize_keeps_init_kwargs():
    head = ContrastiveHead(in_dim=16, queue_size=10)
    keys = set(head.state_dict())
    assert keys == {
        "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias",
        "momentum_mlp.0.weight", "momentum_mlp.0.bias", "momentum_mlp.2.weight", "momentum_mlp.2.bias",
        "queue", "queue_ptr",
    }  # fmt: skip
    assert head.queue.shape == (128, 10) and head.queue_ptr.dtype == torch.int64
    torch.testing.assert_close(head.queue.norm(dim=0), torch.ones(10))
    head.resize_queue(4)
    assert head.queue.shape == (128, 4) and head.init_kwargs["queue_size"] == 4
    assert ContrastiveHead(**head.init_kwargs).queue.shape == head.queue.shape
    with pytest.raises(ValueError, match="queue_size"):
        ContrastiveHead(in_dim=16, queue_size=0)
