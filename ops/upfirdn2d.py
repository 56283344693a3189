"""upfirdn2d: upsample, pad, FIR-filter and downsample a batch of 2-D images (NVlabs stylegan2-ada-pytorch).

NVIDIA's argument conventions (stylegan2-ada-pytorch ``torch_utils/ops/upfirdn2d.py``): ``up``/``down`` are an
int or ``[x, y]``; ``padding`` is an int, ``[px, py]`` or ``[x0, x1, y0, y1]`` relative to the upsampled image
(negative crops); ``flip_filter=False`` is a true convolution; the filter is scaled by
``gain ** (f.ndim / 2)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ops import _backend


def _parse_scaling(scaling) -> tuple[int, int]:
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    if not (isinstance(scaling, (list, tuple)) and len(scaling) == 2 and all(isinstance(s, int) for s in scaling)):
        raise ValueError(f"upfirdn2d: up/down must be an int or [x, y] ints, got {scaling!r}")
    sx, sy = scaling
    if sx < 1 or sy < 1:
        raise ValueError(f"upfirdn2d: up/down factors must be >= 1, got {scaling!r}")
    return sx, sy


def _parse_padding(padding) -> tuple[int, int, int, int]:
    """NVIDIA padding convention only (``_parse_padding`` of NVIDIA's upfirdn2d.py): int, [x, y] or [x0, x1, y0, y1]."""
    if isinstance(padding, int):
        padding = [padding, padding]
    if not (isinstance(padding, (list, tuple)) and all(isinstance(p, int) for p in padding)):
        raise ValueError(f"upfirdn2d: padding must be an int or a list of ints, got {padding!r}")
    if len(padding) == 2:
        padx, pady = padding
        padding = [padx, padx, pady, pady]
    if len(padding) != 4:
        raise ValueError(f"upfirdn2d: padding must be int, [x, y] or [x0, x1, y0, y1], got {padding!r}")
    return tuple(padding)


def _get_filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(fw, fh) of a prepared filter; a separable 1-D filter has fw == fh == taps."""
    if f is None:
        return 1, 1
    if not (isinstance(f, torch.Tensor) and f.ndim in (1, 2)):
        raise ValueError(f"upfirdn2d: filter must be a 1-D or 2-D tensor or None, got {type(f)}")
    fw = f.shape[-1]
    fh = f.shape[0]
    if fw < 1 or fh < 1:
        raise ValueError(f"upfirdn2d: empty filter of shape {tuple(f.shape)}")
    return fw, fh


def setup_filter(f, device=None, normalize=True, flip_filter=False, gain=1, separable=None) -> torch.Tensor:
    """Prepare a FIR filter as float32 (NVIDIA ``setup_filter``).

    A 1-D filter stays separable only when ``separable`` is True, or when it is None and the filter has
    at least 8 taps; otherwise it becomes the outer product. ``normalize`` makes the DC gain 1;
    ``gain`` is applied as ``gain ** (ndim / 2)``.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f"setup_filter: expected a scalar, 1-D or 2-D non-empty filter, got shape {tuple(f.shape)}")
    if f.ndim == 0:
        f = f[np.newaxis]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = f.ger(f)
    if f.ndim != (1 if separable else 2):
        raise ValueError(f"setup_filter: a 2-D filter cannot be separable (got shape {tuple(f.shape)})")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1) -> torch.Tensor:
    """Reference path (NVIDIA ``_upfirdn2d_ref``): zero insertion, pad/crop, depthwise conv, strided slicing."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    n, c, in_h, in_w = x.shape
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)

    x = x.reshape([n, c, in_h, 1, in_w, 1])
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([n, c, in_h * upy, in_w * upx])

    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0) : x.shape[2] - max(-pady1, 0), max(-padx0, 0) : x.shape[3] - max(-padx1, 0)]

    f = f * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[np.newaxis, np.newaxis].repeat([c, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=c)
    else:
        x = F.conv2d(x, f.unsqueeze(2), groups=c)
        x = F.conv2d(x, f.unsqueeze(3), groups=c)
    return x[:, :, ::downy, ::downx]


def _upfirdn2d_compiled(x, f, up, down, padding, flip_filter, gain) -> torch.Tensor:
    """Compiled path: registered ``suite_ops::upfirdn2d`` (one 2-D pass, or two 1-D passes if separable)."""
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    f = f.to(device=x.device, dtype=torch.float32)
    op = torch.ops.suite_ops.upfirdn2d
    if f.ndim == 2:
        return op(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, float(gain))
    g = math.sqrt(gain)
    x = op(x, f.unsqueeze(0), upx, 1, downx, 1, padx0, padx1, 0, 0, flip_filter, g)
    return op(x, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, pady0, pady1, flip_filter, g)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1) -> torch.Tensor:
    """Upsample (zero insertion), pad, convolve with ``f``, downsample ``x`` [N, C, H, W] (NVIDIA ``upfirdn2d``)."""
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError(f"upfirdn2d: x must be a 4-D [N, C, H, W] tensor, got {getattr(x, 'shape', type(x))}")
    fw, fh = _get_filter_size(f)
    if f is not None and f.requires_grad:
        raise ValueError("upfirdn2d: no gradient with respect to the filter f (as NVIDIA's upfirdn2d)")
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    out_w = (x.shape[3] * upx + padx0 + padx1 - fw) // downx + 1
    out_h = (x.shape[2] * upy + pady0 + pady1 - fh) // downy + 1
    if out_w < 1 or out_h < 1:
        raise ValueError(
            f"upfirdn2d: empty output ({out_h}x{out_w}) for input {tuple(x.shape)}, filter {fh}x{fw}, "
            f"up {up}, down {down}, padding {padding}"
        )
    if _backend.use_compiled("upfirdn2d", x):
        return _upfirdn2d_compiled(x, f, up, down, padding, flip_filter, gain)
    return _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)


def filter2d(x, f, padding=0, flip_filter=False, gain=1) -> torch.Tensor:
    """Same-size filtering; padding adds fw//2, (fw-1)//2 per axis (NVIDIA ``filter2d``)."""
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1) -> torch.Tensor:
    """Upsample by ``up``, gain ``gain * upx * upy`` compensating the inserted zeros (NVIDIA ``upsample2d``)."""
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1) -> torch.Tensor:
    """Downsample by ``down`` after low-pass filtering (NVIDIA ``downsample2d``)."""
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)
