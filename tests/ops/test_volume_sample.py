"""Trilinear point-to-volume lookup (ops/volume_sample.py): reference vs 3-D grid_sample, gradcheck and
gradgradcheck in volume and points, compiled CPU kernel vs reference (values, gradients, second gradients),
opcheck, torch.compile, CUDA parity where a GPU is present. Budget: ~10 s on 2 CPU cores."""

import pytest
import torch
import torch.nn.functional as F

from ops import _backend
from ops.volume_sample import _volume_sample_ref, volume_sample

compiled_only = pytest.mark.skipif(
    not _backend.extension_available(),
    reason=f"ops._C not built ({_backend.extension_error()}); run `pip install --no-build-isolation -e .`",
)


def _case(shape=(2, 3, 4, 5, 6), n_points=17, lo=-0.97, hi=0.97, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    volume = torch.randn(shape, generator=g, dtype=dtype)
    points = torch.rand(shape[0], n_points, 3, generator=g, dtype=dtype) * (hi - lo) + lo
    return volume, points


def _grid_sample_3d(volume, points, padding="border"):
    grid = points.reshape(points.shape[0], -1, 1, 1, 3)
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode=padding, align_corners=True)
    return out.reshape(volume.shape[0], volume.shape[1], -1)


def _first_and_second(fn, volume, points, seed=1):
    """y, first gradients (volume, points) of <y, w>, second gradients of a quadratic form of the first ones."""
    volume = volume.detach().requires_grad_()
    points = points.detach().requires_grad_()
    y = fn(volume, points)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    gv, gp = torch.autograd.grad((y * w).sum(), (volume, points), create_graph=True)
    cv = torch.randn(gv.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=y.dtype)
    cp = torch.randn(gp.shape, generator=torch.Generator().manual_seed(seed + 2), dtype=y.dtype)
    second = torch.autograd.grad((gv * cv).sum() + (gp * cp).sum() + (gp * gp).sum(), (volume, points))
    return (y, gv, gp, *second)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 6), (1, 2, 1, 3, 2), (3, 1, 7, 2, 1)])
def test_reference_equals_grid_sample_border_align_corners_inside(shape):
    volume, points = _case(shape)
    torch.testing.assert_close(_volume_sample_ref(volume, points), _grid_sample_3d(volume, points))
    # first derivatives as well, inside the volume
    v, p = volume.clone().requires_grad_(), points.clone().requires_grad_()
    w = torch.randn(shape[0], shape[1], points.shape[1], dtype=volume.dtype)
    ours = torch.autograd.grad((_volume_sample_ref(v, p) * w).sum(), (v, p))
    ref = torch.autograd.grad((_grid_sample_3d(v, p) * w).sum(), (v, p))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_values_equal_border_padding_outside_the_volume():
    volume, points = _case(lo=-2.5, hi=2.5, n_points=200)
    torch.testing.assert_close(_volume_sample_ref(volume, points), _grid_sample_3d(volume, points, "border"))


def test_public_api_shapes_and_errors(use_backend):
    use_backend("ref")
    volume, points = _case()
    out = volume_sample(volume, points.reshape(2, 17, 1, 3))
    assert out.shape == (2, 3, 17, 1)
    with pytest.raises(ValueError, match=r"volume must be \[N, C, D, H, W\]"):
        volume_sample(volume[0], points)
    with pytest.raises(ValueError, match="must match the volume"):
        volume_sample(volume, points.float())


def test_reference_gradcheck_and_gradgradcheck():
    volume, points = _case((1, 2, 3, 4, 3), n_points=5)
    volume.requires_grad_(), points.requires_grad_()
    assert torch.autograd.gradcheck(_volume_sample_ref, (volume, points))
    assert torch.autograd.gradgradcheck(_volume_sample_ref, (volume, points))


@compiled_only
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 6), (1, 2, 1, 3, 2), (3, 1, 7, 2, 1)])
@pytest.mark.parametrize("span", [0.97, 2.5])
def test_compiled_matches_reference_values_gradients_second_gradients(shape, span):
    """Inside and outside the volume: outputs, first and second derivatives in volume and points, float64."""
    volume, points = _case(shape, n_points=1100, lo=-span, hi=span)  # > one 512-point tile of the CPU kernel
    lib = torch.ops.suite_ops
    ref = _first_and_second(_volume_sample_ref, volume, points)
    out = _first_and_second(lib.volume_sample_3d, volume, points)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@compiled_only
def test_compiled_double_backward_pieces_match_reference():
    """Each second-order term alone: only the volume needs grad, only the points, and neither re-enters."""
    volume, points = _case(n_points=40)
    lib = torch.ops.suite_ops
    for wants in ((True, False), (False, True)):
        results = []
        for fn in (_volume_sample_ref, lib.volume_sample_3d):
            v = volume.clone().requires_grad_(wants[0])
            p = points.clone().requires_grad_(wants[1])
            target = v if wants[0] else p
            y = fn(v, p)
            (g,) = torch.autograd.grad(y.square().sum(), target, create_graph=True)
            (gg,) = torch.autograd.grad(g.square().sum(), target)
            results.append((y, g, gg))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@compiled_only
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_compiled_low_precision(dtype, tol):
    volume, points = _case(dtype=torch.float32, n_points=300)
    lib = torch.ops.suite_ops
    y = lib.volume_sample_3d(volume.to(dtype), points.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), _volume_sample_ref(volume.double(), points.double()), atol=tol, rtol=tol)
    gv, gp = lib.volume_sample_3d_backward(torch.ones_like(y), volume.to(dtype), points.to(dtype), True, True)
    v, p = volume.double().requires_grad_(), points.double().requires_grad_()
    rv, rp = torch.autograd.grad(_volume_sample_ref(v, p).sum(), (v, p))
    torch.testing.assert_close(gv.double(), rv, atol=tol * 20, rtol=tol)
    torch.testing.assert_close(gp.double(), rp, atol=tol * 20, rtol=tol * 2)


@compiled_only
def test_compiled_gradcheck_gradgradcheck_through_public_api(use_backend):
    use_backend("compiled")
    volume, points = _case((1, 2, 3, 4, 3), n_points=5)
    volume.requires_grad_(), points.requires_grad_()
    assert torch.autograd.gradcheck(volume_sample, (volume, points))
    assert torch.autograd.gradgradcheck(volume_sample, (volume, points))


@compiled_only
def test_compiled_third_order_raises(use_backend):
    use_backend("compiled")
    volume, points = _case(n_points=6)
    p = points.requires_grad_()
    (g1,) = torch.autograd.grad(volume_sample(volume, p).square().sum(), p, create_graph=True)
    (g2,) = torch.autograd.grad(g1.square().sum(), p, create_graph=True)
    with pytest.raises(RuntimeError, match="first and second derivatives only"):
        torch.autograd.grad(g2.sum(), p)


@compiled_only
def test_opcheck():
    lib = torch.ops.suite_ops
    volume, points = _case((2, 3, 3, 4, 2), n_points=7, dtype=torch.float32)
    volume.requires_grad_(), points.requires_grad_()
    torch.library.opcheck(lib.volume_sample_3d.default, (volume, points))
    go = torch.randn(2, 3, 7, requires_grad=True)
    torch.library.opcheck(lib.volume_sample_3d_backward.default, (go, volume, points, True, True))
    torch.library.opcheck(lib.volume_sample_3d_backward.default, (go, volume, points, False, True))
    gg_v, gg_p = torch.randn_like(volume), torch.randn_like(points)
    args = (go.detach(), volume.detach(), points.detach(), gg_v, gg_p, True, True, True)
    torch.library.opcheck(lib.volume_sample_3d_double_backward.default, args)
    torch.library.opcheck(lib.volume_sample_3d_double_backward.default, args[:3] + (None, gg_p, True, False, True))


@compiled_only
def test_torch_compile_fullgraph(use_backend):
    use_backend("compiled")
    volume, points = _case(dtype=torch.float32)

    def fn(v, p):
        return volume_sample(v, p).relu().sum(dim=1)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(volume, points), fn(volume, points))
    v, p = volume.clone().requires_grad_(), points.clone().requires_grad_()
    grads = torch.autograd.grad(compiled(v, p).square().sum(), (v, p))
    for g, r in zip(grads, torch.autograd.grad(fn(v, p).square().sum(), (v, p))):
        torch.testing.assert_close(g, r)


@compiled_only
def test_auto_backend_uses_compiled_on_cpu(use_backend):
    """~7x faster than the reference on VolumeGAN's shapes (experiments/bench_volumegan.py)."""
    use_backend("auto")
    assert _backend.use_compiled("volume_sample", torch.zeros(1))


@pytest.mark.cuda
@pytest.mark.skipif(
    not (torch.cuda.is_available() and _backend.extension_available() and _backend.cuda_kernels_built()),
    reason="needs a CUDA device and ops._C built with CUDA kernels",
)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4), (torch.float16, 3e-2)])
def test_cuda_matches_reference(dtype, tol):
    volume, points = _case((2, 4, 5, 6, 7), n_points=300, lo=-1.3, hi=1.3)
    lib = torch.ops.suite_ops
    ref = _first_and_second(_volume_sample_ref, volume, points)
    out = _first_and_second(lib.volume_sample_3d, volume.cuda().to(dtype), points.cuda().to(dtype))
    for a, b in zip(out, ref):
        torch.testing.assert_close(a.double().cpu(), b, atol=tol * 50, rtol=tol * 5)
