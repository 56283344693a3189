"""Winograd F(4x4, 3x3) convolution (ops/winograd.py): transforms, adjoints, values and derivatives against the
direct convolution, the compiled tile kernels against the reference, and where conv2d_resample takes it."""

import math

import pytest
import torch
import torch.nn.functional as F

from ops import _backend, winograd
from ops.conv2d_resample import conv2d_resample

needs_extension = pytest.mark.skipif(
    not _backend.extension_available(), reason=f"ops._C not built ({_backend.extension_error()})"
)
SHAPES = [(2, 3, 8, 8), (1, 2, 5, 7), (2, 4, 13, 9), (1, 1, 1, 3)]


def _tile_counts(h, w):
    return -(-h // 4), -(-w // 4)


@pytest.mark.parametrize("kind", [0, 1])
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_transforms_are_adjoint(kind, shape):
    """<tiles(x), m> = <x, untiles(m)>: the pairing the autograd formulas rely on."""
    torch.manual_seed(0)
    n, c, h, w = shape
    x = torch.randn(shape, dtype=torch.float64)
    th, tw = _tile_counts(h, w)
    m = torch.randn(36, c, n * th * tw, dtype=torch.float64)
    lhs = (winograd.tiles_reference(x, kind) * m).sum()
    rhs = (x * winograd.untiles_reference(m, kind, n, h, w)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-9)


def test_tiles_of_one_pixel_follow_the_paper_matrices():
    """A single 1 at the patch centre: V = B^T e e^T B, i.e. the outer product of B^T's column of that pixel."""
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 2] = 1.0  # padded patch coordinates (2, 3)
    bt = torch.tensor(winograd._BT, dtype=torch.float64)
    expected = torch.outer(bt[:, 2], bt[:, 3]).reshape(36, 1, 1)
    torch.testing.assert_close(winograd.tiles_reference(x, 0), expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_equals_direct_convolution(shape):
    torch.manual_seed(1)
    x = torch.randn(shape, dtype=torch.float64)
    w = torch.randn(5, shape[1], 3, 3, dtype=torch.float64)
    torch.testing.assert_close(winograd.conv3x3_winograd(x, w), F.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10)


def test_fp32_error_is_a_few_ulps_of_the_output():
    """fp32 rounding of F(4x4, 3x3) (Lavin & Gray section 5): relative error near 3e-6 at 256 channels."""
    torch.manual_seed(2)
    x, w = torch.randn(2, 256, 16, 16), torch.randn(256, 256, 3, 3)
    exact = F.conv2d(x.double(), w.double(), padding=1)
    err_wino = (winograd.conv3x3_winograd(x, w).double() - exact).norm() / exact.norm()
    err_direct = (F.conv2d(x, w, padding=1).double() - exact).norm() / exact.norm()
    assert err_wino < 1e-5
    assert err_wino < 50 * err_direct + 1e-7


@pytest.mark.parametrize(
    ("backend", "shape"), [("ref", (1, 2, 6, 5)), pytest.param("compiled", (2, 2, 9, 6), marks=needs_extension)]
)
def test_first_and_second_derivatives(use_backend, backend, shape):
    use_backend(backend)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, shape[1], 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(winograd.conv3x3_winograd, (x, w))
    assert torch.autograd.gradgradcheck(winograd.conv3x3_winograd, (x, w))


@needs_extension
@pytest.mark.parametrize("kind", [0, 1])
@pytest.mark.parametrize("shape", SHAPES)
def test_compiled_tiles_match_reference(kind, shape):
    torch.manual_seed(3)
    n, c, h, w = shape
    th, tw = _tile_counts(h, w)
    x = torch.randn(shape, dtype=torch.float64)
    m = torch.randn(36, c, n * th * tw, dtype=torch.float64)
    lib = torch.ops.suite_ops
    torch.testing.assert_close(lib.winograd_tiles(x, kind, th, tw), winograd.tiles_reference(x, kind))
    torch.testing.assert_close(lib.winograd_untiles(m, kind, n, h, w), winograd.untiles_reference(m, kind, n, h, w))
    x32, m32 = x.float(), m.float()
    torch.testing.assert_close(lib.winograd_tiles(x32, kind, th, tw), winograd.tiles_reference(x32, kind))
    torch.testing.assert_close(lib.winograd_untiles(m32, kind, n, h, w), winograd.untiles_reference(m32, kind, n, h, w))


@needs_extension
def test_compiled_tiles_reject_bad_arguments():
    lib = torch.ops.suite_ops
    with pytest.raises(RuntimeError, match="kind must be 0"):
        lib.winograd_tiles(torch.zeros(1, 1, 4, 4), 2, 1, 1)
    with pytest.raises(RuntimeError, match="tiles must cover"):
        lib.winograd_tiles(torch.zeros(1, 1, 8, 8), 0, 1, 1)
    with pytest.raises(RuntimeError, match="do not match"):
        lib.winograd_untiles(torch.zeros(36, 1, 3), 1, 1, 8, 8)


@needs_extension
def test_conv2d_resample_takes_winograd_for_large_cpu_layers(use_backend, monkeypatch):
    """The R1 path of a discriminator layer: output, input gradient and the gradient of the input-gradient
    penalty with respect to the weight all equal the direct convolution's."""
    use_backend("auto")
    winograd.set_conv3x3("winograd")
    monkeypatch.setattr(winograd, "MIN_WORK", 0)  # a small layer, so that fp64 stays quick
    calls = []
    real = winograd.conv3x3_winograd
    monkeypatch.setattr(winograd, "conv3x3_winograd", lambda x, w: calls.append(1) or real(x, w))
    torch.manual_seed(4)
    c = winograd.MIN_CHANNELS
    x0 = torch.randn(2, c, 16, 16, dtype=torch.float64)
    w0 = torch.randn(c, c, 3, 3, dtype=torch.float64) / c

    def r1_terms(conv):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        y = conv(x, w)
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.square().sum(), w)
        return y, gx, gw

    for flip in (True, False):
        got = r1_terms(lambda x, w, flip=flip: conv2d_resample(x, w, padding=1, flip_weight=flip))
        use_backend("ref")
        want = r1_terms(lambda x, w, flip=flip: conv2d_resample(x, w, padding=1, flip_weight=flip))
        use_backend("auto")
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert len(calls) == 2  # the auto runs only


@needs_extension
def test_use_winograd_rules(use_backend):
    c = winograd.MIN_CHANNELS
    side = math.ceil((winograd.MIN_WORK / c**2) ** 0.5)  # the smallest square layer of c channels that gains
    x, w = torch.zeros(1, c, side, side), torch.zeros(c, c, 3, 3)
    use_backend("auto")
    winograd.set_conv3x3("winograd")
    assert winograd.use_winograd(x, w, groups=1)
    assert not winograd.use_winograd(x, w, groups=2)
    assert not winograd.use_winograd(x.half(), w.half(), groups=1)
    assert not winograd.use_winograd(x[:, :, : side // 2], w, groups=1)
    assert not winograd.use_winograd(x[:, : c // 2], w[:, : c // 2], groups=1)
    winograd.set_conv3x3("direct")
    assert not winograd.use_winograd(x, w, groups=1)
    winograd.set_conv3x3("winograd")
    use_backend("ref")
    assert not winograd.use_winograd(x, w, groups=1)
    with pytest.raises(ValueError, match="ops.conv3x3 must be one of"):
        winograd.set_conv3x3("fft")


def test_conv3x3_winograd_rejects_other_kernels():
    with pytest.raises(ValueError, match="weight \\[K, C, 3, 3\\]"):
        winograd.conv3x3_winograd(torch.zeros(1, 2, 8, 8), torch.zeros(3, 2, 1, 1))


def test_weight_transform_adjoint():
    torch.manual_seed(5)
    w, u = torch.randn(3, 2, 3, 3, dtype=torch.float64), torch.randn(36, 3, 2, dtype=torch.float64)
    lhs = (winograd.weight_transform(w) * u).sum()
    torch.testing.assert_close(lhs, (w * winograd.weight_transform_adjoint(u)).sum())


def test_backward_keeps_the_input_not_its_tiles():
    """Saved for the backward: x and the weight only (the tiles are 2.25x x and are recomputed)."""
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    w = torch.randn(8, 8, 3, 3, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        winograd.conv3x3_winograd(x, w)
    assert sorted(saved) == [w.numel(), x.numel()]


@pytest.mark.parametrize("budget_images", [1, 2])
def test_chunks_of_images_give_the_same_derivatives(monkeypatch, budget_images):
    """Images in chunks (a tile budget of 1 or 2 images for a batch of 3): values, first and second derivatives."""
    torch.manual_seed(6)
    x0 = torch.randn(3, 4, 9, 10, dtype=torch.float64)
    w0 = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    per_image = 36 * 5 * 3 * 3 * 8  # 36 positions x max(C, K) x 3x3 tiles x 8 bytes

    def terms():
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        y = winograd.conv3x3_winograd(x, w)
        gx, gw = torch.autograd.grad(y.square().sum(), (x, w), create_graph=True)
        return (y, gx, gw, *torch.autograd.grad(gx.square().sum() + gw.square().sum(), (x, w)))

    whole = terms()
    monkeypatch.setattr(winograd, "TILE_BUDGET_BYTES", budget_images * per_image)
    assert len(winograd._image_chunks(x0, 5)) == -(-3 // budget_images)
    for a, b in zip(terms(), whole):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_double_backward_graph_keeps_no_tiles():
    """R1's first pass with create_graph: everything saved for the second pass is at most the size of x."""
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    w = torch.randn(8, 8, 3, 3, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y = winograd.conv3x3_winograd(x, w)
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        gx.square().sum().backward()
    assert saved and max(saved) <= x.numel()
    assert w.grad is not None and torch.isfinite(w.grad).all()


@needs_extension
def test_tile_operators_pass_opcheck():
    """Schema, fake kernels and autograd registration of both operators (torch.library.opcheck)."""
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64, requires_grad=True)
    m = torch.randn(36, 3, 2 * 3 * 2, dtype=torch.float64, requires_grad=True)
    for kind in (0, 1):
        torch.library.opcheck(torch.ops.suite_ops.winograd_tiles.default, (x, kind, 3, 2))
        torch.library.opcheck(torch.ops.suite_ops.winograd_untiles.default, (m, kind, 2, 9, 7))
