"""The floor stand-ins of experiments/bench_train.py: the reference ops' output shapes and gradient shapes."""

from __future__ import annotations

import pytest
import torch

from experiments.bench_train import floor_ops
from ops.bias_act import _bias_act_ref
from ops.grid_sample import _grid_sample_ref
from ops.upfirdn2d import _upfirdn2d_ref, setup_filter

UPFIRDN_CASES = [
    dict(up=2, padding=[2, 1]),
    dict(down=2, padding=[1, 1]),
    dict(padding=[1, 2, 2, 1]),
    dict(up=[2, 1], down=[1, 2], padding=[0, 3, -1, 2]),
    dict(up=1, down=1, padding=-1),
]


@pytest.mark.parametrize("case", range(len(UPFIRDN_CASES)))
def test_floor_upfirdn2d_has_the_reference_shapes(case):
    kw = dict(up=1, down=1, padding=0, flip_filter=False, gain=1) | UPFIRDN_CASES[case]
    f = setup_filter([1, 3, 3, 1]) if case != 3 else setup_filter([1, 2, 1], separable=True)
    x = torch.randn(2, 3, 9, 7, requires_grad=True)
    args = (kw["up"], kw["down"], kw["padding"], kw["flip_filter"], kw["gain"])
    out = floor_ops()["upfirdn2d"](x, f, *args)
    assert out.shape == _upfirdn2d_ref(x, f, *args).shape
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.shape == x.shape


def test_floor_bias_act_and_grid_sample_have_the_reference_shapes():
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    out = floor_ops()["bias_act"](x, b, 1, "lrelu")
    assert out.shape == _bias_act_ref(x, b, 1, "lrelu").shape
    assert [t.shape for t in torch.autograd.grad(out.sum(), (x, b))] == [x.shape, b.shape]
    grid = torch.rand(2, 3, 8, 2) * 2 - 1
    out = floor_ops()["grid_sample"](x, grid)
    assert out.shape == _grid_sample_ref(x, grid).shape == (2, 4, 3, 8)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.shape == x.shape
