"""Reference path (the specification) and the Python API (NVlabs stylegan2-ada-pytorch torch_utils/ops)."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ops
from ops import _backend
from ops.bias_act import _bias_act_ref, activation_funcs, bias_act, set_linear_clamp_grad
from ops.conv2d_resample import conv2d_resample, conv2d_resample_generic
from ops.grid_sample import _grid_sample_ref, grid_sample
from ops.upfirdn2d import _upfirdn2d_ref, downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d
from tests.ops.conftest import check_fixture_parity


def test_fixture_parity_reference(fixture_records, use_backend):
    """ops_reference.pt comes from NVIDIA's reference path; linear+clamp there masks (docs/ops.md "API")."""
    use_backend("ref")
    check_fixture_parity(fixture_records)


def test_upfirdn2d_matches_scipy_upfirdn_1d():
    """Semantics: up, FIR (true convolution), down == scipy.signal.upfirdn on a separable problem."""
    from scipy.signal import upfirdn

    rng = np.random.default_rng(0)
    x = rng.standard_normal(13)
    h = np.array([1.0, 2.0, 5.0, 3.0])
    for up, down in [(1, 1), (2, 1), (1, 2), (3, 2)]:
        ref = upfirdn(h, x, up, down)
        # scipy pads taps-1 on the left and keeps the full convolution.
        t = torch.tensor(x).reshape(1, 1, 1, -1)
        f = torch.tensor(h, dtype=torch.float32).reshape(1, -1)
        y = upfirdn2d(t, f, up=[up, 1], down=[down, 1], padding=[3, 3 + up - 1, 0, 0])
        n = min(len(ref), y.shape[-1])
        np.testing.assert_allclose(y.flatten()[:n].numpy(), ref[:n], atol=1e-5)


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f.sum(), torch.tensor(1.0))
    assert setup_filter([1] * 8).shape == (8,)  # >= 8 taps stays separable
    assert setup_filter([1, 2, 1], separable=True).shape == (3,)
    torch.testing.assert_close(setup_filter([1, 2], gain=4).sum(), torch.tensor(4.0))
    torch.testing.assert_close(
        setup_filter([[1.0, 2.0], [3.0, 4.0]], normalize=False, flip_filter=True)[0, 0], torch.tensor(4.0)
    )
    with pytest.raises(ValueError, match="separable"):
        setup_filter([[1.0, 2.0], [3.0, 4.0]], separable=True)


@pytest.mark.parametrize(
    "wrapper,kw,shape", [(upsample2d, {}, (16, 18)), (downsample2d, {}, (4, 4)), (filter2d, {}, (8, 9))]
)
def test_wrappers_shapes_and_dc_gain(wrapper, kw, shape):
    """Same-size/resampling wrappers keep a constant image constant (unit DC gain) away from borders."""
    x = torch.ones(1, 2, 8, 9)
    y = wrapper(x, setup_filter([1, 3, 3, 1]), **kw)
    assert tuple(y.shape[2:]) == shape
    torch.testing.assert_close(y[..., 2:-2, 2:-2], torch.ones_like(y[..., 2:-2, 2:-2]))


def test_upsample_padding_of_spec_example():
    """For [1,3,3,1] and factor 2, upsample2d == upfirdn2d(up=2, padding (2,1), gain 4)."""
    x = torch.randn(1, 1, 5, 6)
    f = setup_filter([1, 3, 3, 1])
    torch.testing.assert_close(upsample2d(x, f), upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4))
    torch.testing.assert_close(downsample2d(x, f), upfirdn2d(x, f, down=2, padding=[1, 1, 1, 1]))


def test_separable_equals_outer_product():
    x = torch.randn(2, 3, 9, 10)
    f1 = setup_filter([1, 2, 4, 2, 1], separable=True)
    f2 = setup_filter([1, 2, 4, 2, 1])
    for kw in [dict(up=2, padding=[2, 1, 3, -1]), dict(down=[2, 1], padding=1, gain=3.0, flip_filter=True)]:
        torch.testing.assert_close(upfirdn2d(x, f1, **kw), upfirdn2d(x, f2, **kw), atol=1e-5, rtol=1e-5)


def test_upfirdn2d_errors():
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d(x, None, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="empty output"):
        upfirdn2d(x, None, padding=-4)
    with pytest.raises(ValueError, match="gradient with respect to the filter"):
        upfirdn2d(x, torch.ones(2, 2, requires_grad=True))
    with pytest.raises(ValueError, match="4-D"):
        upfirdn2d(torch.randn(4, 4), None)


def test_bias_act_table_defaults():
    """Default alpha and gain per activation; order x+b -> act -> gain -> clamp."""
    x = torch.linspace(-3, 3, 24).reshape(2, 3, 4)
    b = torch.tensor([0.5, -0.25, 0.0])
    xb = x + b.reshape(1, 3, 1)
    expected = {
        "linear": xb,
        "relu": F.relu(xb) * np.sqrt(2),
        "lrelu": F.leaky_relu(xb, 0.2) * np.sqrt(2),
        "tanh": torch.tanh(xb),
        "sigmoid": torch.sigmoid(xb),
        "elu": F.elu(xb),
        "selu": F.selu(xb),
        "softplus": F.softplus(xb),
        "swish": xb * torch.sigmoid(xb) * np.sqrt(2),
    }
    assert set(expected) == set(activation_funcs)
    for act, ref in expected.items():
        torch.testing.assert_close(_bias_act_ref(x, b, act=act), ref)
    y = _bias_act_ref(x, b, act="lrelu", alpha=0.1, gain=2.0, clamp=1.5)
    torch.testing.assert_close(y, (F.leaky_relu(xb, 0.1) * 2).clamp(-1.5, 1.5))


def test_bias_act_dim_and_errors():
    x = torch.randn(3, 4, 5)
    b = torch.randn(5)
    torch.testing.assert_close(bias_act(x, b, dim=2, act="relu"), F.relu(x + b) * np.sqrt(2))
    with pytest.raises(ValueError, match="unknown act"):
        bias_act(x, act="gelu")
    with pytest.raises(ValueError, match="length"):
        bias_act(x, b, dim=1)
    with pytest.raises(ValueError, match="clamp"):
        bias_act(x, clamp=-1)


def test_linear_clamp_grad_semantics(use_backend):
    """Linear + clamp: passthrough lets gradients through clamped values; mask zeroes them."""
    use_backend("ref")
    x = torch.tensor([[-2.0, -0.1, 0.1, 2.0]]).requires_grad_()
    set_linear_clamp_grad("passthrough")
    (g,) = torch.autograd.grad(bias_act(x, act="linear", clamp=1.0).sum(), x)
    torch.testing.assert_close(g, torch.ones_like(x))
    set_linear_clamp_grad("mask")
    (g,) = torch.autograd.grad(bias_act(x, act="linear", clamp=1.0).sum(), x)
    torch.testing.assert_close(g, torch.tensor([[0.0, 1.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="linear_clamp_grad"):
        set_linear_clamp_grad("other")


def test_grid_sample_reference_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 9)
    grid = torch.rand(2, 5, 6, 2) * 2.6 - 1.3  # also samples outside the image
    torch.testing.assert_close(_grid_sample_ref(x, grid), F.grid_sample(x, grid, align_corners=False))


def test_grid_sample_reference_double_backward():
    """R1 through ADA needs d/dx of the input gradient; gradgradcheck in float64 (input and grid)."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    grid = (torch.rand(1, 3, 3, 2, dtype=torch.float64) * 2.2 - 1.1).requires_grad_()
    assert torch.autograd.gradcheck(_grid_sample_ref, (x, grid))
    assert torch.autograd.gradgradcheck(_grid_sample_ref, (x, grid))


def test_reference_gradgradcheck_upfirdn2d_bias_act():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 4, 3, dtype=torch.float64, requires_grad=True)
    f = setup_filter([1, 3, 3, 1]).double()
    assert torch.autograd.gradgradcheck(lambda t: _upfirdn2d_ref(t, f, up=2, down=1, padding=[2, 1, 1, -1]), (x,))
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t, c: _bias_act_ref(t, c, act="swish", clamp=1.0), (x, b))


@pytest.mark.parametrize(
    "k,up,down,padding,groups,flip_weight",
    [
        (3, 2, 1, 1, 1, True),  # G conv0
        (3, 1, 2, 1, 1, True),  # D conv1
        (1, 2, 1, 0, 1, True),  # 1x1 up (skip)
        (1, 1, 2, 0, 1, False),  # 1x1 down (D skip)
        (3, 1, 1, 1, 2, False),  # plain conv, groups
        (3, 2, 2, 1, 2, True),  # up then down, groups
        (3, 1, 1, [1, 0, 2, 1], 1, True),  # asymmetric padding -> generic path
    ],
)
def test_conv2d_resample_fast_paths_equal_generic(k, up, down, padding, groups, flip_weight):
    """conv2d_resample: each execution order equals the generic composition upfirdn2d(up) -> conv -> upfirdn2d(down)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(6, 4 // groups, k, k, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    kw = dict(f=f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight)
    y = conv2d_resample(x, w, **kw)
    torch.testing.assert_close(y, conv2d_resample_generic(x, w, **kw))
    assert y.shape[2] == 8 * up // down + (0 if isinstance(padding, int) else 1)


def test_conv2d_resample_flip_weight_is_true_convolution():
    x = torch.randn(1, 1, 6, 6)
    w = torch.randn(1, 1, 3, 3)
    torch.testing.assert_close(
        conv2d_resample(x, w, padding=1, flip_weight=False), F.conv2d(x, w.flip([2, 3]), padding=1)
    )


def test_backend_switch(use_backend, monkeypatch, caplog):
    with pytest.raises(ValueError, match="one of"):
        ops.set_backend("cuda")
    use_backend("ref")
    assert ops.get_backend() == "ref"
    assert not _backend.use_compiled("upfirdn2d", torch.zeros(1))
    # The environment variable is read when nothing was set.
    _backend._state["backend"] = None
    monkeypatch.setenv("SUITE_OPS_BACKEND", "ref")
    with caplog.at_level(logging.INFO, logger="ops._backend"):
        assert ops.get_backend() == "ref"
        ops.get_backend()
    assert sum("ops backend" in r.message for r in caplog.records) == 1  # logged once
    _backend._state["backend"] = None
    with caplog.at_level(logging.INFO, logger="ops._backend"):
        use_backend("auto")
    assert any("auto ->" in r.message for r in caplog.records)  # auto says what it picked and why


def test_compiled_backend_raises_without_extension(use_backend, monkeypatch):
    monkeypatch.setitem(_backend._ext, "loaded", False)
    monkeypatch.setitem(_backend._ext, "error", ImportError("no ops._C"))
    with pytest.raises(RuntimeError, match="not built"):
        use_backend("compiled")
    use_backend("auto")  # auto silently uses the reference path, and says so in the log
    assert not _backend.use_compiled("bias_act", torch.zeros(1))
    x = torch.randn(2, 3, 4, 4)
    grid = torch.rand(2, 2, 3, 2) * 2 - 1
    torch.testing.assert_close(grid_sample(x, grid), F.grid_sample(x, grid, align_corners=False))
