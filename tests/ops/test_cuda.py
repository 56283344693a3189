"""CUDA side of the ops (docs/ops.md "Tests"): nvcc compile check of the .cu sources (when nvcc is on the PATH)
and GPU parity vs the reference path (skipped without a CUDA device and CUDA-built extension)."""

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch

from ops import _backend
from ops.bias_act import _bias_act_ref, bias_act
from ops.grid_sample import _grid_sample_ref, grid_sample
from ops.upfirdn2d import _upfirdn2d_ref, setup_filter, upfirdn2d

CSRC = Path(__file__).resolve().parents[2] / "ops" / "csrc"


@pytest.mark.slow  # minutes per file on 2 busy cores (bias_act.cu instantiates 108 kernels)
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on the PATH")
@pytest.mark.parametrize("source", sorted(p.name for p in CSRC.glob("*.cu")))
def test_nvcc_compiles_cuda_sources(source, tmp_path):
    """Syntax/type check of each kernel with nvcc -c against torch's headers (no link: torch may be CPU-only).

    A CPU wheel of torch ships the CUDA headers but not the generated ``c10/cuda/impl/cuda_cmake_macros.h``;
    the test supplies it (one define, as a shared-library CUDA build of torch generates it).
    """
    from torch.utils.cpp_extension import include_paths

    shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    cmd = [
        "nvcc",
        "-c",
        str(CSRC / source),
        "-o",
        str(tmp_path / "out.o"),
        "-std=c++20",
        "-arch=compute_80",
    ]  # PTX only: type-checks device code, skips ptxas
    cmd += ["-DSUITE_OPS_WITH_CUDA", "--expt-relaxed-constexpr", f"-I{tmp_path / 'shim'}"]
    cmd += [
        "-D__CUDA_NO_HALF_OPERATORS__",
        "-D__CUDA_NO_HALF_CONVERSIONS__",
        "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    ]
    cmd += [f"-I{p}" for p in include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=dict(os.environ))
    assert res.returncode == 0, f"nvcc failed on {source}:\n{res.stderr[-4000:]}"
    assert (tmp_path / "out.o").stat().st_size > 0


cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and _backend.extension_available() and _backend.cuda_kernels_built()),
    reason="needs a CUDA device and ops._C built with CUDA kernels",
)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_cuda_matches_reference(dtype, tol, use_backend):
    use_backend("compiled")
    torch.manual_seed(0)
    x = torch.randn(2, 8, 16, 16, device="cuda")
    f = setup_filter([1, 3, 3, 1], device="cuda")
    for kw in [
        dict(up=2, padding=[2, 1]),
        dict(down=2, padding=1),
        dict(up=[1, 2], down=[2, 1], padding=[0, 1, -1, 2]),
    ]:
        xx = x.to(dtype).requires_grad_()
        y = upfirdn2d(xx, f, **kw)
        (g,) = torch.autograd.grad(y.float().square().sum(), xx)
        xr = x.double().requires_grad_()
        yr = _upfirdn2d_ref(xr, f.double(), **kw)
        (gr,) = torch.autograd.grad(yr.square().sum(), xr)
        torch.testing.assert_close(y.double(), yr, atol=tol * 10, rtol=tol)
        torch.testing.assert_close(g.double(), gr, atol=tol * 20, rtol=tol * 2)
    b = torch.randn(8, device="cuda")
    for act in ("lrelu", "tanh", "swish"):
        xx = x.to(dtype).requires_grad_()
        y = bias_act(xx, b.to(dtype), act=act, clamp=1.0)
        (g,) = torch.autograd.grad(y.float().sum(), xx)
        xr = x.double().requires_grad_()
        yr = _bias_act_ref(xr, b.double(), act=act, clamp=1.0)
        (gr,) = torch.autograd.grad(yr.sum(), xr)
        torch.testing.assert_close(y.double(), yr, atol=tol * 10, rtol=tol)
        torch.testing.assert_close(g.double(), gr, atol=tol * 20, rtol=tol * 2)
    grid = torch.rand(2, 9, 7, 2, device="cuda") * 2.2 - 1.1
    xx = x.to(dtype).requires_grad_()
    y = grid_sample(xx, grid.to(dtype))
    (g,) = torch.autograd.grad(y.float().square().sum(), xx, create_graph=True)
    (gg,) = torch.autograd.grad(g.float().square().sum(), xx)
    xr = x.double().requires_grad_()
    yr = _grid_sample_ref(xr, grid.double())
    (gr,) = torch.autograd.grad(yr.square().sum(), xr, create_graph=True)
    (ggr,) = torch.autograd.grad(gr.square().sum(), xr)
    torch.testing.assert_close(y.double(), yr, atol=tol * 10, rtol=tol)
    torch.testing.assert_close(gg.double(), ggr, atol=tol * 50, rtol=tol * 5)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("size,dim", [((2, 6, 8, 8), 1), ((37, 3), 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_masked_bias_act_matches_cpu(size, dim, dtype):
    """The warp-ballot mask of the CUDA masked path equals the CPU mask word for word (a partial last group
    included), and the outputs and masked gradients agree."""
    lib = torch.ops.suite_ops
    torch.manual_seed(0)
    x, dy = torch.randn(size, dtype=dtype) * 2, torch.randn(size, dtype=dtype)
    b = torch.randn(size[dim], dtype=dtype)
    for act, alpha, clamp in ((1, 0.0, 1.25), (2, 0.0, -1.0), (3, 0.2, 1.25), (3, 0.2, -1.0)):
        y, mask = lib.bias_act_masked(x, b, dim, act, alpha, 1.4, clamp)
        y_cuda, mask_cuda = lib.bias_act_masked(x.cuda(), b.cuda(), dim, act, alpha, 1.4, clamp)
        torch.testing.assert_close(y_cuda.cpu(), y, atol=1e-6, rtol=1e-6 if dtype == torch.float32 else 1e-3)
        assert torch.equal(mask_cuda.cpu(), mask)
        dx = lib.bias_act_masked_grad(dy, mask, act, alpha, 1.4)
        dx_cuda = lib.bias_act_masked_grad(dy.cuda(), mask_cuda, act, alpha, 1.4)
        torch.testing.assert_close(dx_cuda.cpu(), dx, atol=1e-6, rtol=1e-6 if dtype == torch.float32 else 1e-3)
