"""conv2d_resample: 2-D convolution with optional up/downsampling (NVlabs stylegan2-ada-pytorch ``conv2d_resample.py``).

A pure composition of ``F.conv2d``/``F.conv_transpose2d`` (native double backward, so no conv2d_gradfix) and
``upfirdn2d``; it has no kernel of its own. ``padding`` is relative to the upsampled image and applied once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ops import upfirdn2d as _up
from ops import winograd as _winograd


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True) -> torch.Tensor:
    """F.conv2d is a correlation: ``flip_weight=False`` flips the kernel to make it a true convolution."""
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def _check(x, w, f, up, down, groups) -> None:
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError(f"conv2d_resample: x must be [N, C, H, W], got {getattr(x, 'shape', type(x))}")
    if not (isinstance(w, torch.Tensor) and w.ndim == 4 and w.dtype == x.dtype):
        raise ValueError(
            f"conv2d_resample: w must be a 4-D tensor of x's dtype {x.dtype}, got {getattr(w, 'shape', w)}"
        )
    if f is not None and not (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype == torch.float32):
        raise ValueError("conv2d_resample: f must be None or a float32 1-D/2-D filter from setup_filter")
    for name, v in (("up", up), ("down", down), ("groups", groups)):
        if not (isinstance(v, int) and v >= 1):
            raise ValueError(f"conv2d_resample: {name} must be an int >= 1, got {v!r}")


def _adjusted_padding(f, up, down, padding) -> list[int]:
    """Padding adjustment for up/down (NVIDIA ``conv2d_resample``)."""
    fw, fh = _up._get_filter_size(f)
    px0, px1, py0, py1 = _up._parse_padding(padding)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    return [px0, px1, py0, py1]


def conv2d_resample_generic(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """The generic composition of NVIDIA ``conv2d_resample`` (its fallback): upfirdn2d(up) -> conv -> upfirdn2d(down).

    Every fast path of ``conv2d_resample`` must equal this (tests/ops/test_conv2d_resample.py).
    """
    _check(x, w, f, up, down, groups)
    p = _adjusted_padding(f, up, down, padding)
    x = _up.upfirdn2d(x, f if up > 1 else None, up=up, padding=p, gain=up**2, flip_filter=flip_filter)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = _up.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """Convolve ``x`` with ``w`` [O, I/groups, kh, kw], resampling with the FIR ``f`` (NVIDIA ``conv2d_resample``)."""
    _check(x, w, f, up, down, groups)
    out_ch, in_ch_per_group, kh, kw = w.shape
    px0, px1, py0, py1 = _adjusted_padding(f, up, down, padding)

    if kw == 1 and kh == 1 and down > 1 and up == 1:  # 1x1, down only: filter first, then 1x1 conv
        x = _up.upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    if kw == 1 and kh == 1 and up > 1 and down == 1:  # 1x1, up only: 1x1 conv first, then upsample
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return _up.upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)

    if down > 1 and up == 1:  # down only: FIR with padding, then strided conv
        x = _up.upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    if up > 1:  # transposed strided conv with the weight transposed, then FIR (gain up^2), optional down
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_ch // groups, in_ch_per_group, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_ch_per_group, out_ch // groups, kh, kw)
        px0, px1 = px0 - (kw - 1), px1 - (kw - up)
        py0, py1 = py0 - (kh - 1), py1 - (kh - up)
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = _up.upfirdn2d(
            x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter
        )
        if down > 1:
            x = _up.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:  # plain conv
        if kh == kw == 3 and px0 == py0 == 1 and _winograd.use_winograd(x, w, groups):
            return _winograd.conv3x3_winograd(x, w if flip_weight else w.flip([2, 3]))
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    return conv2d_resample_generic(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
