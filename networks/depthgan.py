"""DepthGAN networks (Shi et al., "3D-Aware Indoor Scene Synthesis with Depth Priors", arXiv 2202.08553, Sec. 3).

Built from the StyleGAN2 parts of :mod:`networks.stylegan2` (mapping, synthesis blocks, D blocks, layers), after
VivianSZF/depthgan models/depthgan_generator.py and models/depthgan_discriminator.py:

- :class:`DepthGenerator`: StyleGAN2 "skip" generator with a 1-channel output, conditioned on a camera yaw a:
  c = lrelu-FC(lrelu-FC([sin ka, cos ka]_{k=1..4})) (8 -> w_dim -> w_dim) multiplies the ws of the first three
  synthesis (conv) layers; its ToRGB layers get the plain ws.
- :class:`RGBGenerator`: StyleGAN2 "skip" generator whose features are fused with the depth path's after every
  synthesis layer l: x <- Conv1x1_linear(Conv1x1_lrelu(concat[x, F_l])) (2C -> C -> C). The depth features are
  not detached. ``fuse_init='faithful'`` divides the fusion weights by 10 at init (``init_cov=10``, flagged
  "????" by the authors); ``'standard'`` keeps the unit init.
- :class:`DepthGANGenerator`: both paths; ``G(z, c)`` returns the RGB image like a StyleGAN2 generator
  (z = [z_depth, z_rgb], yaw drawn from ``yaw_range`` when not given), ``return_depth=True`` adds the depth.
- :class:`DepthGANDiscriminator`: StyleGAN2 "resnet" D whose top block sums a 1x1 fromRGB and a 1x1 fromDepth
  stem; called with RGB only, the depth stem is fed zeros and multiplied by 0 (kept in the graph, so DDP sees
  every parameter). A depth-bin head predicts ``num_bins`` logits per pixel from the block inputs at 64, 32
  and 16 px (:class:`DepthBinHead`); its targets are :func:`depth_bins`.

Both generators use no noise inputs (the original runs ``noise_mode='none'`` in training and evaluation): the
default ``synthesis_kwargs`` has ``use_noise=False``, so no parameter is left without a gradient.
Plain PyTorch (no Lightning, no Hydra).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from networks.stylegan2 import Conv2dLayer, Discriminator, FullyConnectedLayer, MappingNetwork, SynthesisNetwork

YAW_RANGE = (-math.pi / 12, math.pi / 12)
FUSE_INITS = {"faithful": 10.0, "standard": 1.0}


def yaw_features(yaw: torch.Tensor) -> torch.Tensor:
    """[sin a, cos a, sin 2a, cos 2a, sin 3a, cos 3a, sin 4a, cos 4a] of yaw [N] or [N, 1] -> [N, 8]."""
    a = yaw.reshape(-1, 1).to(torch.float32)
    return torch.cat([f(k * a) for k in range(1, 5) for f in (torch.sin, torch.cos)], dim=1)


def depth_bins(depth: torch.Tensor, num_bins: int = 10) -> torch.Tensor:
    """Class of each normalised depth value: clamp(floor((d + 1) / 2 * num_bins), 0, num_bins - 1), int64."""
    return torch.floor((depth + 1) / 2 * num_bins).clamp(0, num_bins - 1).long()


class YawEmbedding(nn.Module):
    """Yaw -> c [N, w_dim]: two lrelu FC layers on :func:`yaw_features` (``params_fc1/2`` of the original)."""

    def __init__(self, w_dim: int, lr_multiplier: float = 0.01):
        super().__init__()
        self.fc0 = FullyConnectedLayer(8, w_dim, activation="lrelu", lr_multiplier=lr_multiplier)
        self.fc1 = FullyConnectedLayer(w_dim, w_dim, activation="lrelu", lr_multiplier=lr_multiplier)

    def forward(self, yaw: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.fc0(yaw_features(yaw)))


class _PathContext:
    """Per-call state handed to the ``sel`` hooks as ``spatial``: depth features, last fused RGB feature."""

    def __init__(self, features: list[torch.Tensor] | None = None):
        self.features: list[torch.Tensor] = [] if features is None else features
        self.fused: torch.Tensor | None = None


class _FeatureTap(nn.Module):
    """``sel`` hook that records the input (= the previous synthesis layer's output) of the layer it sits on."""

    def forward(self, x: torch.Tensor, ctx: _PathContext) -> torch.Tensor:
        ctx.features.append(x)
        return x


class FeatureFusion(nn.Module):
    """x <- beta(gamma(concat[x, F_l])) with the depth feature F_l of synthesis layer ``layer`` (original
    ``d_layer_gamma{l}`` / ``d_layer_beta{l}``); installed as the ``sel`` hook of the layer that consumes x."""

    def __init__(self, channels: int, layer: int, init_scale: float = 10.0, conv_clamp: float | None = None):
        super().__init__()
        self.layer = layer
        self.gamma = Conv2dLayer(2 * channels, channels, kernel_size=1, activation="lrelu", conv_clamp=conv_clamp)
        self.beta = Conv2dLayer(channels, channels, kernel_size=1, activation="linear", conv_clamp=conv_clamp)
        with torch.no_grad():
            self.gamma.weight.div_(init_scale)
            self.beta.weight.div_(init_scale)

    def forward(self, x: torch.Tensor, ctx: _PathContext) -> torch.Tensor:
        feat = ctx.features[self.layer].to(dtype=x.dtype, memory_format=torch.contiguous_format)
        x = self.beta(self.gamma(torch.cat([x.contiguous(), feat], dim=1)))
        ctx.fused = x
        return x

    def extra_repr(self) -> str:
        return f"layer={self.layer}"


def _consumers(synthesis: SynthesisNetwork) -> list[nn.Module]:
    """For each synthesis (conv) layer in execution order, the layer that takes its output: conv1 or torgb."""
    out = []
    for res in synthesis.block_resolutions:
        block = getattr(synthesis, f"b{res}")
        if block.in_channels != 0:
            out.append(block.conv1)  # consumer of conv0
        out.append(block.torgb)  # consumer of conv1 (the next block's conv0 gets the same x, see RGBGenerator)
    return out


def _synthesis(w_dim: int, img_resolution: int, img_channels: int, synthesis_kwargs: dict) -> SynthesisNetwork:
    kwargs = {"use_noise": False, **synthesis_kwargs}
    if kwargs.get("architecture", "skip") != "skip":
        raise ValueError(f"DepthGAN generators are 'skip' generators; got architecture={kwargs['architecture']!r}")
    return SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **kwargs)


def _block_ws(synthesis: SynthesisNetwork, ws: torch.Tensor):
    """(block, its ws [N, num_conv + num_torgb, w_dim], index of its first conv layer) per block, as
    ``SynthesisNetwork.forward`` slices them."""
    w_idx = conv_idx = 0
    for res in synthesis.block_resolutions:
        block = getattr(synthesis, f"b{res}")
        yield block, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), conv_idx
        w_idx += block.num_conv
        conv_idx += block.num_conv


def _check_ws(name: str, ws: torch.Tensor, synthesis: SynthesisNetwork) -> None:
    if ws.ndim != 3 or ws.shape[1] != synthesis.num_ws or ws.shape[2] != synthesis.w_dim:
        raise ValueError(f"{name}: expected ws [N, {synthesis.num_ws}, {synthesis.w_dim}], got {list(ws.shape)}")


class DepthGenerator(nn.Module):
    """Yaw-conditioned depth path: ``forward(z, yaw, c)`` -> (depth [N, 1, R, R], per-layer features)."""

    def __init__(
        self,
        z_dim: int = 512,
        c_dim: int = 0,
        w_dim: int = 512,
        img_resolution: int = 256,
        img_channels: int = 1,
        num_yaw_layers: int = 3,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
    ):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = dict(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            num_yaw_layers=num_yaw_layers,
            mapping_kwargs=copy.deepcopy(mapping_kwargs),
            synthesis_kwargs=copy.deepcopy(synthesis_kwargs),
        )
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.num_yaw_layers = num_yaw_layers
        self.synthesis = _synthesis(w_dim, img_resolution, img_channels, synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)
        self.yaw_embed = YawEmbedding(w_dim, lr_multiplier=mapping_kwargs.get("lr_multiplier", 0.01))
        for consumer in _consumers(self.synthesis):
            consumer.sel = _FeatureTap()

    def synthesize(self, ws: torch.Tensor, yaw: torch.Tensor, **block_kwargs) -> tuple[torch.Tensor, list]:
        """ws [N, num_ws, w_dim] + yaw [N] -> (depth [N, 1, R, R] fp32, features of every synthesis layer)."""
        _check_ws("DepthGenerator ws", ws, self.synthesis)
        cam = self.yaw_embed(yaw.to(ws.device))
        ctx = _PathContext()
        x = img = None
        for block, bws, first in _block_ws(self.synthesis, ws.to(torch.float32)):
            rows = [
                bws[:, j] * cam if j < block.num_conv and first + j < self.num_yaw_layers else bws[:, j]
                for j in range(bws.shape[1])
            ]
            x, img = block(x, img, torch.stack(rows, dim=1), spatial=ctx, **block_kwargs)
        return img, ctx.features

    def forward(
        self,
        z: torch.Tensor,
        yaw: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        **block_kwargs,
    ) -> tuple[torch.Tensor, list]:
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesize(ws, yaw, **block_kwargs)


class RGBGenerator(nn.Module):
    """Appearance path: ``forward(z, depth_features, c)`` -> RGB [N, 3, R, R], fused with the depth path."""

    def __init__(
        self,
        z_dim: int = 512,
        c_dim: int = 0,
        w_dim: int = 512,
        img_resolution: int = 256,
        img_channels: int = 3,
        fuse_init: str = "faithful",
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
    ):
        if fuse_init not in FUSE_INITS:
            raise ValueError(f"fuse_init must be one of {sorted(FUSE_INITS)}, got {fuse_init!r}")
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = dict(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            fuse_init=fuse_init,
            mapping_kwargs=copy.deepcopy(mapping_kwargs),
            synthesis_kwargs=copy.deepcopy(synthesis_kwargs),
        )
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = _synthesis(w_dim, img_resolution, img_channels, synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)
        clamp = synthesis_kwargs.get("conv_clamp")
        for layer, consumer in enumerate(_consumers(self.synthesis)):
            consumer.sel = FeatureFusion(consumer.in_channels, layer, FUSE_INITS[fuse_init], clamp)

    def synthesize(self, ws: torch.Tensor, depth_features: list, **block_kwargs) -> torch.Tensor:
        """ws [N, num_ws, w_dim] + the depth path's per-layer features -> RGB [N, 3, R, R] fp32.

        The fused output of a block's last layer (computed once, by its ToRGB's hook) is the next block's input.
        """
        _check_ws("RGBGenerator ws", ws, self.synthesis)
        if len(depth_features) != len(_consumers(self.synthesis)):
            raise ValueError(
                f"RGBGenerator: expected {len(_consumers(self.synthesis))} depth features (one per synthesis "
                f"layer), got {len(depth_features)}; the depth path must have the same resolution"
            )
        ctx = _PathContext(list(depth_features))
        x = img = None
        for block, bws, _first in _block_ws(self.synthesis, ws.to(torch.float32)):
            _, img = block(x, img, bws, spatial=ctx, **block_kwargs)
            x = ctx.fused
        return img

    def forward(
        self,
        z: torch.Tensor,
        depth_features: list,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        **block_kwargs,
    ) -> torch.Tensor:
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesize(ws, depth_features, **block_kwargs)


class DepthGANGenerator(nn.Module):
    """Dual-path generator: ``depth`` (:class:`DepthGenerator`) + ``rgb`` (:class:`RGBGenerator`).

    ``z`` is [N, z_dim_depth + z_dim_rgb] (depth code first), so metric and sampling code written for a
    StyleGAN2 ``G(z, c)`` works unchanged; ``G(z, c)`` returns RGB [N, 3, R, R] in [-1, 1], with
    ``return_depth=True`` ``(rgb, depth [N, 1, R, R])``. ``yaw=None`` draws yaws ~ U(``yaw_range``) from the
    global torch RNG (the original's training and metric distribution, U(-pi/12, pi/12)).
    """

    def __init__(
        self,
        z_dim_depth: int = 512,
        z_dim_rgb: int = 512,
        c_dim: int = 0,
        w_dim: int = 512,
        img_resolution: int = 256,
        yaw_range: tuple[float, float] | list[float] = YAW_RANGE,
        num_yaw_layers: int = 3,
        fuse_init: str = "faithful",
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
    ):
        super().__init__()
        if len(yaw_range) != 2 or not yaw_range[0] <= yaw_range[1]:
            raise ValueError(f"yaw_range must be [low, high] with low <= high, got {yaw_range}")
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = dict(
            z_dim_depth=z_dim_depth,
            z_dim_rgb=z_dim_rgb,
            c_dim=c_dim,
            w_dim=w_dim,
            img_resolution=img_resolution,
            yaw_range=[float(v) for v in yaw_range],
            num_yaw_layers=num_yaw_layers,
            fuse_init=fuse_init,
            mapping_kwargs=copy.deepcopy(mapping_kwargs),
            synthesis_kwargs=copy.deepcopy(synthesis_kwargs),
        )
        self.z_dim_depth, self.z_dim_rgb = z_dim_depth, z_dim_rgb
        self.z_dim, self.c_dim, self.w_dim = z_dim_depth + z_dim_rgb, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, 3
        self.yaw_range = tuple(float(v) for v in yaw_range)
        common = dict(c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, mapping_kwargs=mapping_kwargs)
        self.depth = DepthGenerator(
            z_dim_depth, num_yaw_layers=num_yaw_layers, synthesis_kwargs=synthesis_kwargs, **common
        )
        self.rgb = RGBGenerator(z_dim_rgb, fuse_init=fuse_init, synthesis_kwargs=synthesis_kwargs, **common)

    def sample_yaw(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n yaws ~ U(yaw_range) (radians), drawn on the CPU with ``generator`` when given."""
        lo, hi = self.yaw_range
        u = torch.rand([n], generator=generator, device=None if generator is not None else device)
        return (lo + (hi - lo) * u).to(device)

    def split_z(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"DepthGANGenerator z: expected [N, {self.z_dim}] = [z_depth, z_rgb], got {list(z.shape)}")
        return z[:, : self.z_dim_depth], z[:, self.z_dim_depth :]

    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ws_depth, ws_rgb), each [N, num_ws, w_dim]."""
        z_depth, z_rgb = self.split_z(z)
        kw = dict(truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.depth.mapping(z_depth, c, **kw), self.rgb.mapping(z_rgb, c, **kw)

    def synthesize(
        self, ws_depth: torch.Tensor, ws_rgb: torch.Tensor, yaw: torch.Tensor, **block_kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rgb [N, 3, R, R], depth [N, 1, R, R]) from both ws and the yaw [N]."""
        depth, features = self.depth.synthesize(ws_depth, yaw, **block_kwargs)
        return self.rgb.synthesize(ws_rgb, features, **block_kwargs), depth

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        yaw: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: str = "none",
        update_emas: bool = False,
        return_depth: bool = False,
        **block_kwargs,
    ):
        ws_depth, ws_rgb = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        if yaw is None:
            yaw = self.sample_yaw(z.shape[0], z.device)
        rgb, depth = self.synthesize(ws_depth, ws_rgb, yaw, noise_mode=noise_mode, **block_kwargs)
        return (rgb, depth) if return_depth else rgb


class _ResBlock(nn.Module):
    """conv3x3 lrelu -> conv3x3 linear, plus the input (``ResBlock`` of the original D)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = Conv2dLayer(channels, channels, kernel_size=3, activation="lrelu")
        self.conv2 = Conv2dLayer(channels, channels, kernel_size=3, activation="linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + x


class DepthBinHead(nn.Module):
    """Per-pixel depth-bin logits from D features at t, t/2, t/4 px (``DepthLossLayer`` of the original).

    conv3x3(C16 -> C16/2) + ResBlock -> x2 bilinear -> concat C32 -> conv3x3(-> C32/2) + ResBlock -> x2 ->
    concat C64 -> conv3x3(-> C64/2) + ResBlock -> 1x1 conv to ``num_bins`` (lrelu on the logits when
    ``logit_lrelu``, as the original) -> bilinear x ``scale`` to the image resolution.
    """

    def __init__(self, c64: int, c32: int, c16: int, num_bins: int = 10, scale: int = 4, logit_lrelu: bool = True):
        super().__init__()
        self.scale = scale
        self.conv1 = Conv2dLayer(c16, c16 // 2, kernel_size=3, activation="lrelu")
        self.block1 = _ResBlock(c16 // 2)
        self.conv2 = Conv2dLayer(c16 // 2 + c32, c32 // 2, kernel_size=3, activation="lrelu")
        self.block2 = _ResBlock(c32 // 2)
        self.conv3 = Conv2dLayer(c32 // 2 + c64, c64 // 2, kernel_size=3, activation="lrelu")
        self.block3 = _ResBlock(c64 // 2)
        self.convf = Conv2dLayer(c64 // 2, num_bins, kernel_size=1, activation="lrelu" if logit_lrelu else "linear")

    def forward(self, x64: torch.Tensor, x32: torch.Tensor, x16: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.conv1(x16.float()))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.block2(self.conv2(torch.cat([x, x32.float()], dim=1)))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.block3(self.conv3(torch.cat([x, x64.float()], dim=1)))
        x = self.convf(x)
        if self.scale != 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return x


class DepthGANDiscriminator(Discriminator):
    """Switchable D: ``D(rgbd [N, 4, R, R], c)`` or ``D(rgb [N, 3, R, R], c)`` -> (logits [N, 1], depth-bin
    logits [N, num_bins, R, R]).

    A StyleGAN2 "resnet" :class:`~networks.stylegan2.Discriminator` (same keys) for the RGB part plus
    ``fromdepth`` (1x1, lrelu) summed into the top block's stem, and ``depth_head``. The head reads the block
    inputs at t, t/2, t/4 px with t = min(64, R / 2): for R >= 128 the original's 64/32/16 px features; for
    smaller demo resolutions the three highest-resolution block inputs after the stem [D] (R >= 32).
    """

    def __init__(
        self,
        c_dim: int = 0,
        img_resolution: int = 256,
        architecture: str = "resnet",
        channel_base: int = 16384,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        num_bins: int = 10,
        head_logit_lrelu: bool = True,
        block_kwargs: dict | None = None,
        mapping_kwargs: dict | None = None,
        epilogue_kwargs: dict | None = None,
    ):
        if architecture != "resnet":
            raise ValueError(f"DepthGANDiscriminator is a 'resnet' D; got architecture={architecture!r}")
        if img_resolution < 32:
            raise ValueError(f"DepthGANDiscriminator needs img_resolution >= 32, got {img_resolution}")
        super().__init__(
            c_dim=c_dim,
            img_resolution=img_resolution,
            img_channels=3,
            architecture=architecture,
            channel_base=channel_base,
            channel_max=channel_max,
            num_fp16_res=num_fp16_res,
            conv_clamp=conv_clamp,
            cmap_dim=cmap_dim,
            block_kwargs=block_kwargs,
            mapping_kwargs=mapping_kwargs,
            epilogue_kwargs=epilogue_kwargs,
        )
        self.init_kwargs = dict(
            c_dim=c_dim,
            img_resolution=img_resolution,
            architecture=architecture,
            channel_base=channel_base,
            channel_max=channel_max,
            num_fp16_res=num_fp16_res,
            conv_clamp=conv_clamp,
            cmap_dim=cmap_dim,
            num_bins=num_bins,
            head_logit_lrelu=head_logit_lrelu,
            block_kwargs=copy.deepcopy(dict(block_kwargs or {})),
            mapping_kwargs=copy.deepcopy(dict(mapping_kwargs or {})),
            epilogue_kwargs=copy.deepcopy(dict(epilogue_kwargs or {})),
        )
        self.num_bins = num_bins

        def ch(res: int) -> int:
            return min(channel_base // res, channel_max)

        top = getattr(self, f"b{img_resolution}")
        activation = dict(block_kwargs or {}).get("activation", "lrelu")
        self.fromdepth = Conv2dLayer(
            1,
            ch(img_resolution),
            kernel_size=1,
            activation=activation,
            conv_clamp=conv_clamp,
            channels_last=top.channels_last,
        )
        self.tap = min(64, img_resolution // 2)
        t = self.tap
        self.depth_head = DepthBinHead(
            ch(t), ch(t // 2), ch(t // 4), num_bins, scale=img_resolution // t, logit_lrelu=head_logit_lrelu
        )

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None, update_emas: bool = False, **block_kwargs):
        """(logits [N, 1], depth-bin logits [N, num_bins, R, R]); 4 channels = RGB-D, 3 = RGB only."""
        r = self.img_resolution
        if img.ndim != 4 or img.shape[1] not in (3, 4) or tuple(img.shape[2:]) != (r, r):
            raise ValueError(
                f"DepthGANDiscriminator img: expected [N, 4 (RGB-D) or 3 (RGB), {r}, {r}], got {list(img.shape)}"
            )
        rgb = img[:, :3]
        if img.shape[1] == 4:
            x = self.fromdepth(img[:, 3:])
        else:  # switch: zero depth times 0 keeps the stem in the graph (DDP) with zero gradients
            x = self.fromdepth(torch.zeros_like(img[:, :1])) * 0
        block_inputs = {}
        for res in self.block_resolutions:
            x, _ = getattr(self, f"b{res}")(x, rgb if res == r else None, **block_kwargs)
            block_inputs[res // 2] = x
        t = self.tap
        depth_logits = self.depth_head(block_inputs[t], block_inputs[t // 2], block_inputs[t // 4])
        cmap = None
        if self.c_dim > 0:
            cmap = self.mapping(None, c)
        return self.b4(x, None, cmap), depth_logits

    def extra_repr(self) -> str:
        taps = f"{self.tap}/{self.tap // 2}/{self.tap // 4}"
        return f"{super().extra_repr()}, num_bins={self.num_bins}, depth-head taps {taps} px"
