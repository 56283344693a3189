"""Frame-consistent batch augmentations for clips: the weak / strong augmentation of FixMatch (arXiv 2001.07685 Sec. 2).

Clips are (B, C, T, H, W). Every random parameter is drawn once **per clip** and applied to all of its frames;
clips of a batch get independent parameters. Geometric transforms (random resized crop, flip, RandAugment's
rotate / shear / translate) are folded into one affine matrix per clip and applied with a single ``grid_sample`` on
the (B, C*T, H, W) view, so the frames of a clip cannot disagree. Photometric RandAugment ops use kornia.enhance
with the per-clip factor repeated over the frames. All sampling uses the ``generator`` passed in (per-rank stream,
every rank draws its own stream); parameters are drawn on the CPU and moved to the clips' device.
"""

from __future__ import annotations

import math

import kornia.enhance as ke
import torch
import torch.nn.functional as F

GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
PHOTOMETRIC_OPS = ("identity", "autocontrast", "brightness", "contrast", "saturation", "sharpness", "posterize",
                   "solarize", "equalize")  # fmt: skip
RANDAUGMENT_OPS = GEOMETRIC_OPS + PHOTOMETRIC_OPS


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low


def crop_flip_affine(
    batch: int,
    in_hw: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hflip: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Per-clip affine (B, 3, 3) in normalised coordinates for a random resized crop (+ horizontal flip).

    The crop covers ``scale`` of the frame area with aspect ``ratio`` (log-uniform), as torchvision's
    RandomResizedCrop, clamped to the frame.
    """
    h, w = in_hw
    area = _uniform(batch, scale[0], scale[1], generator) * h * w
    log_r = _uniform(batch, math.log(ratio[0]), math.log(ratio[1]), generator)
    r = torch.exp(log_r)
    cw = torch.sqrt(area * r).clamp(max=w)
    ch = torch.sqrt(area / r).clamp(max=h)
    cx = _uniform(batch, 0, 1, generator) * (w - cw) + cw / 2
    cy = _uniform(batch, 0, 1, generator) * (h - ch) + ch / 2
    theta = torch.zeros(batch, 3, 3, dtype=torch.float64)
    theta[:, 0, 0] = cw / w
    theta[:, 1, 1] = ch / h
    theta[:, 0, 2] = 2 * cx / w - 1
    theta[:, 1, 2] = 2 * cy / h - 1
    theta[:, 2, 2] = 1
    if hflip:
        flip = torch.rand(batch, generator=generator) < 0.5
        theta[flip, 0, 0] *= -1
    return theta


def center_affine(batch: int, in_hw: tuple[int, int]) -> torch.Tensor:
    """Affine of the largest centred square crop (evaluation of training-size inputs)."""
    h, w = in_hw
    s = min(h, w)
    theta = torch.zeros(batch, 3, 3, dtype=torch.float64)
    theta[:, 0, 0] = s / w
    theta[:, 1, 1] = s / h
    theta[:, 2, 2] = 1
    return theta


def apply_affine(clips: torch.Tensor, theta: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Warp every frame of clip b with ``theta[b]`` (output-to-input, normalised coordinates)."""
    b, c, t, h, w = clips.shape
    flat = clips.reshape(b, c * t, h, w)
    grid = F.affine_grid(theta[:, :2].to(clips.device, clips.dtype), [b, c * t, *out_hw], align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(b, c, t, *out_hw)


def _frames(clips: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = clips.shape
    return clips.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _clips(frames: torch.Tensor, b: int, t: int) -> torch.Tensor:
    _, c, h, w = frames.shape
    return frames.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


def _photometric(name: str, frames: torch.Tensor, mag: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """One RandAugment colour op on frames in [0, 1]; ``mag`` in [0, 1] per frame (repeated per clip)."""
    if name == "identity":
        return frames
    if name == "autocontrast":
        lo = frames.amin(dim=(2, 3), keepdim=True)
        hi = frames.amax(dim=(2, 3), keepdim=True)
        return ((frames - lo) / (hi - lo).clamp_min(1e-3)).clamp(0, 1)
    if name == "brightness":
        return ke.adjust_brightness(frames, 0.3 * mag * sign)
    if name == "contrast":
        return ke.adjust_contrast(frames, 1 + 0.9 * mag * sign)
    if name == "saturation":
        return ke.adjust_saturation(frames, 1 + 0.9 * mag * sign)
    if name == "sharpness":
        return ke.sharpness(frames, 0.9 * mag + 0.05)
    if name == "posterize":
        bits = (8 - torch.round(4 * mag)).to(torch.uint8)
        return ke.posterize(frames, bits)
    if name == "solarize":
        return ke.solarize(frames, 1 - mag)
    if name == "equalize":
        return ke.equalize(frames)
    raise ValueError(f"unknown RandAugment op {name!r}; expected one of {RANDAUGMENT_OPS}")


def _geometric_affine(name: str, mag: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) affine of one geometric RandAugment op (rotate <= 30 deg, shear <= 0.3, translate <= 30 %)."""
    n = mag.shape[0]
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    v = (mag * sign).double()
    if name == "rotate":
        a = v * math.radians(30)
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    elif name == "shear_x":
        m[:, 0, 1] = 0.3 * v
    elif name == "shear_y":
        m[:, 1, 0] = 0.3 * v
    elif name == "translate_x":
        m[:, 0, 2] = 0.6 * v
    elif name == "translate_y":
        m[:, 1, 2] = 0.6 * v
    else:
        raise ValueError(f"unknown geometric op {name!r}")
    return m


def cutout(clips: torch.Tensor, size: float, generator: torch.Generator | None) -> torch.Tensor:
    """Cutout: one square of side ``size``·min(H, W) per clip, the same on every frame, filled with 0.5."""
    b, _, _, h, w = clips.shape
    side = max(1, int(round(size * min(h, w))))
    cy = torch.randint(0, h, (b,), generator=generator)
    cx = torch.randint(0, w, (b,), generator=generator)
    ys = torch.arange(h)[None, :]
    xs = torch.arange(w)[None, :]
    in_y = (ys >= (cy - side // 2)[:, None]) & (ys < (cy - side // 2 + side)[:, None])
    in_x = (xs >= (cx - side // 2)[:, None]) & (xs < (cx - side // 2 + side)[:, None])
    box = (in_y[:, :, None] & in_x[:, None, :]).to(clips.device)[:, None, None]
    return torch.where(box, torch.full_like(clips, 0.5), clips)


class ClipAugment:
    """Weak (crop + flip) and strong (weak + RandAugment + Cutout) clip augmentation (suite choice [X] for video).

    Args:
        out_size: side of the square output crop.
        scale, ratio: random-resized-crop area fraction and aspect range.
        hflip: random horizontal flip (disable when the class depends on left/right motion).
        ra_num_ops: RandAugment ops per clip (FixMatch: 2).
        ra_magnitude: maximum magnitude in [0, 10]; each op draws its magnitude uniformly in [0, max]
            (FixMatch's RandAugmentMC).
        ra_apply_prob: probability with which each drawn op is applied to a clip; FixMatch's RandAugment applies
            every op with probability 0.5 (google-research/fixmatch libml/augment.py L198, the policy
            ``(op, 0.5, level)`` applied by third_party/auto_augment/augmentations.py L211-213). 1.0 applies all.
        cutout_size: Cutout side as a fraction of the short side (0 disables).
        ops: RandAugment op names to draw from.
    """

    def __init__(
        self,
        out_size: int,
        scale: tuple[float, float] = (0.35, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        ra_num_ops: int = 2,
        ra_magnitude: float = 10.0,
        ra_apply_prob: float = 0.5,
        cutout_size: float = 0.5,
        ops: tuple[str, ...] = RANDAUGMENT_OPS,
    ):
        unknown = [o for o in ops if o not in RANDAUGMENT_OPS]
        if unknown:
            raise ValueError(f"ClipAugment: unknown ops {unknown}; expected a subset of {RANDAUGMENT_OPS}")
        if not 0.0 <= ra_apply_prob <= 1.0:
            raise ValueError(f"ClipAugment: ra_apply_prob must be in [0, 1], got {ra_apply_prob}")
        self.out_size = int(out_size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.hflip = hflip
        self.ra_num_ops = ra_num_ops
        self.ra_magnitude = ra_magnitude
        self.ra_apply_prob = ra_apply_prob
        self.cutout_size = cutout_size
        self.ops = tuple(ops)

    def weak(self, clips: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random resized crop + flip of float clips in [0, 1]."""
        b, _, _, h, w = clips.shape
        theta = crop_flip_affine(b, (h, w), self.scale, self.ratio, self.hflip, generator)
        return apply_affine(clips, theta, (self.out_size, self.out_size))

    def strong(self, clips: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Weak + RandAugment (geometric ops folded into the crop affine) + Cutout, per clip.

        Each of the ``ra_num_ops`` drawn ops is applied with probability ``ra_apply_prob`` (drawn per clip)."""
        b, _, t, h, w = clips.shape
        theta = crop_flip_affine(b, (h, w), self.scale, self.ratio, self.hflip, generator)
        choice = torch.randint(0, len(self.ops), (b, self.ra_num_ops), generator=generator)
        mag = torch.rand(b, self.ra_num_ops, generator=generator) * (self.ra_magnitude / 10.0)
        sign = torch.where(torch.rand(b, self.ra_num_ops, generator=generator) < 0.5, -1.0, 1.0)
        applied = torch.rand(b, self.ra_num_ops, generator=generator) < self.ra_apply_prob
        choice = torch.where(applied, choice, -1)  # -1: this op is skipped for this clip
        for slot in range(self.ra_num_ops):
            for k, name in enumerate(self.ops):
                if name in GEOMETRIC_OPS:
                    sel = choice[:, slot] == k
                    if sel.any():
                        theta[sel] = theta[sel] @ _geometric_affine(name, mag[sel, slot], sign[sel, slot])
        out = apply_affine(clips, theta, (self.out_size, self.out_size))
        for slot in range(self.ra_num_ops):
            for k, name in enumerate(self.ops):
                sel = (choice[:, slot] == k).nonzero().flatten()
                if name in GEOMETRIC_OPS or name == "identity" or sel.numel() == 0:
                    continue
                sub = _frames(out[sel.to(out.device)])
                m = mag[sel, slot].repeat_interleave(t).to(out.device, out.dtype)
                s = sign[sel, slot].repeat_interleave(t).to(out.device, out.dtype)
                out[sel.to(out.device)] = _clips(_photometric(name, sub, m, s), sel.numel(), t)
        if self.cutout_size > 0:
            out = cutout(out, self.cutout_size, generator)
        return out.clamp(0, 1)


def multi_view_crops(clips: torch.Tensor, crops: int, out_size: int) -> torch.Tensor:
    """Test-time spatial views: (B, V, C, T, H, W) -> (B, V·crops, C, T, s, s) (clips x crops).

    ``crops=1``: the centred square; ``crops=3``: left/centre/right (or top/centre/bottom) squares along the long side,
    each the full short side, resized to ``out_size``.
    """
    if crops not in (1, 3):
        raise ValueError(f"multi_view_crops: crops must be 1 or 3, got {crops}")
    b, v, c, t, h, w = clips.shape
    flat = clips.reshape(b * v, c, t, h, w)
    s = min(h, w)
    views = []
    offsets = [0.0] if crops == 1 else [-1.0, 0.0, 1.0]
    for off in offsets:
        theta = center_affine(b * v, (h, w))
        if w >= h:
            theta[:, 0, 2] = off * (w - s) / w
        else:
            theta[:, 1, 2] = off * (h - s) / h
        views.append(apply_affine(flat, theta, (out_size, out_size)).reshape(b, v, c, t, out_size, out_size))
    return torch.stack(views, dim=2).reshape(b, v * crops, c, t, out_size, out_size)
