"""Adaptive discriminator augmentation: augmentation pipe and adaptive-p rule (arXiv 2006.06676, Sec. 3, Appendix B).

``AugmentPipe`` applies, per sample, the geometric, colour, filtering, noise and cutout ops of arXiv 2006.06676
Appendix B, each with probability ``multiplier * p``; ``p`` is a buffer, there are no learnable parameters. The
pipe is differentiable with respect to the input images to second order (R1 is taken through it, NVIDIA
``training/loss.py``), because the geometric path uses ``ops.grid_sample.grid_sample`` and ``ops.upfirdn2d``.

Randomness: every per-sample parameter is drawn with ``torch.rand``/``torch.randn`` on the images' device,
from the ``generator`` passed to ``forward``/``sample_params`` or, when it is None, from the global torch RNG
of that device (seeded per rank by the trainer, docs/architecture.md).

The p controller of ADA is a training rule: ``lightning_modules/controllers.py``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.conversions import axis_angle_to_rotation_matrix
from torch import nn

from ops.grid_sample import grid_sample
from ops.upfirdn2d import downsample2d, setup_filter, upsample2d

# Symlet low-pass decomposition filters (PyWavelets ``Wavelet(name).dec_lo``), used by NVIDIA ``training/augment.py``.
SYM2 = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)
SYM6 = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

#: Augpipe presets of stylegan2-ada ``train.py`` (``augpipe_specs``): op multipliers passed to ``AugmentPipe``.
AUGPIPE_PRESETS: dict[str, dict[str, float]] = {
    "blit": dict(_BLIT),
    "geom": dict(_GEOM),
    "color": dict(_COLOR),
    "filter": dict(imgfilter=1),
    "noise": dict(noise=1),
    "cutout": dict(cutout=1),
    "bg": {**_BLIT, **_GEOM},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
    "bgcf": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1},
    "bgcfn": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1},
    "bgcfnc": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1, "cutout": 1},
}

#: Expected power of the four filter bands, lowest band first (1/f spectrum, NVIDIA ``training/augment.py``).
FILTER_BAND_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)


def filter_bank(lowpass=SYM2, num_bands: int = 4) -> np.ndarray:
    """Zero-phase band-pass filters [num_bands, taps] of a dyadic decomposition, lowest band first.

    As ``Hz_fbank`` of NVIDIA ``training/augment.py``.

    With the low-pass ``H(z)`` of an orthogonal wavelet, ``L(z) = H(z)H(1/z)/2`` and ``B(z) = H(-z)H(-1/z)/2``
    satisfy ``L + B = 1``; band ``k`` is ``B`` at scale ``2^k`` followed by the coarser low-passes, so the
    rows sum to a unit impulse (all gains 1 = identity).
    """
    lo = np.asarray(lowpass, dtype=np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo2 = np.convolve(lo, lo[::-1]) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    rows = [np.ones(1)]
    for _ in range(num_bands - 1):
        up = []
        for r in rows:
            z = np.zeros(2 * r.size - 1)
            z[::2] = r
            up.append(np.convolve(z, lo2))
        margin = (up[0].size - hi2.size) // 2
        rows = up + [np.pad(hi2, margin)]
    return np.stack(rows)


def _eye(n: int, batch_size: int, device) -> torch.Tensor:
    return torch.eye(n, device=device).repeat(batch_size, 1, 1)


def _affine2d(sx, sy, tx, ty, batch_size: int, device) -> torch.Tensor:
    """[B, 3, 3] matrices diag(sx, sy, 1) with translation (tx, ty); scalars or [B] tensors."""
    m = _eye(3, batch_size, device)
    m[:, 0, 0] = sx
    m[:, 1, 1] = sy
    m[:, 0, 2] = tx
    m[:, 1, 2] = ty
    return m


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3] counter-clockwise rotations (x right, y down: clockwise on screen) by ``theta`` [B]."""
    m = _eye(3, theta.shape[0], theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


class AugmentPipe(nn.Module):
    """ADA augmentation pipe (arXiv 2006.06676 Appendix B, NVIDIA ``training/augment.py``).

    Op order: blit+geom, colour, filter, noise, cutout. Each op argument (``xflip`` … ``cutout``) is a
    probability multiplier: the op fires per sample with probability ``multiplier * p``. The
    ``*_std``/``*_max``/``*_size`` arguments are strengths; ``p`` is the initial probability. Images are
    [N, C, H, W] in [-1, 1]; colour ops need C in {1, 3}.
    """

    def __init__(
        self,
        xflip: float = 0,
        rotate90: float = 0,
        xint: float = 0,
        scale: float = 0,
        rotate: float = 0,
        aniso: float = 0,
        xfrac: float = 0,
        brightness: float = 0,
        contrast: float = 0,
        lumaflip: float = 0,
        hue: float = 0,
        saturation: float = 0,
        imgfilter: float = 0,
        noise: float = 0,
        cutout: float = 0,
        *,
        xint_max: float = 0.125,
        scale_std: float = 0.2,
        rotate_max: float = 1,
        aniso_std: float = 0.2,
        xfrac_std: float = 0.125,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1,
        saturation_std: float = 1,
        imgfilter_bands=(1, 1, 1, 1),
        imgfilter_std: float = 1,
        noise_std: float = 0.1,
        cutout_size: float = 0.5,
        p: float = 0.0,
    ):
        super().__init__()
        mults = dict(
            xflip=xflip,
            rotate90=rotate90,
            xint=xint,
            scale=scale,
            rotate=rotate,
            aniso=aniso,
            xfrac=xfrac,
            brightness=brightness,
            contrast=contrast,
            lumaflip=lumaflip,
            hue=hue,
            saturation=saturation,
            imgfilter=imgfilter,
            noise=noise,
            cutout=cutout,
        )
        for name, value in mults.items():
            if not float(value) >= 0:
                raise ValueError(f"AugmentPipe: probability multiplier {name}={value!r} must be >= 0")
            setattr(self, name, float(value))
        self.xint_max = float(xint_max)
        self.scale_std = float(scale_std)
        self.rotate_max = float(rotate_max)
        self.aniso_std = float(aniso_std)
        self.xfrac_std = float(xfrac_std)
        self.brightness_std = float(brightness_std)
        self.contrast_std = float(contrast_std)
        self.hue_max = float(hue_max)
        self.saturation_std = float(saturation_std)
        self.imgfilter_bands = [float(b) for b in imgfilter_bands]
        if len(self.imgfilter_bands) != len(FILTER_BAND_POWER):
            raise ValueError(
                f"AugmentPipe: imgfilter_bands needs {len(FILTER_BAND_POWER)} values, got {list(imgfilter_bands)}"
            )
        self.imgfilter_std = float(imgfilter_std)
        self.noise_std = float(noise_std)
        self.cutout_size = float(cutout_size)
        if not p >= 0:
            raise ValueError(f"AugmentPipe: p={p!r} must be >= 0")

        self.register_buffer("p", torch.tensor(float(p)))
        # Same buffer names as NVIDIA's AugmentPipe, so its state dict maps one to one.
        self.register_buffer("Hz_geom", setup_filter(SYM6))
        self.register_buffer("Hz_fbank", torch.as_tensor(filter_bank(SYM2), dtype=torch.float32))

    @classmethod
    def from_preset(cls, name: str = "bgc", **overrides) -> AugmentPipe:
        """Pipe of a preset of ``AUGPIPE_PRESETS`` (NVIDIA ``train.py``); ``overrides`` replace or add
        constructor args.
        """
        if name not in AUGPIPE_PRESETS:
            raise ValueError(
                f"AugmentPipe.from_preset: unknown preset {name!r}, expected one of {list(AUGPIPE_PRESETS)}"
            )
        return cls(**{**AUGPIPE_PRESETS[name], **overrides})

    @property
    def uses_geometry(self) -> bool:
        return any(
            m > 0 for m in (self.xflip, self.rotate90, self.xint, self.scale, self.rotate, self.aniso, self.xfrac)
        )

    @property
    def uses_color(self) -> bool:
        return any(m > 0 for m in (self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation))

    def extra_repr(self) -> str:
        names = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast")
        names += ("lumaflip", "hue", "saturation", "imgfilter", "noise", "cutout")
        return ", ".join(f"{n}={getattr(self, n):g}" for n in names if getattr(self, n) > 0)

    # ---------------------------------------------------------------------------------------------- sampling
    def sample_params(
        self,
        batch_size: int,
        num_channels: int,
        height: int,
        width: int,
        device=None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Draw the per-sample parameters of every enabled op group (arXiv 2006.06676 Appendix B).

        Returns a dict with the keys of the enabled groups: ``geom`` [B, 3, 3] inverse affine (output pixel ->
        input pixel, centred pixel coordinates), ``color`` [B, 4, 4], ``filter`` [B, 4] band gains, ``noise``
        [B, C, H, W] additive noise, ``cutout`` [B, 1, H, W] multiplicative mask.
        """
        device = self.p.device if device is None else torch.device(device)
        p = self.p.to(device=device, dtype=torch.float32)
        B = batch_size

        def rand(*shape):
            return torch.rand(shape, device=device, generator=generator)

        def randn(*shape):
            return torch.randn(shape, device=device, generator=generator)

        def fire(mult, *shape):
            return rand(*shape) < mult * p

        params = {}
        if self.uses_geometry:
            G = _eye(3, B, device)
            if self.xflip > 0:
                i = torch.floor(rand(B) * 2)
                i = torch.where(fire(self.xflip, B), i, 0)
                G = G @ _affine2d(1 - 2 * i, 1, 0, 0, B, device)
            if self.rotate90 > 0:
                i = torch.floor(rand(B) * 4)
                i = torch.where(fire(self.rotate90, B), i, 0)
                G = G @ _rotate2d(math.pi / 2 * i)
            if self.xint > 0:
                t = (rand(B, 2) * 2 - 1) * self.xint_max
                t = torch.where(fire(self.xint, B, 1), t, 0)
                G = G @ _affine2d(1, 1, -torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height), B, device)
            if self.scale > 0:
                s = torch.exp2(randn(B) * self.scale_std)
                s = torch.where(fire(self.scale, B), s, 1)
                G = G @ _affine2d(1 / s, 1 / s, 0, 0, B, device)
            # Pre- and post-rotation each fire with p_rot, so that P(either) = rotate * p.
            p_rot = 1 - torch.sqrt((1 - self.rotate * p).clamp(0, 1))
            if self.rotate > 0:
                theta = (rand(B) * 2 - 1) * math.pi * self.rotate_max
                theta = torch.where(rand(B) < p_rot, theta, 0)
                G = G @ _rotate2d(theta)
            if self.aniso > 0:
                s = torch.exp2(randn(B) * self.aniso_std)
                s = torch.where(fire(self.aniso, B), s, 1)
                G = G @ _affine2d(1 / s, s, 0, 0, B, device)
            if self.rotate > 0:
                theta = (rand(B) * 2 - 1) * math.pi * self.rotate_max
                theta = torch.where(rand(B) < p_rot, theta, 0)
                G = G @ _rotate2d(theta)
            if self.xfrac > 0:
                t = randn(B, 2) * self.xfrac_std
                t = torch.where(fire(self.xfrac, B, 1), t, 0)
                G = G @ _affine2d(1, 1, -t[:, 0] * width, -t[:, 1] * height, B, device)
            params["geom"] = G

        if self.uses_color:
            I4 = _eye(4, B, device)
            C = I4
            v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)  # luma axis
            vv = torch.outer(v, v)
            if self.brightness > 0:
                b = randn(B) * self.brightness_std
                b = torch.where(fire(self.brightness, B), b, 0)
                T = I4.clone()
                T[:, :3, 3] = b[:, None]
                C = T @ C
            if self.contrast > 0:
                c = torch.exp2(randn(B) * self.contrast_std)
                c = torch.where(fire(self.contrast, B), c, 1)
                S = I4.clone()
                S[:, :3, :3] *= c[:, None, None]
                C = S @ C
            if self.lumaflip > 0:
                i = torch.floor(rand(B, 1, 1) * 2)
                i = torch.where(fire(self.lumaflip, B, 1, 1), i, 0)
                C = (I4 - 2 * vv * i) @ C  # Householder reflection
            if self.hue > 0 and num_channels > 1:
                theta = (rand(B) * 2 - 1) * math.pi * self.hue_max
                theta = torch.where(fire(self.hue, B), theta, 0)
                R = I4.clone()
                R[:, :3, :3] = axis_angle_to_rotation_matrix(v[:3] * theta[:, None])
                C = R @ C
            if self.saturation > 0 and num_channels > 1:
                s = torch.exp2(randn(B, 1, 1) * self.saturation_std)
                s = torch.where(fire(self.saturation, B, 1, 1), s, 1)
                C = (vv + (I4 - vv) * s) @ C
            params["color"] = C

        if self.imgfilter > 0:
            power = torch.tensor(FILTER_BAND_POWER, device=device)
            g = torch.ones([B, len(power)], device=device)
            for k, strength in enumerate(self.imgfilter_bands):
                t_k = torch.exp2(randn(B) * self.imgfilter_std)
                t_k = torch.where(fire(self.imgfilter * strength, B), t_k, 1)
                t = torch.ones([B, len(power)], device=device)
                t[:, k] = t_k
                g = g * t / (power * t.square()).sum(dim=1, keepdim=True).sqrt()  # keep expected power
            params["filter"] = g

        if self.noise > 0:
            sigma = randn(B, 1, 1, 1).abs() * self.noise_std
            sigma = torch.where(fire(self.noise, B, 1, 1, 1), sigma, 0)
            params["noise"] = randn(B, num_channels, height, width) * sigma

        if self.cutout > 0:
            size = torch.where(fire(self.cutout, B, 1, 1), self.cutout_size, 0.0)
            center = rand(B, 2, 1, 1)
            x = (torch.arange(width, device=device) + 0.5) / width
            y = (torch.arange(height, device=device) + 0.5) / height
            outside_x = (x[None, None, :] - center[:, 0]).abs() >= size / 2
            outside_y = (y[None, :, None] - center[:, 1]).abs() >= size / 2
            params["cutout"] = (outside_x | outside_y).to(torch.float32).unsqueeze(1)
        return params

    # ---------------------------------------------------------------------------------------------- applying
    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment ``images`` [N, C, H, W] with freshly drawn parameters (NVIDIA ``AugmentPipe.forward``)."""
        if not (isinstance(images, torch.Tensor) and images.ndim == 4):
            raise ValueError(f"AugmentPipe: expected images [N, C, H, W], got {getattr(images, 'shape', type(images))}")
        n, c, h, w = images.shape
        return self.apply(images, self.sample_params(n, c, h, w, device=images.device, generator=generator))

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply parameters from ``sample_params`` in the order of NVIDIA ``training/augment.py``
        (differentiable w.r.t. ``images``).
        """
        if "geom" in params:
            images = self._apply_geometry(images, params["geom"])
        if "color" in params:
            images = self._apply_color(images, params["color"])
        if "filter" in params:
            images = self._apply_filter(images, params["filter"])
        if "noise" in params:
            images = images + params["noise"].to(images.dtype)
        if "cutout" in params:
            images = images * params["cutout"].to(images.dtype)
        return images

    def _apply_geometry(self, images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
        """Reflect-pad, 2x sym6 upsample, bilinear grid_sample, 2x sym6 downsample, crop (NVIDIA
        ``training/augment.py``).
        """
        B, C, H, W = images.shape
        device = images.device
        G_inv = G_inv.to(device=device, dtype=torch.float32)
        pad = self.Hz_geom.shape[0] // 4

        # Margin needed so that every transformed output corner reads from the (reflect-)padded image.
        cx, cy = (W - 1) / 2, (H - 1) / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=device).T
        xy = (G_inv @ corners)[:, :2, :].permute(1, 0, 2).flatten(1)  # [2, B * 4]
        margin = torch.cat([-xy, xy]).amax(dim=1)  # [x0, y0, x1, y1]
        margin = margin + torch.tensor([pad * 2 - cx, pad * 2 - cy] * 2, device=device)
        margin = margin.clamp(min=0).minimum(torch.tensor([W - 1, H - 1] * 2, device=device, dtype=torch.float32))
        mx0, my0, mx1, my1 = (int(m) for m in margin.ceil().tolist())

        images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
        G_inv = _affine2d(1, 1, (mx0 - mx1) / 2, (my0 - my1) / 2, B, device) @ G_inv

        images = upsample2d(images, self.Hz_geom, up=2)
        G_inv = _affine2d(2, 2, 0, 0, B, device) @ G_inv @ _affine2d(0.5, 0.5, 0, 0, B, device)
        G_inv = _affine2d(1, 1, -0.5, -0.5, B, device) @ G_inv @ _affine2d(1, 1, 0.5, 0.5, B, device)

        # Normalised coordinates of affine_grid (align_corners=False): x_norm = x_centred * 2 / size.
        shape = [B, C, (H + pad * 2) * 2, (W + pad * 2) * 2]
        to_norm = _affine2d(2 / images.shape[3], 2 / images.shape[2], 0, 0, B, device)
        from_norm = _affine2d(shape[3] / 2, shape[2] / 2, 0, 0, B, device)
        theta = (to_norm @ G_inv @ from_norm)[:, :2, :].to(images.dtype)
        grid = F.affine_grid(theta, shape, align_corners=False)
        images = grid_sample(images, grid)

        return downsample2d(images, self.Hz_geom, down=2, padding=-pad * 2, flip_filter=True)

    @staticmethod
    def _apply_color(images: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """Per-pixel affine colour transform with the 4x4 matrix; grayscale uses the averaged rows (NVIDIA
        ``training/augment.py``).
        """
        B, C, H, W = images.shape
        M = M.to(images.dtype)
        flat = images.reshape(B, C, H * W)
        if C == 3:
            flat = M[:, :3, :3] @ flat + M[:, :3, 3:]
        elif C == 1:
            m = M[:, :3, :].mean(dim=1, keepdim=True)  # [B, 1, 4]
            flat = flat * m[:, :, :3].sum(dim=2, keepdim=True) + m[:, :, 3:]
        else:
            raise ValueError(f"AugmentPipe: colour ops need 1 or 3 image channels, got {C}")
        return flat.reshape(B, C, H, W)

    def _apply_filter(self, images: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        """Separable per-sample filter sum_k g_k * band_k with reflect padding (NVIDIA ``training/augment.py``)."""
        B, C, H, W = images.shape
        taps = self.Hz_fbank.shape[1]
        half = taps // 2
        if min(H, W) <= half:
            raise ValueError(f"AugmentPipe: imgfilter needs images larger than {half} pixels per side, got {H}x{W}")
        f = (gains.to(self.Hz_fbank.device) @ self.Hz_fbank).to(images.dtype)  # [B, taps], symmetric
        f = f.repeat_interleave(C, dim=0).reshape(B * C, 1, 1, taps)
        x = F.pad(images.reshape(1, B * C, H, W), [half, half, half, half], mode="reflect")
        x = F.conv2d(x, f, groups=B * C)
        x = F.conv2d(x, f.transpose(2, 3), groups=B * C)
        return x.reshape(B, C, H, W)
