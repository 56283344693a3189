"""Winograd F(4x4, 3x3) convolution for the CPU (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
CVPR 2016, section 4; docs/ops.md, "Winograd convolution").

A 3x3 convolution with padding 1 computed on 6x6 input patches at stride 4: each patch and each filter are moved
into the Winograd domain (``V = B^T d B``, ``U = G g G^T``), multiplied there with one matrix product per tile
position (36 products of [K, C] x [C, P]) and moved back (``Y = A^T M A``). That is 36 instead of 144
multiply-adds per 4x4 output and channel pair, 4x less arithmetic than the direct convolution; the transforms are
memory-bound passes. The result equals ``F.conv2d(x, w, padding=1)`` up to rounding (relative error about 3e-6
in fp32, section 5 of the paper).

Tiles are stored as [36, C, P] with P = N * ceil(H/4) * ceil(W/4). The tile transforms run in the compiled
``suite_ops::winograd_tiles`` / ``winograd_untiles`` kernels (ops/csrc/winograd_cpu.cpp) or in the pure-PyTorch
reference below (each transform's adjoint is the other one, which is also their autograd pairing). The convolution
and its two derivatives are autograd functions written with each other, so derivatives of any order (R1's double
backward) stay in the Winograd domain. ``conv2d_resample`` uses it where ``use_winograd`` says so.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from ops._backend import use_compiled

TILE, STEP = 6, 4

_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0],
       [0, 4, 0, -5, 0, 1]]  # fmt: skip
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
      [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]  # fmt: skip
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]

# Smallest layers measured to gain (experiments/bench_ops.py --winograd, docs/performance.md): at least 128 input
# and output channels and C * K * H * W of at least 2^25 (256 channels at 32x32, 128 at 64x64, 512 at 16x16).
MIN_CHANNELS = 128
MIN_WORK = 2**25
CONV3X3_MODES = ("winograd", "direct")
# The environment variable carries the choice into spawned DDP workers (experiments/train.py sets it).
_conv3x3 = {"mode": os.environ.get("SUITE_OPS_CONV3X3", "winograd")}
# Tiles of one chunk of images (the transient [36, C, P] buffers; 9.4 MB per 64x64 image at 256 channels).
TILE_BUDGET_BYTES = 32 * 2**20


@functools.cache
def _matrices(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B^T [6, 6], A^T [4, 6] and kron(G, G) [36, 9] in ``dtype`` (built in float64)."""
    bt = torch.tensor(_BT, dtype=torch.float64)
    at = torch.tensor(_AT, dtype=torch.float64)
    g = torch.tensor(_G, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (bt, at, torch.kron(g, g)))


def _tile_counts(h: int, w: int) -> tuple[int, int]:
    return -(-h // STEP), -(-w // STEP)


def tiles_reference(x: torch.Tensor, kind: int) -> torch.Tensor:
    """Reference of ``suite_ops::winograd_tiles``: [N, C, H, W] -> [36, C, P].

    kind 0: ``B^T d B`` of the 6x6 patches of the zero-padded input at stride 4 (the input transform);
    kind 1: ``A dY A^T`` of the 4x4 tiles (the adjoint of the output transform).
    """
    n, c, h, w = x.shape
    th, tw = _tile_counts(h, w)
    bt, at, _ = _matrices(x.dtype, x.device)
    if kind == 0:
        patches = F.pad(x, (1, STEP * tw + 1 - w, 1, STEP * th + 1 - h)).unfold(2, TILE, STEP).unfold(3, TILE, STEP)
        out = torch.einsum("ia,jb,nchwab->ijcnhw", bt, bt, patches)
    else:
        patches = F.pad(x, (0, STEP * tw - w, 0, STEP * th - h)).unfold(2, STEP, STEP).unfold(3, STEP, STEP)
        out = torch.einsum("ai,bj,nchwab->ijcnhw", at, at, patches)
    return out.reshape(TILE * TILE, c, n * th * tw)


def untiles_reference(m: torch.Tensor, kind: int, n: int, h: int, w: int) -> torch.Tensor:
    """Reference of ``suite_ops::winograd_untiles``: [36, C, P] -> [N, C, H, W].

    kind 0: ``B V B^T`` added over the overlapping 6x6 patches (the adjoint of the input transform);
    kind 1: ``A^T M A`` written to the 4x4 output tiles, cropped to H x W (the output transform).
    """
    c = m.shape[1]
    th, tw = _tile_counts(h, w)
    bt, at, _ = _matrices(m.dtype, m.device)
    m = m.reshape(TILE, TILE, c, n, th, tw)
    if kind == 0:
        patches = torch.einsum("ia,jb,ijcnhw->ncabhw", bt, bt, m).reshape(n, c * TILE * TILE, th * tw)
        size = (STEP * th + 2, STEP * tw + 2)
        return F.fold(patches, size, kernel_size=TILE, stride=STEP)[:, :, 1 : h + 1, 1 : w + 1]
    y = torch.einsum("ai,bj,ijcnhw->nchawb", at, at, m).reshape(n, c, STEP * th, STEP * tw)
    return y[:, :, :h, :w]


def _tiles(x: torch.Tensor, kind: int) -> torch.Tensor:
    if use_compiled("winograd", x):
        return torch.ops.suite_ops.winograd_tiles(x, kind, *_tile_counts(x.shape[2], x.shape[3]))
    return tiles_reference(x, kind)


def _untiles(m: torch.Tensor, kind: int, n: int, h: int, w: int) -> torch.Tensor:
    if use_compiled("winograd", m):
        return torch.ops.suite_ops.winograd_untiles(m, kind, n, h, w)
    return untiles_reference(m, kind, n, h, w)


def weight_transform(weight: torch.Tensor) -> torch.Tensor:
    """``U = G g G^T`` of every filter: [K, C, 3, 3] -> [36, K, C]."""
    k, c = weight.shape[:2]
    _, _, gg = _matrices(weight.dtype, weight.device)
    return (gg @ weight.reshape(k * c, 9).t()).view(TILE * TILE, k, c)


def weight_transform_adjoint(grad_u: torch.Tensor) -> torch.Tensor:
    """Adjoint of ``weight_transform``: [36, K, C] -> [K, C, 3, 3]."""
    _, k, c = grad_u.shape
    _, _, gg = _matrices(grad_u.dtype, grad_u.device)
    return (gg.t() @ grad_u.reshape(TILE * TILE, k * c)).t().reshape(k, c, 3, 3)


def _image_chunks(x: torch.Tensor, channels: int) -> list[tuple[int, int]]:
    """Ranges of images whose tiles ([36, channels, tiles of the range]) fit in ``TILE_BUDGET_BYTES``."""
    n, _, h, w = x.shape
    th, tw = _tile_counts(h, w)
    per_image = TILE * TILE * channels * th * tw * x.element_size()
    step = max(1, TILE_BUDGET_BYTES // per_image)
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def _by_chunks(x: torch.Tensor, u: torch.Tensor, kind_in: int, out_channels: int) -> torch.Tensor:
    """untiles(1 - kind_in) of the products u @ tiles(kind_in) of x, chunk by chunk into one output."""
    n, _, h, w = x.shape
    chunks = _image_chunks(x, max(x.shape[1], out_channels))
    if len(chunks) == 1:
        return _untiles(torch.bmm(u, _tiles(x, kind_in)), 1 - kind_in, n, h, w)
    out = x.new_empty(n, out_channels, h, w)
    for a, b in chunks:  # one chunk's tiles and products alive at a time
        out[a:b] = _untiles(torch.bmm(u, _tiles(x[a:b], kind_in)), 1 - kind_in, b - a, h, w)
    return out


def _conv_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y = conv(x, weight): products of the weight's and the input's tiles, output transform."""
    return _by_chunks(x, weight_transform(weight), 0, weight.shape[0])


def _conv_input_grad(grad_y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dx of conv for the output gradient grad_y (the transposed convolution): adjoint transforms, U^T products."""
    return _by_chunks(grad_y, weight_transform(weight).transpose(1, 2), 1, weight.shape[1])


def _conv_weight_grad(x: torch.Tensor, grad_y: torch.Tensor) -> torch.Tensor:
    """dw of conv for input x and output gradient grad_y: the tile products summed over chunks of images."""
    grad_u = None
    for a, b in _image_chunks(x, max(x.shape[1], grad_y.shape[1])):
        part = torch.bmm(_tiles(grad_y[a:b], 1), _tiles(x[a:b], 0).transpose(1, 2))
        grad_u = part if grad_u is None else grad_u.add_(part)
    return weight_transform_adjoint(grad_u)


# The convolution and its two derivatives as autograd functions that save only their inputs (not the tiles, 2.25x
# the size of x; they are recomputed, one memory-bound pass) and whose backward is written with the same three
# functions: <g, conv(x, w)> is linear in each argument, so every derivative of any order is again conv, its
# input gradient or its weight gradient (R1's and path length's double backward stay in the Winograd domain and
# keep no tiles alive between the two passes). The price: a backward that needs both gradients transforms the
# output gradient twice (once in each function), one extra memory-bound pass, included in the measured step.


class _SavesInputs(torch.autograd.Function):
    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)


class _Conv(_SavesInputs):
    @staticmethod
    def forward(x, weight):
        return _conv_forward(x, weight)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_x = _ConvInputGrad.apply(grad_y, weight) if ctx.needs_input_grad[0] else None
        grad_w = _ConvWeightGrad.apply(x, grad_y) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


class _ConvInputGrad(_SavesInputs):
    @staticmethod
    def forward(grad_y, weight):
        return _conv_input_grad(grad_y, weight)

    @staticmethod
    def backward(ctx, g):
        grad_y, weight = ctx.saved_tensors
        d_grad_y = _Conv.apply(g, weight) if ctx.needs_input_grad[0] else None
        d_weight = _ConvWeightGrad.apply(g, grad_y) if ctx.needs_input_grad[1] else None
        return d_grad_y, d_weight


class _ConvWeightGrad(_SavesInputs):
    @staticmethod
    def forward(x, grad_y):
        return _conv_weight_grad(x, grad_y)

    @staticmethod
    def backward(ctx, g):
        x, grad_y = ctx.saved_tensors
        d_x = _ConvInputGrad.apply(grad_y, g) if ctx.needs_input_grad[0] else None
        d_grad_y = _Conv.apply(x, g) if ctx.needs_input_grad[1] else None
        return d_x, d_grad_y


def conv3x3_winograd(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, weight, padding=1)`` (a correlation, groups 1) by Winograd F(4x4, 3x3)."""
    if x.ndim != 4 or weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3) or weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"conv3x3_winograd: x must be [N, C, H, W] and weight [K, C, 3, 3], got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    return _Conv.apply(x, weight)


def set_conv3x3(mode: str) -> None:
    """Select the algorithm of the eligible 3x3 convolutions on the CPU (config ``ops.conv3x3``): ``winograd`` or
    ``direct`` (oneDNN, as the original)."""
    if mode not in CONV3X3_MODES:
        raise ValueError(f"ops.conv3x3 must be one of {CONV3X3_MODES}, got {mode!r}")
    _conv3x3["mode"] = mode


def get_conv3x3() -> str:
    """The active 3x3 convolution algorithm on the CPU."""
    return _conv3x3["mode"]


def use_winograd(x: torch.Tensor, weight: torch.Tensor, groups: int) -> bool:
    """Whether a 3x3, padding-1, stride-1 convolution of ``x`` takes the Winograd path.

    ``ops.conv3x3 = winograd`` (the default), CPU fp32/fp64 with the compiled tile kernels (``auto`` and
    ``compiled`` backends), groups 1 and a layer large enough to gain; CUDA keeps cuDNN, which chooses its own
    algorithms, and the ``ref`` backend the direct convolution (the specification).
    """
    return (
        _conv3x3["mode"] == "winograd"
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and groups == 1
        and min(x.shape[1], weight.shape[0]) >= MIN_CHANNELS
        and x.shape[1] * weight.shape[0] * x.shape[2] * x.shape[3] >= MIN_WORK
        and use_compiled("winograd", x)
    )
