"""Compiled suite_ops kernels vs the reference path on the CPU (docs/ops.md "Tests").

Values, gradients and second gradients over a grid of shapes/factors/paddings/filters/activations, opcheck,
gradcheck/gradgradcheck in float64, torch.compile(fullgraph=True), and the golden fixture.
"""

import itertools

import pytest
import torch

import ops.bias_act as bias_act_module
from ops import _backend
from ops.bias_act import (
    _bias_act_compiled,
    _bias_act_ref,
    _resolve,
    activation_funcs,
    bias_act,
    set_linear_clamp_grad,
)
from ops.grid_sample import _grid_sample_ref, grid_sample
from ops.upfirdn2d import _upfirdn2d_compiled, _upfirdn2d_ref, setup_filter, upfirdn2d
from tests.ops.conftest import check_fixture_parity

pytestmark = pytest.mark.skipif(
    not _backend.extension_available(),
    reason=f"ops._C not built ({_backend.extension_error()}); run `pip install --no-build-isolation -e .`",
)


def _grads(fn, x, create_graph=True):
    """First gradient wrt x of sum(fn(x) * w), and the second (gradient of sum(g1^2) wrt x)."""
    torch.manual_seed(1)
    y = fn(x)
    w = torch.randn_like(y)
    (g1,) = torch.autograd.grad((y * w).sum(), x, create_graph=create_graph)
    if not g1.requires_grad:
        return y, g1, torch.zeros_like(x)
    (g2,) = torch.autograd.grad((g1 * g1).sum(), x, allow_unused=True)
    return y, g1, (torch.zeros_like(x) if g2 is None else g2)


FILTERS = {
    "none": None,
    "4x4": setup_filter([1, 3, 3, 1]),
    "sep6": setup_filter([1, 2, 3, 3, 2, 1], separable=True),
    "3x2": torch.tensor([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]]),
}
CASES = [
    (dict(up=2, down=1, padding=[2, 1]), "4x4"),
    (dict(up=1, down=2, padding=[1, 1]), "4x4"),
    (dict(up=1, down=1, padding=[1, 2, 2, 1], flip_filter=True), "4x4"),
    (dict(up=[2, 3], down=[1, 2], padding=[0, 3, -1, 2], gain=2.0), "3x2"),
    (dict(up=3, down=2, padding=[-2, 4, 3, -1]), "sep6"),
    (dict(up=1, down=[2, 1], padding=0), "none"),
    (dict(up=2, down=2, padding=[1, 1, 2, 0], flip_filter=True, gain=0.5), "sep6"),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (1, 2, 5, 4)])
def test_upfirdn2d_compiled_matches_reference(case, shape):
    kw, fname = CASES[case]
    f = FILTERS[fname]
    kw = dict(dict(up=1, down=1, padding=0, flip_filter=False, gain=1.0), **kw)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    fd = None if f is None else f
    ref = _grads(lambda t: _upfirdn2d_ref(t, fd, **kw), x)
    out = _grads(lambda t: _upfirdn2d_compiled(t, fd, **kw), x)
    for a, b in zip(out, ref):  # float32 filter x gain rounding differs by ~1e-7 relative
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)
    # float32 forward too.
    x32 = x.detach().float()
    torch.testing.assert_close(_upfirdn2d_compiled(x32, f, **kw), _upfirdn2d_ref(x32, f, **kw), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_upfirdn2d_low_precision(dtype):
    x = torch.randn(1, 2, 8, 8)
    f = setup_filter([1, 3, 3, 1])
    y = _upfirdn2d_compiled(x.to(dtype), f, 2, 1, [2, 1], False, 4.0)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), _upfirdn2d_ref(x, f, 2, 1, [2, 1], False, 4.0), atol=3e-2, rtol=3e-2)


# Rank-1 2-D filters (the CPU kernel's separable path), chosen so that the split is exact.
RANK1 = {
    "4x4": setup_filter([1, 3, 3, 1]),
    "3x5": torch.tensor([1.0, -2.0, 0.5]).ger(torch.tensor([0.25, 2.0, -1.0, 1.0, 0.5])),
    "1x2": torch.tensor([[1.0, 2.0]]),
}
RANK1_CASES = [
    dict(up=2, padding=[2, 1]),
    dict(down=2, padding=[1, 1]),
    dict(padding=[1, 2, 2, 1], flip_filter=True),
    dict(up=[2, 3], down=[1, 2], padding=[0, 3, -1, 2], gain=2.0),
    dict(up=3, down=2, padding=[-2, 4, 3, -1]),
    dict(up=[1, 3], down=[3, 1], padding=[2, -1, 1, 0], flip_filter=True),
]


@pytest.mark.parametrize("fname", sorted(RANK1))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_upfirdn2d_separable_path_matches_reference(fname, dtype):
    """Values and gradients (the backward is upfirdn2d again) of rank-1 filters vs the reference."""
    torch.manual_seed(0)
    f = RANK1[fname]
    x = torch.randn(2, 3, 7, 9, dtype=dtype, requires_grad=True)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    for case in RANK1_CASES:
        kw = dict(dict(up=1, down=1, padding=0, flip_filter=False, gain=1.0), **case)
        yr = _upfirdn2d_ref(x, f, **kw)
        yc = _upfirdn2d_compiled(x, f, **kw)
        torch.testing.assert_close(yc, yr, **tol)
        w = torch.randn_like(yr)
        gr = torch.autograd.grad((yr * w).sum(), x)[0]
        gc = torch.autograd.grad((yc * w).sum(), x)[0]
        torch.testing.assert_close(gc, gr, **tol)


def test_upfirdn2d_nearly_separable_filter():
    """A filter that is rank-1 only up to 1e-3 must take the general path (exact 2-D weights)."""
    f = setup_filter([1, 3, 3, 1]).clone()
    f[1, 2] += 1e-3
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for case in RANK1_CASES[:3]:
        kw = dict(dict(up=1, down=1, padding=0, flip_filter=False, gain=1.0), **case)
        torch.testing.assert_close(_upfirdn2d_compiled(x, f, **kw), _upfirdn2d_ref(x, f, **kw), atol=1e-12, rtol=1e-12)


@pytest.fixture(params=[True, False], ids=["masked", "saved_output"])
def masked_route(request, monkeypatch):
    """Both CPU routes of linear(+clamp)/relu/lrelu: the 2-bit mask (AVX2 CPUs) and the saved output (others)."""
    monkeypatch.setitem(bias_act_module._masked_on_cpu, "enabled", request.param)
    return request.param


@pytest.mark.parametrize("act", ["linear", "relu", "lrelu"])
@pytest.mark.parametrize("gain", [1.7, -0.5, 0.0])
def test_bias_act_piecewise_linear_gains(act, gain, use_backend, masked_route):
    """The first-derivative fast paths of linear/relu/lrelu (side of the saved output times sign(gain), as a mask
    or read from the output) with positive, negative and zero gain, with and without clamp, vs the reference."""
    use_backend("compiled")
    torch.manual_seed(0)
    x = (torch.randn(2, 5, 6, 7, dtype=torch.float64) * 2).requires_grad_()
    b = torch.randn(5, dtype=torch.float64)
    for clamp in (None, 1.5, 0.0):
        for mode in ("passthrough", "mask") if act == "linear" else ("passthrough",):
            set_linear_clamp_grad(mode)
            ref = _grads(lambda t, c=clamp: _bias_act_ref(t, b, 1, act, None, gain, c), x)
            out = _grads(lambda t, c=clamp: bias_act(t, b, 1, act, None, gain, c), x)
            for a, r in zip(out, ref):
                torch.testing.assert_close(a, r, atol=1e-12, rtol=1e-12)


MASK_SHAPES = {
    "rows_of_whole_groups": ((2, 6, 8, 8), 1),  # inner 64: the fused AVX2 loop in fp32
    "short_rows": ((3, 7, 5), 1),  # inner 5: groups straddle rows
    "tail_group": ((37, 3), 0),  # numel 111: a partial last group, inner 3
}


@pytest.mark.parametrize("shape", sorted(MASK_SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bias_act_masked_ops_match_saved_output_ops(shape, dtype):
    """suite_ops.bias_act_masked returns the same output as bias_act (bitwise, NaN, -0 and exact clamp hits
    included) and bias_act_masked_grad the same first derivative as mode 1 with the saved output."""
    lib = torch.ops.suite_ops
    size, dim = MASK_SHAPES[shape]
    torch.manual_seed(0)
    x = torch.randn(size, dtype=dtype) * 2
    flat = x.view(-1)
    flat[:6] = torch.tensor([float("nan"), -0.0, 0.0, 1.25, -1.25, float("inf")], dtype=dtype)
    b = torch.randn(size[dim], dtype=dtype)
    b[0] = 0.0  # x + b keeps -0, +-1.25 (an exact clamp hit at clamp 1.25, gain 1) and the NaN in row 0
    dy = torch.randn(size, dtype=dtype)
    for act, alpha in ((1, 0.0), (2, 0.0), (3, 0.2)):
        for gain in (1.0, 1.4, -0.6, 0.0):
            for clamp in (-1.0, 1.25, 0.0):
                if act == 1 and clamp < 0:
                    continue  # linear without clamp has no mask path (its derivative is dy * gain)
                y, mask = lib.bias_act_masked(x, b, dim, act, alpha, gain, clamp)
                y_ref = lib.bias_act(x, b, None, None, None, 0, dim, act, alpha, gain, clamp, True)
                assert mask.dtype == torch.int32 and mask.shape == (2 * ((x.numel() + 31) // 32),)
                torch.testing.assert_close(y, y_ref, atol=0, rtol=0, equal_nan=True)
                assert torch.equal(torch.signbit(y), torch.signbit(y_ref))
                if act > 1:  # and the reference's rounding (fp32: the AVX2 loop against ATen's ops)
                    name = "relu" if act == 2 else "lrelu"
                    ref = _bias_act_ref(x, b, dim, name, alpha, gain, None if clamp < 0 else clamp)
                    keep = ~x.isnan() if act == 2 else torch.ones_like(x, dtype=torch.bool)  # NVIDIA: relu(NaN) = 0
                    torch.testing.assert_close(y[keep], ref[keep], atol=0, rtol=0, equal_nan=True)
                dx = lib.bias_act_masked_grad(dy, mask, act, alpha, gain)
                dx_ref = lib.bias_act(dy, b, None, y_ref, None, 1, dim, act, alpha, gain, clamp, True)
                torch.testing.assert_close(dx, dx_ref, atol=0, rtol=0, equal_nan=True)


def test_bias_act_masked_grad_rejects_a_foreign_mask():
    lib = torch.ops.suite_ops
    y, mask = lib.bias_act_masked(torch.randn(4, 40), None, 1, 3, 0.2, 1.0, -1.0)
    with pytest.raises(RuntimeError, match=r"mask must be the contiguous int32 \[2 \* ceil\(numel / 32\)\]"):
        lib.bias_act_masked_grad(torch.randn(4, 41), mask, 3, 0.2, 1.0)
    with pytest.raises(RuntimeError, match="act must be linear"):
        lib.bias_act_masked(torch.randn(4, 40), None, 1, 4, 0.0, 1.0, -1.0)


@pytest.mark.parametrize("act", sorted(activation_funcs))
@pytest.mark.parametrize("clamp", [None, 0.7])
def test_bias_act_compiled_matches_reference(act, clamp, use_backend):
    use_backend("auto")
    torch.manual_seed(0)
    x = (torch.randn(2, 3, 4, 5, dtype=torch.float64) * 2).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    for mode in ("passthrough", "mask") if act == "linear" else ("passthrough",):
        set_linear_clamp_grad(mode)
        spec, alpha, gain, c = _resolve(act, None, None, clamp)
        ref = _grads(lambda t: _bias_act_ref(t, b, 1, act, None, None, clamp), x)
        out = _grads(lambda t, s=spec, a=alpha, g=gain, c=c: _bias_act_compiled(t, b, 1, s, a, g, c), x)
        for a, r in zip(out, ref):
            torch.testing.assert_close(a, r, atol=1e-8, rtol=1e-7)
        # gradient wrt the bias, and its second derivative
        gb_ref = torch.autograd.grad(_bias_act_ref(x, b, 1, act, None, None, clamp).pow(2).sum(), b)[0]
        gb = torch.autograd.grad(_bias_act_compiled(x, b, 1, spec, alpha, gain, c).pow(2).sum(), b)[0]
        torch.testing.assert_close(gb, gb_ref, atol=1e-8, rtol=1e-7)


def test_bias_act_dims_and_dtypes(use_backend):
    use_backend("compiled")
    x = torch.randn(3, 4, 5)
    for dim in range(3):
        b = torch.randn(x.shape[dim])
        torch.testing.assert_close(
            bias_act(x, b, dim=dim, act="lrelu", alpha=0.3, gain=1.5, clamp=0.8),
            _bias_act_ref(x, b, dim, "lrelu", 0.3, 1.5, 0.8),
        )
    for dtype in (torch.float16, torch.bfloat16):
        y = bias_act(x.to(dtype), torch.ones(4, dtype=dtype), act="tanh")
        assert y.dtype == dtype
        torch.testing.assert_close(y.float(), torch.tanh(x + 1), atol=2e-2, rtol=2e-2)


def test_bias_act_third_order_raises(use_backend):
    use_backend("compiled")
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = bias_act(x, act="tanh")
    (g1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="first and second derivatives only"):
        torch.autograd.grad(g2.sum(), x)


def test_grid_sample_compiled_matches_reference(use_backend):
    use_backend("compiled")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    grid = torch.rand(2, 4, 5, 2, dtype=torch.float64) * 2.4 - 1.2
    ref = _grads(lambda t: _grid_sample_ref(t, grid), x)
    out = _grads(lambda t: grid_sample(t, grid), x)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    # First-order gradient wrt the grid as well.
    g = grid.clone().requires_grad_()
    w = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    gr = torch.autograd.grad((_grid_sample_ref(x, g) * w).sum(), (x, g))
    gc = torch.autograd.grad((grid_sample(x, g) * w).sum(), (x, g))
    for a, b in zip(gc, gr):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    # Second order through the grid is refused, not silently wrong.
    (gx,) = torch.autograd.grad(grid_sample(x, g).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="input only"):
        torch.autograd.grad(gx.sum(), g)


def test_gradcheck_gradgradcheck_float64(use_backend):
    """gradcheck/gradgradcheck of every compiled op through the public API, small shapes."""
    use_backend("compiled")
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    f = setup_filter([1, 3, 3, 1])
    for kw in [dict(up=2, padding=[2, 1, 1, 2]), dict(down=2, padding=[1, 1, -1, 2], flip_filter=True)]:
        assert torch.autograd.gradcheck(lambda t, kw=kw: upfirdn2d(t, f, **kw), (x,))
        assert torch.autograd.gradgradcheck(lambda t, kw=kw: upfirdn2d(t, f, **kw), (x,))
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    for act in ("lrelu", "swish", "softplus"):
        assert torch.autograd.gradcheck(lambda t, c, a=act: bias_act(t, c, act=a), (x, b))
        assert torch.autograd.gradgradcheck(lambda t, c, a=act: bias_act(t, c, act=a), (x, b))
    grid = torch.rand(1, 3, 3, 2, dtype=torch.float64) * 2 - 1
    assert torch.autograd.gradcheck(lambda t: grid_sample(t, grid), (x,))
    assert torch.autograd.gradgradcheck(lambda t: grid_sample(t, grid), (x,))
    g = grid.clone().requires_grad_()
    assert torch.autograd.gradcheck(grid_sample, (x, g))


def test_opcheck():
    """torch.library.opcheck: schema, fake kernel, autograd registration, aot dispatch."""
    ops_ = torch.ops.suite_ops
    x = torch.randn(1, 2, 6, 5, requires_grad=True)
    f = setup_filter([1, 3, 3, 1])
    torch.library.opcheck(ops_.upfirdn2d.default, (x, f, 2, 1, 1, 2, 2, 1, 1, 1, False, 4.0))
    b = torch.randn(2, requires_grad=True)
    torch.library.opcheck(ops_.bias_act.default, (x, b, None, None, None, 0, 1, 3, 0.2, 1.41, -1.0, True))
    y = torch.randn(1, 2, 6, 5)
    torch.library.opcheck(ops_.bias_act.default, (x, b, y, y.tanh(), None, 1, 1, 4, 0.0, 1.0, -1.0, True))
    torch.library.opcheck(ops_.bias_act_masked.default, (x, b, 1, 3, 0.2, 1.41, 0.5))
    _, mask = ops_.bias_act_masked(x, b, 1, 3, 0.2, 1.41, 0.5)
    torch.library.opcheck(ops_.bias_act_masked_grad.default, (y.requires_grad_(), mask, 3, 0.2, 1.41))
    grid = torch.rand(1, 3, 4, 2) * 2 - 1
    torch.library.opcheck(ops_.grid_sample_2d.default, (x, grid))
    go = torch.randn(1, 2, 3, 4)
    torch.library.opcheck(ops_.grid_sample_2d_backward.default, (go, x.detach(), grid, True, False))


def test_torch_compile_fullgraph(use_backend):
    """Fake kernels let torch.compile trace all three ops in one graph (one small case, CPU)."""
    use_backend("compiled")
    f = setup_filter([1, 3, 3, 1])
    grid = torch.rand(1, 8, 8, 2) * 2 - 1

    def fn(x, b):
        y = upfirdn2d(x, f, up=2, padding=[2, 1])
        y = bias_act(y, b, act="lrelu", clamp=256.0)
        return grid_sample(y, grid)

    x, b = torch.randn(1, 2, 4, 4), torch.randn(2)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, b), fn(x, b))
    # with gradients: bias_act takes the masked path (its route is decided from plain values while tracing)
    x.requires_grad_(), b.requires_grad_()
    grads = torch.autograd.grad(compiled(x, b).square().sum(), (x, b))
    for g, r in zip(grads, torch.autograd.grad(fn(x, b).square().sum(), (x, b))):
        torch.testing.assert_close(g, r)


def test_fixture_parity_compiled(fixture_records, use_backend):
    use_backend("compiled")
    check_fixture_parity(fixture_records)


def test_backend_changes_speed_not_results(use_backend):
    """A StyleGAN-like chain under ref and compiled: same values and R1-style 2nd gradients."""
    torch.manual_seed(0)
    x0 = torch.randn(2, 3, 8, 8)
    f = setup_filter([1, 3, 3, 1])
    grid = torch.rand(2, 8, 8, 2) * 2 - 1
    b = torch.randn(3)
    results = {}
    for name in ("ref", "compiled"):
        use_backend(name)
        x = x0.clone().requires_grad_()
        y = grid_sample(x, grid)
        y = bias_act(upfirdn2d(y, f, down=2, padding=1), b, act="lrelu")
        (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), x)
        results[name] = (y, g, gg)
    for a, r in zip(results["compiled"], results["ref"]):
        torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-4)


def test_auto_backend_picks_compiled_on_cpu(use_backend):
    use_backend("auto")
    x = torch.zeros(1)
    assert all(_backend.use_compiled(op, x) == (op in _backend.AUTO_CPU_OPS) for op in ("upfirdn2d", "bias_act"))


def test_grid_all_parameters_quick():
    """A wider sweep of up/down/padding/flip on a tiny image (values and first gradients, float64)."""
    f = torch.tensor([[1.0, 2.0, -1.0], [0.5, 1.0, 3.0]])
    x = torch.randn(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    for up, down, pad, flip in itertools.product([1, 2, 3], [1, 2], [-1, 0, 2], [False, True]):
        kw = dict(up=up, down=down, padding=[pad, 1, 1, pad], flip_filter=flip, gain=1.5)
        yr = _upfirdn2d_ref(x, f, **kw)
        yc = _upfirdn2d_compiled(x, f, **kw)
        torch.testing.assert_close(yc, yr, atol=1e-10, rtol=1e-10)
        w = torch.randn_like(yr)
        gr = torch.autograd.grad((yr * w).sum(), x)[0]
        gc = torch.autograd.grad((yc * w).sum(), x)[0]
        torch.testing.assert_close(gc, gr, atol=1e-10, rtol=1e-10)
