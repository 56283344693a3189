"""Parameter and MAC counting with forward hooks (verifiable compression ratios, docs/compconv.md).

A MAC is one multiply-accumulate. Counted layers: ``nn.Conv2d`` (``H_out W_out C_out (C_in/groups) k_h k_w``)
and ``nn.Linear`` (``in x out`` per output row). Normalisation, activations, pooling, additions, concatenation
and channel shuffles are not MACs and are not counted (the usual convention of FLOP tables, where
"FLOPs" usually means MACs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@dataclass
class MacReport:
    """MACs per sample: ``total`` and ``per_layer`` (qualified module name -> MACs)."""

    total: int
    per_layer: dict[str, int] = field(default_factory=dict)


def _layer_macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return out[0].numel() * (m.in_channels // m.groups) * kh * kw
    # nn.Linear: one row of ``in_features`` MACs per output element
    return out[0].numel() * m.in_features


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> MacReport:
    """MACs of one sample (the batch total divided by the batch size) for a forward pass on ``example``."""
    if example.dim() < 2 or example.shape[0] < 1:
        raise ValueError(f"count_macs: example must be a batch [N, ...] with N >= 1, got {tuple(example.shape)}")
    per_layer: dict[str, int] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):

            def hook(mod, _inp, out, name=name):
                per_layer[name] = per_layer.get(name, 0) + _layer_macs(mod, out)

            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return MacReport(total=sum(per_layer.values()), per_layer=per_layer)
