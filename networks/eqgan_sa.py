"""EqGAN-SA generator pieces (Wang et al., CVPR 2022, arXiv 2112.00718): heatmaps, heatmap encoder, SEL.

Follows genforce/eqgan-sa ``training/networks.py``, built on the StyleGAN2 generator of
:mod:`networks.stylegan2` through its ``sel`` extension point (no copy of the StyleGAN2 code):

- :class:`HeatmapSampler` draws the three heatmap levels (centres, widths; ``generate_heatmap_multi``) as
  :class:`HeatmapParams`; :func:`render_heatmaps` turns them into maps
  ``{"b8": [N,1,R,R], "b16": [N,2,R,R], "b32": [N,4,R,R]}``.
- :class:`SpatialSynthesisNetwork` is a ``SynthesisNetwork`` that owns the heatmap encoder (``hm_conv*``) and
  puts a :class:`SpatialEncodingLayer` (class ``SEL``) in every ``SynthesisLayer`` and ``ToRGBLayer``.
- :class:`EqGANGenerator` is a ``Generator`` with ``use_sel`` on/off; off, it is the plain StyleGAN2
  generator (same parameters, same state-dict keys).

``G(z, c, spatial=...)`` / ``G.synthesis(ws, spatial=...)`` take ``spatial`` = None (heatmaps sampled per call,
also at inference), :class:`HeatmapParams` (e.g. with moved centres, for editing) or rendered maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from networks.stylegan2 import Conv2dLayer, Generator, SynthesisNetwork

LEVELS = ("b8", "b16", "b32")
LEVEL_CENTRES = {"b8": 1, "b16": 2, "b32": 4}


@dataclass
class HeatmapParams:
    """Centres ``{level: [N, k, 2]}`` (x, y in [-1, 1]) and widths ``{level: [N, k]}`` of the heatmaps."""

    centres: dict[str, torch.Tensor]
    sigmas: dict[str, torch.Tensor]

    @property
    def batch_size(self) -> int:
        return int(self.centres["b8"].shape[0])

    def to(self, device) -> HeatmapParams:
        return HeatmapParams(
            {k: v.to(device) for k, v in self.centres.items()}, {k: v.to(device) for k, v in self.sigmas.items()}
        )

    def narrow(self, start: int, length: int) -> HeatmapParams:
        """Samples ``start … start+length-1`` (for rendering a grid in chunks)."""
        return HeatmapParams(
            {k: v[start : start + length] for k, v in self.centres.items()},
            {k: v[start : start + length] for k, v in self.sigmas.items()},
        )

    def clone(self) -> HeatmapParams:
        return HeatmapParams(
            {k: v.clone() for k, v in self.centres.items()}, {k: v.clone() for k, v in self.sigmas.items()}
        )


class HeatmapSampler:
    """Multi-level heatmap parameters (genforce/eqgan-sa ``training/networks.py`` ``generate_heatmap_multi``).

    L1 ("b8"): 1 centre c ~ N(0, centre_std²) per sample, clamped to ±centre_clamp; one width
    σ₁ ~ U(sigma1_range) per call. L2 ("b16"): 2 centres c + U(±offset2)², σ₂ = (U(0,1) + 0.1) / sigma2_div per
    sample and centre. L3 ("b32"): 4 centres c + U(±offset3)², σ₃ = (U(0,1) + 0.1) / sigma3_div.
    """

    def __init__(
        self,
        centre_std: float = 0.33,
        centre_clamp: float = 0.75,
        sigma1_range: tuple[float, float] = (0.5, 1.0),
        offset2: float = 0.4,
        offset3: float = 0.8,
        sigma_offset: float = 0.1,
        sigma2_div: float = 1.4,
        sigma3_div: float = 2.0,
        floor: float = 0.01,
    ) -> None:
        if len(sigma1_range) != 2 or not 0 < sigma1_range[0] <= sigma1_range[1]:
            raise ValueError(f"heatmap.sigma1_range: expected [low, high] with 0 < low <= high, got {sigma1_range}")
        self.kwargs = dict(
            centre_std=float(centre_std),
            centre_clamp=float(centre_clamp),
            sigma1_range=[float(s) for s in sigma1_range],
            offset2=float(offset2),
            offset3=float(offset3),
            sigma_offset=float(sigma_offset),
            sigma2_div=float(sigma2_div),
            sigma3_div=float(sigma3_div),
            floor=float(floor),
        )
        for k, v in self.kwargs.items():
            setattr(self, k, v)

    def sample(self, n: int, device=None, generator: torch.Generator | None = None) -> HeatmapParams:
        """Draw ``n`` heatmap sets (on the CPU with ``generator`` when given, then moved to ``device``)."""
        dev = None if generator is not None else device

        def rand(*shape):
            return torch.rand(shape, generator=generator, device=dev)

        c = (torch.randn([n, 1, 2], generator=generator, device=dev) * self.centre_std).clamp(
            -self.centre_clamp, self.centre_clamp
        )
        lo, hi = self.sigma1_range
        sigma1 = (lo + (hi - lo) * rand(1)).expand(n, 1)
        centres = {
            "b8": c,
            "b16": c + (rand(n, 2, 2) * 2 - 1) * self.offset2,
            "b32": c + (rand(n, 4, 2) * 2 - 1) * self.offset3,
        }
        sigmas = {
            "b8": sigma1.contiguous(),
            "b16": (rand(n, 2) + self.sigma_offset) / self.sigma2_div,
            "b32": (rand(n, 4) + self.sigma_offset) / self.sigma3_div,
        }
        params = HeatmapParams(centres, sigmas)
        return params.to(device) if device is not None else params


def heatmap_grid(resolution: int, device=None) -> torch.Tensor:
    """Pixel coordinates [R, R, 2] (x, y) on linspace(-1, 1, R) (pixel centres of the corners at ±1)."""
    t = torch.linspace(-1, 1, resolution, device=device)
    y, x = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([x, y], dim=-1)


def render_heatmaps(params: HeatmapParams, resolution: int, floor: float = 0.01) -> dict[str, torch.Tensor]:
    """Maps exp(-‖p − c‖² / σ) + floor, one channel per centre: ``{level: [N, k, R, R]}``
    (``generate_heatmap_multi``)."""
    device = params.centres["b8"].device
    grid = heatmap_grid(resolution, device)  # [R, R, 2]
    maps = {}
    for level in LEVELS:
        c = params.centres[level]  # [N, k, 2]
        s = params.sigmas[level]  # [N, k]
        d2 = (grid[None, None] - c[:, :, None, None, :]).square().sum(-1)  # [N, k, R, R]
        maps[level] = torch.exp(-d2 / s[:, :, None, None]) + floor
    return maps


class SpatialEncodingLayer(nn.Module):
    """SEL (arXiv 2112.00718 Sec. 3.1): x + s·conv3×3(lrelu(IN(x)·(1 + γ(f)) + β(f))), f = lrelu_conv3×3(h),
    h = encoded heatmap resized to x (genforce/eqgan-sa ``training/networks.py`` class ``SEL``, lines 129-174).

    ``shared`` is one ``Conv2dLayer`` with built-in lrelu, i.e. the activation gain √2 of ``bias_act`` (the
    original's ``Conv2dLayer(map_dim, nhidden, kernel_size=3, activation='lrelu')``, line 137-138). The layer runs
    in fp32 whatever the block's dtype and returns the block's dtype: the original's encoded heatmap is fp32, so
    its convolutions and the modulation promote to fp32 and ``SynthesisLayer`` casts the result back with
    ``.to(x.dtype)`` (lines 231, 275); the instance norm here reads x in fp32 where the original reads the fp16
    tensor (a rounding difference only). ``resolution`` is the block resolution that picks the encoded map
    (4/8/16 → E1/E2/E3, ≥ 32 → E).
    """

    def __init__(
        self, channels: int, map_dim: int, resolution: int, hidden: int = 64, residual_scale: float = 0.1
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.residual_scale = residual_scale
        self.shared = nn.Sequential(Conv2dLayer(map_dim, hidden, kernel_size=3, activation="lrelu"))
        self.sigma = Conv2dLayer(hidden, 1, kernel_size=3)
        self.mu = Conv2dLayer(hidden, 1, kernel_size=3)
        self.output = nn.Sequential(nn.LeakyReLU(0.2), Conv2dLayer(channels, channels, kernel_size=3))

    def forward(self, x: torch.Tensor, spatial: dict | None) -> torch.Tensor:
        if not isinstance(spatial, dict) or self.resolution not in spatial:
            raise ValueError(
                "SpatialEncodingLayer: expected encoded heatmaps {block resolution: map} from "
                f"SpatialSynthesisNetwork, got {type(spatial).__name__}"
            )
        x32 = x.to(torch.float32)
        h = spatial[self.resolution].to(torch.float32)
        h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=True)
        f = self.shared(h)
        gamma, beta = self.sigma(f), self.mu(f)
        y = F.instance_norm(x32) * (1 + gamma) + beta
        return (x32 + self.residual_scale * self.output(y)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, residual_scale={self.residual_scale}"


class SpatialSynthesisNetwork(SynthesisNetwork):
    """StyleGAN2 synthesis + heatmap encoder (``hm_conv*``) + a SEL in every SynthesisLayer and ToRGB.

    Args (besides ``SynthesisNetwork``'s): ``heatmap`` (kwargs of :class:`HeatmapSampler`),
    ``encoder_resolution`` (``"image"`` = faithful; an int renders and encodes heatmaps at that resolution,
    cheaper for ≥ 512²), ``sel_residual_scale`` (0.1 [C]), ``sel_hidden`` (64 [C]).
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        heatmap: dict | None = None,
        encoder_resolution: int | str = "image",
        sel_residual_scale: float = 0.1,
        sel_hidden: int = 64,
        **synthesis_kwargs,
    ) -> None:
        super().__init__(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs)
        if encoder_resolution == "image":
            self.encoder_resolution = img_resolution
        elif isinstance(encoder_resolution, int) and 4 <= encoder_resolution <= img_resolution:
            self.encoder_resolution = encoder_resolution
        else:
            raise ValueError(
                f"eqgan.encoder_resolution: expected 'image' or an int in [4, {img_resolution}], "
                f"got {encoder_resolution!r}"
            )
        self.sampler = HeatmapSampler(**dict(heatmap or {}))
        self.init_kwargs.update(
            heatmap=dict(self.sampler.kwargs),
            encoder_resolution=encoder_resolution,
            sel_residual_scale=sel_residual_scale,
            sel_hidden=sel_hidden,
        )
        for level in LEVELS:
            k = LEVEL_CENTRES[level]
            setattr(self, f"hm_conv0_{level}", Conv2dLayer(k, 16, kernel_size=3, activation="lrelu"))
            setattr(self, f"hm_conv1_{level}", Conv2dLayer(16, 32, kernel_size=3, activation="lrelu"))
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            map_dim = 32 if res <= 16 else 96
            for name in ("conv0", "conv1", "torgb"):
                layer = getattr(block, name, None)
                if layer is not None:
                    layer.sel = SpatialEncodingLayer(
                        layer.in_channels, map_dim, res, hidden=sel_hidden, residual_scale=sel_residual_scale
                    )

    def sample_heatmaps(self, n: int, device=None, generator: torch.Generator | None = None) -> HeatmapParams:
        return self.sampler.sample(n, device=device, generator=generator)

    def encode(self, spatial, n: int, device) -> dict[int, torch.Tensor]:
        """Heatmaps (None → sampled, HeatmapParams or rendered maps) → ``{block res: encoded map}``."""
        if spatial is None:
            spatial = self.sample_heatmaps(n, device)
        if isinstance(spatial, HeatmapParams):
            spatial = render_heatmaps(spatial, self.encoder_resolution, self.sampler.floor)
        if not isinstance(spatial, dict) or any(level not in spatial for level in LEVELS):
            raise ValueError(
                f"G.synthesis spatial: expected None, HeatmapParams or maps with keys {LEVELS}, "
                f"got {type(spatial).__name__}"
            )
        enc = []
        for level in LEVELS:
            h = spatial[level].to(device=device, dtype=torch.float32)
            if h.shape[-1] != self.encoder_resolution:
                h = F.interpolate(h, size=self.encoder_resolution, mode="bilinear", align_corners=True)
            h = getattr(self, f"hm_conv0_{level}")(h)
            enc.append(getattr(self, f"hm_conv1_{level}")(h, gain=math.sqrt(0.5)))
        full = torch.cat(enc, dim=1)
        return {res: (enc[int(np.log2(res)) - 2] if res <= 16 else full) for res in self.block_resolutions}

    def forward(self, ws: torch.Tensor, update_emas: bool = False, spatial=None, **block_kwargs) -> torch.Tensor:
        encoded = self.encode(spatial, ws.shape[0], ws.device)
        return super().forward(ws, update_emas=update_emas, spatial=encoded, **block_kwargs)


class EqGANGenerator(Generator):
    """StyleGAN2 generator with EqGAN-SA's spatial awareness as an option (arXiv 2112.00718 Sec. 3).

    ``use_sel=False`` gives exactly ``networks.stylegan2.Generator`` (no encoder, no SEL: nothing unused
    under DDP). ``use_sel=True`` swaps in :class:`SpatialSynthesisNetwork` with ``sel_kwargs``
    (``heatmap``, ``encoder_resolution``, ``sel_residual_scale``, ``sel_hidden``).
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
        use_sel: bool = True,
        sel_kwargs: dict | None = None,
    ) -> None:
        super().__init__(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs, synthesis_kwargs)
        sel_kwargs = _plain(sel_kwargs or {})
        self.init_kwargs.update(use_sel=bool(use_sel), sel_kwargs=sel_kwargs)
        self.use_sel = bool(use_sel)
        if self.use_sel:
            self.synthesis = SpatialSynthesisNetwork(
                w_dim=w_dim,
                img_resolution=img_resolution,
                img_channels=img_channels,
                **dict(synthesis_kwargs or {}),
                **sel_kwargs,
            )

    def sample_heatmaps(self, n: int, device=None, generator: torch.Generator | None = None) -> HeatmapParams:
        if not self.use_sel:
            raise ValueError("EqGANGenerator.sample_heatmaps: the generator was built with use_sel=False")
        return self.synthesis.sample_heatmaps(n, device=device, generator=generator)


def _plain(value):
    """Dict/list config values (e.g. OmegaConf containers) → plain Python data for ``init_kwargs``."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or (hasattr(value, "__iter__") and not isinstance(value, str)):
        return [_plain(v) for v in value]
    return value
