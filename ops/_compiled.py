"""Python side of the ``suite_ops`` operators: fake kernels and autograd (docs/ops.md).

Importing this module imports the ahead-of-time built ``ops._C`` (ImportError when it is not built) and
registers, for each operator, a fake (meta) kernel so ``torch.compile`` traces it, and an autograd formula
written with the same registered operators, so higher derivatives work:

- ``upfirdn2d``: backward = upfirdn2d with up/down swapped, padding recomputed, flip inverted (any order).
- ``bias_act``: grad mode 0 -> mode 1 -> mode 2 (NVIDIA's scheme): first and second order; a third derivative
  raises. ``bias_act_masked`` (linear + clamp, relu, lrelu) saves a 2-bit mask instead of the output; its
  derivative ``bias_act_masked_grad`` is linear in the incoming gradient (any order).
- ``grid_sample_2d``: backward = ``grid_sample_2d_backward``, whose derivative with respect to the incoming
  gradient is ``grid_sample_2d`` again (second order with respect to the input).
- ``volume_sample_3d``: backward = ``volume_sample_3d_backward`` (volume and points), whose derivative is
  ``volume_sample_3d_double_backward`` (second order in volume and points; a third derivative raises).
"""

from __future__ import annotations

import torch

from ops import _C  # noqa: F401  (registers the suite_ops operators)

lib = torch.ops.suite_ops

# ---------------------------------------------------------------------------------------------- upfirdn2d


@torch.library.register_fake("suite_ops::upfirdn2d")
def _upfirdn2d_fake(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain):
    torch._check(x.dim() == 4, lambda: "suite_ops::upfirdn2d: x must be 4-D")
    torch._check(f.dim() == 2, lambda: "suite_ops::upfirdn2d: f must be 2-D")
    out_w = (x.shape[3] * upx + padx0 + padx1 - f.shape[1]) // downx + 1
    out_h = (x.shape[2] * upy + pady0 + pady1 - f.shape[0]) // downy + 1
    return x.new_empty([x.shape[0], x.shape[1], out_h, out_w])


def _upfirdn2d_setup(ctx, inputs, output):
    x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain = inputs
    ctx.save_for_backward(f)
    ctx.args = (upx, upy, downx, downy, padx0, pady0, flip, gain)
    ctx.in_hw = (x.shape[2], x.shape[3])


def _upfirdn2d_backward(ctx, dy):
    (f,) = ctx.saved_tensors
    upx, upy, downx, downy, padx0, pady0, flip, gain = ctx.args
    ih, iw = ctx.in_hw
    oh, ow = dy.shape[2], dy.shape[3]
    fh, fw = f.shape
    px0 = fw - padx0 - 1
    px1 = iw * upx - ow * downx + padx0 - upx + 1
    py0 = fh - pady0 - 1
    py1 = ih * upy - oh * downy + pady0 - upy + 1
    dx = lib.upfirdn2d(dy, f, downx, downy, upx, upy, px0, px1, py0, py1, not flip, gain)
    return (dx,) + (None,) * 11


torch.library.register_autograd("suite_ops::upfirdn2d", _upfirdn2d_backward, setup_context=_upfirdn2d_setup)

# ----------------------------------------------------------------------------------------------- bias_act

_HAS_2ND_GRAD = {4, 5, 6, 7, 8, 9}  # tanh, sigmoid, elu, selu, softplus, swish (NVIDIA bias_act.py has_2nd_grad)
_NEEDS_X = {9}  # swish's derivative needs x + b


@torch.library.register_fake("suite_ops::bias_act")
def _bias_act_fake(x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp, save_y):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _reduce_bias(dx: torch.Tensor, dim: int) -> torch.Tensor:
    return dx.sum([i for i in range(dx.ndim) if i != dim])


def _bias_act_setup(ctx, inputs, output):
    x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp, save_y = inputs
    ctx.params = (grad, dim, act, alpha, gain, clamp, save_y)
    ctx.has_b = b is not None
    if grad == 0:
        keep_x = act in _NEEDS_X or act in _HAS_2ND_GRAD
        ctx.save_for_backward(x if keep_x else None, b, output if save_y else None)
    elif grad == 1:
        ctx.save_for_backward(x if act in _HAS_2ND_GRAD else None, b, xref, yref)
    else:
        ctx.save_for_backward()


def _bias_act_backward(ctx, d_out):
    grad, dim, act, alpha, gain, clamp, save_y = ctx.params
    none7 = (None,) * 7
    if grad == 0:  # d/dx of the forward: mode 1 with the saved x (+b inside the kernel) and y
        x, b, y = ctx.saved_tensors
        dx = lib.bias_act(d_out, b, x, y, None, 1, dim, act, alpha, gain, clamp, save_y)
        db = _reduce_bias(dx, dim) if ctx.has_b and ctx.needs_input_grad[1] else None
        return (dx, db, None, None, None) + none7
    if grad == 1:  # inputs: (dy, b, x, y); mode-1 output is linear in dy, its x-derivative is mode 2
        dy, b, x, y = ctx.saved_tensors
        d_dy = lib.bias_act(d_out, b, x, y, None, 1, dim, act, alpha, gain, clamp, save_y)
        d_x = d_b = None
        if act in _HAS_2ND_GRAD and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_x = lib.bias_act(d_out, b, x, y, dy, 2, dim, act, alpha, gain, clamp, save_y)
            d_b = _reduce_bias(d_x, dim) if ctx.has_b and ctx.needs_input_grad[1] else None
        return (d_dy, d_b, d_x, None, None) + none7
    raise RuntimeError(
        "suite_ops::bias_act supports first and second derivatives only (docs/ops.md); use the 'ref' "
        "backend for third-order gradients"
    )


torch.library.register_autograd("suite_ops::bias_act", _bias_act_backward, setup_context=_bias_act_setup)

# Masked path of linear (+clamp, mask semantics), relu and lrelu: the forward also returns the packed 2-bit
# gradient mask (ops/csrc/bias_act_math.h), the backward reads dy and the mask instead of dy and the saved
# output. The first derivative is linear in dy and these activations have no curvature term, so the gradient of
# bias_act_masked_grad is itself: derivatives of any order.


@torch.library.register_fake("suite_ops::bias_act_masked")
def _bias_act_masked_fake(x, b, dim, act, alpha, gain, clamp):
    words = 2 * ((x.numel() + 31) // 32)
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty([words], dtype=torch.int32)


@torch.library.register_fake("suite_ops::bias_act_masked_grad")
def _bias_act_masked_grad_fake(dy, mask, act, alpha, gain):
    return torch.empty_like(dy, memory_format=torch.contiguous_format)


def _bias_act_masked_setup(ctx, inputs, output):
    x, b, dim, act, alpha, gain, clamp = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])
    ctx.params = (dim, act, alpha, gain)
    ctx.has_b = b is not None


def _bias_act_masked_backward(ctx, d_out, _d_mask):
    (mask,) = ctx.saved_tensors
    dim, act, alpha, gain = ctx.params
    dx = lib.bias_act_masked_grad(d_out, mask, act, alpha, gain)
    db = _reduce_bias(dx, dim) if ctx.has_b and ctx.needs_input_grad[1] else None
    return dx, db, None, None, None, None, None


def _bias_act_masked_grad_setup(ctx, inputs, output):
    dy, mask, act, alpha, gain = inputs
    ctx.save_for_backward(mask)
    ctx.params = (act, alpha, gain)


def _bias_act_masked_grad_backward(ctx, d_dx):
    (mask,) = ctx.saved_tensors
    return lib.bias_act_masked_grad(d_dx, mask, *ctx.params), None, None, None, None


torch.library.register_autograd(
    "suite_ops::bias_act_masked", _bias_act_masked_backward, setup_context=_bias_act_masked_setup
)
torch.library.register_autograd(
    "suite_ops::bias_act_masked_grad", _bias_act_masked_grad_backward, setup_context=_bias_act_masked_grad_setup
)

# -------------------------------------------------------------------------------------------- grid_sample


@torch.library.register_fake("suite_ops::grid_sample_2d")
def _grid_sample_fake(input, grid):
    return input.new_empty([input.shape[0], input.shape[1], grid.shape[1], grid.shape[2]])


@torch.library.register_fake("suite_ops::grid_sample_2d_backward")
def _grid_sample_backward_fake(grad_out, input, grid, input_grad, grid_grad):
    gi = torch.empty_like(input, memory_format=torch.contiguous_format) if input_grad else input.new_empty([0])
    gg = torch.empty_like(grid, memory_format=torch.contiguous_format) if grid_grad else grid.new_empty([0])
    return gi, gg


def _grid_sample_setup(ctx, inputs, output):
    input, grid = inputs
    ctx.save_for_backward(input, grid)


def _grid_sample_backward(ctx, grad_out):
    input, grid = ctx.saved_tensors
    gi, gg = lib.grid_sample_2d_backward(grad_out, input, grid, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
    return (gi if ctx.needs_input_grad[0] else None), (gg if ctx.needs_input_grad[1] else None)


def _grid_sample_bwd_setup(ctx, inputs, output):
    grad_out, input, grid, input_grad, grid_grad = inputs
    ctx.save_for_backward(grid)


def _grid_sample_bwd_backward(ctx, gg_input, gg_grid):
    (grid,) = ctx.saved_tensors
    if ctx.needs_input_grad[2] or (gg_grid is not None and gg_grid.numel() > 0):
        raise RuntimeError(
            "suite_ops::grid_sample_2d: second derivatives are implemented with respect to the input only "
            "(docs/ops.md); the grid must not require grad here. Use the 'ref' backend otherwise."
        )
    d_grad_out = lib.grid_sample_2d(gg_input, grid) if gg_input is not None and ctx.needs_input_grad[0] else None
    return d_grad_out, None, None, None, None


torch.library.register_autograd("suite_ops::grid_sample_2d", _grid_sample_backward, setup_context=_grid_sample_setup)
torch.library.register_autograd(
    "suite_ops::grid_sample_2d_backward", _grid_sample_bwd_backward, setup_context=_grid_sample_bwd_setup
)

# ------------------------------------------------------------------------------------------- volume_sample


@torch.library.register_fake("suite_ops::volume_sample_3d")
def _volume_sample_fake(volume, points):
    return volume.new_empty([volume.shape[0], volume.shape[1], points.shape[1]])


@torch.library.register_fake("suite_ops::volume_sample_3d_backward")
def _volume_sample_backward_fake(grad_out, volume, points, volume_grad, points_grad):
    gv = torch.empty_like(volume, memory_format=torch.contiguous_format) if volume_grad else volume.new_empty([0])
    gp = torch.empty_like(points, memory_format=torch.contiguous_format) if points_grad else points.new_empty([0])
    return gv, gp


@torch.library.register_fake("suite_ops::volume_sample_3d_double_backward")
def _volume_sample_double_backward_fake(
    grad_out, volume, points, gg_volume, gg_points, out_grad, volume_grad, points_grad
):
    def like(t, wanted):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if wanted else t.new_empty([0])

    return like(grad_out, out_grad), like(volume, volume_grad), like(points, points_grad)


def _volume_sample_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _volume_sample_backward(ctx, grad_out):
    volume, points = ctx.saved_tensors
    gv, gp = lib.volume_sample_3d_backward(grad_out, volume, points, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
    return (gv if ctx.needs_input_grad[0] else None), (gp if ctx.needs_input_grad[1] else None)


def _volume_sample_bwd_setup(ctx, inputs, output):
    grad_out, volume, points, volume_grad, points_grad = inputs
    ctx.save_for_backward(grad_out, volume, points)


def _present(t):
    return t if t is not None and t.numel() > 0 else None


def _volume_sample_bwd_backward(ctx, gg_volume, gg_points):
    # (grad_volume, grad_points) is linear in grad_out: its derivative is the lookup of gg_volume plus the
    # lookup with weights differentiated along gg_points; the volume enters grad_points linearly; the points
    # enter both through the stencil (first and mixed second derivatives of the trilinear weights).
    grad_out, volume, points = ctx.saved_tensors
    need = ctx.needs_input_grad[:3]
    gg_volume, gg_points = _present(gg_volume), _present(gg_points)
    if not any(need) or (gg_volume is None and gg_points is None):
        return None, None, None, None, None
    d_out, d_volume, d_points = lib.volume_sample_3d_double_backward(
        grad_out, volume, points, gg_volume, gg_points, *need
    )
    return tuple(t if wanted else None for t, wanted in zip((d_out, d_volume, d_points), need)) + (None, None)


def _volume_sample_bwd2_setup(ctx, inputs, output):
    pass


def _volume_sample_bwd2_backward(ctx, *grads):
    raise RuntimeError(
        "suite_ops::volume_sample_3d supports first and second derivatives only; use the 'ref' backend for "
        "third-order gradients"
    )


torch.library.register_autograd(
    "suite_ops::volume_sample_3d", _volume_sample_backward, setup_context=_volume_sample_setup
)
torch.library.register_autograd(
    "suite_ops::volume_sample_3d_backward", _volume_sample_bwd_backward, setup_context=_volume_sample_bwd_setup
)
torch.library.register_autograd(
    "suite_ops::volume_sample_3d_double_backward",
    _volume_sample_bwd2_backward,
    setup_context=_volume_sample_bwd2_setup,
)

# ----------------------------------------------------------------------------------------------- winograd
# winograd_tiles(kind) and winograd_untiles(kind) are linear and adjoint to each other (ops/winograd.py): each one's
# backward is the other, so derivatives of any order exist.


@torch.library.register_fake("suite_ops::winograd_tiles")
def _winograd_tiles_fake(x, kind, tiles_h, tiles_w):
    return x.new_empty([36, x.shape[1], x.shape[0] * tiles_h * tiles_w])


@torch.library.register_fake("suite_ops::winograd_untiles")
def _winograd_untiles_fake(m, kind, n, h, w):
    return m.new_empty([n, m.shape[1], h, w])


def _winograd_tiles_setup(ctx, inputs, output):
    x, kind, _, _ = inputs
    ctx.args = (kind, x.shape[0], x.shape[2], x.shape[3])


def _winograd_tiles_backward(ctx, d_tiles):
    return lib.winograd_untiles(d_tiles, *ctx.args), None, None, None


def _winograd_untiles_setup(ctx, inputs, output):
    _, kind, _, h, w = inputs
    ctx.args = (kind, (h + 3) // 4, (w + 3) // 4)


def _winograd_untiles_backward(ctx, d_y):
    return lib.winograd_tiles(d_y, *ctx.args), None, None, None, None


torch.library.register_autograd(
    "suite_ops::winograd_tiles", _winograd_tiles_backward, setup_context=_winograd_tiles_setup
)
torch.library.register_autograd(
    "suite_ops::winograd_untiles", _winograd_untiles_backward, setup_context=_winograd_untiles_setup
)
