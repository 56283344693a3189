"""VolumeGAN generator and discriminator (Xu et al., "3D-aware Image Synthesis via Learning Structural and
Textural Representations", arXiv 2112.10759, CVPR 2022).

Follows genforce/volumegan ``models/volumegan_generator.py`` (``VolumeGANGenerator``, ``FeatureVolume``,
``NeRFSynthesisNetwork``, ``SynthesisNetwork``) and ``models/volumegan_discriminator.py``, released config
``configs/volumegan_ffhq_config.py``. Layers, mapping and blocks are the StyleGAN2 ones of
:mod:`networks.stylegan2`; cameras, sampling and compositing live in :mod:`networks.volume_rendering`.

Generator (Sec. 3 of the paper): ``mapping`` gives ``num_ws = mlp_layers + renderer ws`` = 12 w's. The structural part
reads w_0..w_3: a feature volume (learned constant, 3-D convolutions with instance norm and AdaIN from w_0) is
sampled trilinearly at points along camera rays and fed, with a positional encoding of the point, to a
modulated MLP (w_i for layer i) giving a density and a 512-d feature; volume rendering gives a 32x32 feature
map. The textural part, a StyleGAN2 "skip" renderer of 1x1 modulated convolutions, reads w_4..w_11: w_4 has no
layer (the 32x32 image is the first three feature channels, ``rgb_init_res_out=False``), block r in
(64, 128, 256) uses w_(4+2i+1), w_(4+2i+2) for its convolutions and w_(4+2i+3) for ToRGB.

Progressive growing (``lod``, level of detail; ``runners/controllers/progress_scheduler.py``): level k renders
at ``img_resolution / 2^k``; ``max_lod = log2(img_resolution / nerf_resolution)`` is the 32x32 start. For
``lod`` in [0, max_lod], with ``a = ceil(lod) - lod`` the weight of the newest level:

- G: only levels k >= floor(lod) are computed; the output is ``img_k`` at integer ``lod = k``, and
  ``a * img_k + (1 - a) * up(img_(k+1))`` for ``k < lod < k + 1`` (k = floor(lod)), where ``img_k`` is the skip
  image of level k and ``up`` nearest x2; the result is upsampled (nearest) to ``img_resolution``.
- D: the image of level k is the input average-pooled 2^k times; D enters at level e = floor(lod) through a
  fromRGB layer of that resolution and runs its blocks from there; for fractional ``lod`` the features entering
  block e+1 are ``a * block_e(fromrgb_e(img_e)) + (1 - a) * fromrgb_(e+1)(img_(e+1))``. Reals are given at full
  resolution, as in the original runner.

Both keep the current ``lod`` in a buffer (saved with the weights) used when ``lod=None``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from networks import volume_rendering as vr
from networks.stylegan2 import (
    Conv2dLayer,
    DiscriminatorBlock,
    DiscriminatorEpilogue,
    FullyConnectedLayer,
    MappingNetwork,
    SynthesisBlock,
    _act_gain,
    _block_dtype,
    _check_shape,
    modulated_conv2d,
)
from ops import bias_act
from ops.volume_sample import volume_sample

# configs/volumegan_ffhq_config.py and models/volumegan_generator.py defaults (FFHQ-256).
BBOX = ((-0.1886, -0.1671, -0.1956), (0.1887, 0.1692, 0.1872))
CAMERA = dict(
    yaw_mean=math.pi / 2,
    yaw_std=0.3,
    pitch_mean=math.pi / 2,
    pitch_std=0.155,
    fov_deg=12.0,
    radius=1.0,
    dist="gaussian",
)


def _instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Instance norm over D, H, W without affine (``InstanceNormLayer``)."""
    x = x - x.mean(dim=[2, 3, 4], keepdim=True)
    return x * (x.square().mean(dim=[2, 3, 4], keepdim=True) + eps).rsqrt()


def _plain(value):
    """Config values (OmegaConf containers, tuples, numpy scalars) as plain Python data for ``init_kwargs``."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or (hasattr(value, "__iter__") and not isinstance(value, str)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class FeatureVolume(nn.Module):
    """Learned constant -> [nearest x2 up] -> Conv3d 3^3 -> instance norm -> AdaIN(w) -> lrelu 0.2, per stage.

    ``FeatureVolume`` of the original: plain ``nn.Conv3d`` / ``nn.Linear`` (PyTorch default init), constant
    initialised to ones, AdaIN applied as ``x * scale + shift`` from one linear layer on w (kaiming-normal
    leaky init scaled by 0.25). ``channels[0]`` is the constant's, ``channels[i + 1]`` stage i's output.
    """

    def __init__(self, w_dim: int, channels: list | tuple = (256, 256, 128, 64, 32), init_res: int = 4):
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2:
            raise ValueError(f"FeatureVolume channels: expected [const, stage0, ...], got {channels}")
        self.channels = channels
        self.num_stages = len(channels) - 1
        self.resolution = init_res * 2 ** (self.num_stages - 1)
        self.const = nn.Parameter(torch.ones([1, channels[0], init_res, init_res, init_res]))
        for i in range(self.num_stages):
            self.add_module(f"layer{i}", nn.Conv3d(channels[i], channels[i + 1], kernel_size=3, padding=1))
        self.affine = nn.Linear(w_dim, 2 * sum(channels[1:]))
        nn.init.kaiming_normal_(self.affine.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
        with torch.no_grad():
            self.affine.weight.mul_(0.25)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """w [N, w_dim] -> volume [N, channels[-1], R, R, R]."""
        scale, shift = self.affine(w).chunk(2, dim=1)
        x = self.const.expand(w.shape[0], -1, -1, -1, -1)
        start = 0
        for i in range(self.num_stages):
            if i:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = _instance_norm(getattr(self, f"layer{i}")(x))
            c = self.channels[i + 1]
            x = x * scale[:, start : start + c, None, None, None] + shift[:, start : start + c, None, None, None]
            x = F.leaky_relu(x, 0.2)
            start += c
        return x


class PointLayer(nn.Module):
    """Modulated, demodulated 1x1 layer on points [N, C, P, 1] + bias + lrelu (the original's NeRF MLP layers are
    ``ModulateConvLayer`` with kernel 1 and no noise): :class:`~networks.stylegan2.SynthesisLayer` without noise
    and without its square-image shape check. Always the non-fused modulation (input scaled by the styles, one
    shared convolution): a per-sample grouped convolution over [P, 1] maps is two orders of magnitude slower on
    the CPU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, activation: str = "lrelu"):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.act_gain = _act_gain(activation)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = modulated_conv2d(x=x, weight=self.weight, styles=self.affine(w), fused_modconv=False)
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}"


class PointMLP(nn.Module):
    """Volume feature + positional encoding -> modulated MLP -> density and feature (``NeRFSynthesisNetwork``).

    Input per point: the volume feature (trilinear lookup of the point normalised from ``bbox`` to [-1, 1]^3)
    followed by the encoding of the raw point; layer i is modulated by w_i; heads are plain equalised-lr dense
    layers (density 1, feature ``feat_dim``). No view direction.
    """

    def __init__(
        self,
        w_dim: int,
        volume_channels: int,
        pe_freqs: int = 10,
        num_layers: int = 4,
        hidden: int = 256,
        feat_dim: int = 512,
        bbox: list | tuple = BBOX,
    ):
        super().__init__()
        self.num_layers = num_layers
        self.pe_freqs = pe_freqs
        bbox = torch.tensor(bbox, dtype=torch.float32)
        if bbox.shape != (2, 3) or not bool((bbox[1] > bbox[0]).all()):
            raise ValueError(f"bbox: expected [[xmin, ymin, zmin], [xmax, ymax, zmax]] with max > min, got {bbox}")
        self.register_buffer("bbox_min", bbox[0], persistent=False)
        self.register_buffer("bbox_size", bbox[1] - bbox[0], persistent=False)
        in_channels = volume_channels + 3 + 6 * pe_freqs
        for i in range(num_layers):
            self.add_module(f"layer{i}", PointLayer(in_channels if i == 0 else hidden, hidden, w_dim))
        self.density = FullyConnectedLayer(hidden, 1)
        self.feature = FullyConnectedLayer(hidden, feat_dim)

    def forward(
        self,
        ws: torch.Tensor,
        volume: torch.Tensor,
        points: torch.Tensor,
        features: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ws [N, num_layers, w_dim], volume [N, C, D, H, W], points [N, P, 3] -> density [N, P], feature
        [N, P, feat_dim] (None when ``features=False``)."""
        n, p = points.shape[:2]
        grid = (points - self.bbox_min.to(points.dtype)) / self.bbox_size.to(points.dtype) * 2 - 1
        x = torch.cat([volume_sample(volume, grid), vr.positional_encoding(points, self.pe_freqs).transpose(1, 2)], 1)
        x = x.unsqueeze(-1)  # [N, C, P, 1]
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i}")(x, ws[:, i])
        x = x.squeeze(-1).transpose(1, 2).reshape(n * p, -1)
        sigma = self.density(x).reshape(n, p)
        return sigma, (self.feature(x).reshape(n, p, -1) if features else None)


class NeuralRenderer(nn.Module):
    """32x32 feature map -> image: StyleGAN2 "skip" blocks of 1x1 modulated convolutions (``SynthesisNetwork``
    of the original with ``init_res = nerf_res``), one per resolution above ``nerf_resolution``.

    ``num_ws = 2 * (blocks + 1)``; w_0 is unused (no layer at the start resolution, whose image is the first
    ``img_channels`` feature channels), block i reads w_(1+2i) .. w_(3+2i).
    """

    def __init__(
        self,
        w_dim: int,
        nerf_resolution: int,
        img_resolution: int,
        img_channels: int,
        feat_dim: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        fp16_resolution: int | None = None,
        resample_filter: list | tuple = (1, 3, 3, 1),
    ):
        super().__init__()
        if img_resolution < nerf_resolution or img_resolution & (img_resolution - 1) or nerf_resolution < 4:
            raise ValueError(
                f"img_resolution {img_resolution} and nerf_resolution {nerf_resolution}: expected powers of two "
                "with img_resolution >= nerf_resolution >= 4"
            )
        if feat_dim < img_channels:
            raise ValueError(f"feat_dim {feat_dim} must be >= img_channels {img_channels} (the first image)")
        self.w_dim = w_dim
        self.img_channels = img_channels
        self.img_resolution = img_resolution
        self.block_resolutions = [
            2**i for i in range(int(np.log2(nerf_resolution)) + 1, int(np.log2(img_resolution)) + 1)
        ]
        self.max_lod = len(self.block_resolutions)
        self.num_ws = 2 * (self.max_lod + 1)
        in_channels = feat_dim
        for res in self.block_resolutions:
            out_channels = min(channel_base // res, channel_max)
            block = SynthesisBlock(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=res == img_resolution,
                architecture="skip",
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                use_fp16=fp16_resolution is not None and res >= fp16_resolution,
                kernel_size=1,
            )
            setattr(self, f"b{res}", block)
            in_channels = out_channels

    def forward(self, feature: torch.Tensor, ws: torch.Tensor, lod: float = 0.0, **block_kwargs) -> torch.Tensor:
        """feature [N, feat_dim, r, r], ws [N, num_ws, w_dim] -> image [N, img_channels, R, R] (module docstring
        of :mod:`networks.volumegan` for the ``lod`` blend). Block kwargs: noise_mode, force_fp32,
        fused_modconv."""
        _check_shape("NeuralRenderer ws", ws, [None, self.num_ws, self.w_dim])
        x = feature
        img = feature[:, : self.img_channels].to(torch.float32)
        out = img if lod > self.max_lod - 1 else None
        for i, res in enumerate(self.block_resolutions):
            k = self.max_lod - 1 - i  # level of this block
            if lod >= k + 1:
                break
            x, img = getattr(self, f"b{res}")(x, img, ws.narrow(1, 1 + 2 * i, 3), **block_kwargs)
            if lod > k - 1 and lod <= k:
                out = img
            elif k < lod < k + 1:
                a = math.ceil(lod) - lod
                out = img * a + F.interpolate(out, scale_factor=2, mode="nearest") * (1 - a)
        if out.shape[-1] != self.img_resolution:
            out = F.interpolate(out, size=(self.img_resolution, self.img_resolution), mode="nearest")
        return out


def _check_lod(lod, max_lod: int, owner: str) -> float:
    lod = float(lod)
    if not 0 <= lod <= max_lod:
        raise ValueError(f"{owner} lod: expected a value in [0, {max_lod}], got {lod}")
    return lod


class VolumeGANSynthesis(nn.Module):
    """ws [N, 12, w_dim] -> image: feature volume + point MLP + volume rendering + neural renderer."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        nerf_resolution: int = 32,
        volume_channels: list | tuple = (256, 256, 128, 64, 32),
        volume_init_res: int = 4,
        bbox: list | tuple = BBOX,
        pe_freqs: int = 10,
        mlp_layers: int = 4,
        mlp_hidden: int = 256,
        feat_dim: int = 512,
        num_coarse: int = 12,
        num_fine: int = 12,
        depth_range: list | tuple = (0.8, 1.2),
        camera: dict | None = None,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        fp16_resolution: int | None = None,
    ):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.nerf_resolution = nerf_resolution
        self.num_coarse = num_coarse
        self.num_fine = num_fine
        self.depth_range = (float(depth_range[0]), float(depth_range[1]))
        if not 0 < self.depth_range[0] < self.depth_range[1] or num_coarse < 3:
            raise ValueError(f"depth_range {depth_range} / num_coarse {num_coarse}: need 0 < near < far and >= 3")
        self.camera = {**CAMERA, **(camera or {})}
        if self.camera["dist"] not in vr.CAMERA_DISTRIBUTIONS or set(self.camera) != set(CAMERA):
            raise ValueError(f"camera: expected keys {sorted(CAMERA)} with dist in {vr.CAMERA_DISTRIBUTIONS}")
        self.volume = FeatureVolume(w_dim, volume_channels, volume_init_res)
        self.mlp = PointMLP(w_dim, self.volume.channels[-1], pe_freqs, mlp_layers, mlp_hidden, feat_dim, bbox)
        self.renderer = NeuralRenderer(
            w_dim,
            nerf_resolution,
            img_resolution,
            img_channels,
            feat_dim,
            channel_base=channel_base,
            channel_max=channel_max,
            conv_clamp=conv_clamp,
            fp16_resolution=fp16_resolution,
        )
        self.num_nerf_ws = mlp_layers
        self.num_ws = mlp_layers + self.renderer.num_ws
        self.max_lod = self.renderer.max_lod
        self.register_buffer("lod", torch.zeros([]))

    def sample_camera(
        self, batch_size: int, device=None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Camera angles from the configured distribution: ``{'yaw': [N], 'pitch': [N]}`` (radians)."""
        c = self.camera
        yaw, pitch = vr.sample_camera_angles(
            batch_size, c["yaw_mean"], c["yaw_std"], c["pitch_mean"], c["pitch_std"], c["dist"], device, generator
        )
        return {"yaw": yaw, "pitch": pitch}

    def cam2world(self, camera: dict, batch_size: int, device) -> torch.Tensor:
        """[N, 4, 4] from ``{'yaw', 'pitch'}`` (tensors [N] or floats) at the configured radius."""
        if not isinstance(camera, dict) or not {"yaw", "pitch"} <= set(camera):
            raise ValueError(f"camera: expected a dict with 'yaw' and 'pitch', got {camera!r}")
        yaw, pitch = (torch.as_tensor(camera[k], dtype=torch.float32, device=device) for k in ("yaw", "pitch"))
        yaw, pitch = yaw.expand(batch_size), pitch.expand(batch_size)
        return vr.camera_to_world(yaw, pitch, self.camera["radius"])

    def query(
        self, ws: torch.Tensor, points: torch.Tensor, features: bool = False, volume: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Density [N, P] (and feature [N, P, feat_dim]) at world points [N, P, 3]; reads ws[:, :num_nerf_ws]."""
        if volume is None:
            volume = self.volume(ws[:, 0])
        return self.mlp(ws[:, : self.num_nerf_ws], volume, points, features=features)

    def render_features(
        self,
        ws: torch.Tensor,
        cam2world: torch.Tensor,
        perturb: bool = True,
        num_coarse: int | None = None,
        num_fine: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Volume rendering at ``nerf_resolution``: coarse stratified samples, importance samples from their
        weights, both evaluated and composited together (``VolumeGANGenerator.nerf_synthesis``).

        Returns ``feature`` [N, feat_dim, r, r], ``depth`` [N, 1, r, r] (sum_i w_i t_i), and per ray (rows of the
        r x r grid) the merged samples sorted by depth: ``depths``, ``density``, ``weights`` [N, r*r, S].
        """
        n, r = ws.shape[0], self.nerf_resolution
        num_coarse = self.num_coarse if num_coarse is None else num_coarse
        num_fine = self.num_fine if num_fine is None else num_fine
        near, far = self.depth_range
        volume = self.volume(ws[:, 0])
        origins, dirs = vr.camera_rays(cam2world.to(ws.dtype), r, self.camera["fov_deg"])
        t_coarse = vr.stratified_depths(n, r * r, num_coarse, near, far, perturb, ws.device, ws.dtype)

        def evaluate(t):
            pts = (origins.unsqueeze(2) + dirs.unsqueeze(2) * t.unsqueeze(-1)).reshape(n, -1, 3)
            sigma, feat = self.mlp(ws[:, : self.num_nerf_ws], volume, pts)
            return sigma.reshape(n, r * r, -1), feat.reshape(n, r * r, t.shape[-1], -1)

        sigma_c, feat_c = evaluate(t_coarse)
        with torch.no_grad():
            t_fine = vr.importance_depths(t_coarse, vr.composite(sigma_c, t_coarse), num_fine)
        sigma_f, feat_f = evaluate(t_fine)
        # Composite fine + coarse sorted by depth; the weights go back to the unsorted samples so the large
        # feature tensors are summed in place instead of gathered.
        t_all = torch.cat([t_fine, t_coarse], dim=-1)
        order = t_all.argsort(dim=-1)
        t_sorted = t_all.gather(-1, order)
        sigma_sorted = torch.cat([sigma_f, sigma_c], dim=-1).gather(-1, order)
        weights = vr.composite(sigma_sorted, t_sorted)
        w_all = weights.gather(-1, order.argsort(dim=-1))
        feature = torch.einsum("nrs,nrsc->nrc", w_all[..., :num_fine], feat_f)
        feature = feature + torch.einsum("nrs,nrsc->nrc", w_all[..., num_fine:], feat_c)
        depth = (weights * t_sorted).sum(dim=-1)
        return {
            "feature": feature.transpose(1, 2).reshape(n, -1, r, r),
            "depth": depth.reshape(n, 1, r, r),
            "depths": t_sorted,
            "density": sigma_sorted,
            "weights": weights,
        }

    def forward(
        self,
        ws: torch.Tensor,
        camera: dict | None = None,
        lod: float | None = None,
        perturb: bool = True,
        num_coarse: int | None = None,
        num_fine: int | None = None,
        return_extras: bool = False,
        update_emas: bool = False,
        noise_mode: str = "random",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
    ):
        """Image [N, img_channels, R, R]; with ``return_extras`` the pair (image, extras).

        ``camera``: ``{'yaw', 'pitch'}`` or None (sampled from the configured distribution); ``lod``: None reads
        the ``lod`` buffer; ``perturb``: stratified jitter (False = the original's ``perturb_mode='none'``);
        ``num_coarse``/``num_fine`` override the samples per ray. ``extras``: everything of
        :meth:`render_features` plus ``camera`` (the angles) and ``cam2world``. ``update_emas`` is accepted for
        API symmetry.
        """
        _check_shape("VolumeGANSynthesis ws", ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        lod = _check_lod(self.lod if lod is None else lod, self.max_lod, "VolumeGANSynthesis")
        n = ws.shape[0]
        if camera is None:
            camera = self.sample_camera(n, ws.device)
        cam2world = self.cam2world(camera, n, ws.device)
        extras = self.render_features(ws, cam2world, perturb, num_coarse, num_fine)
        img = self.renderer(
            extras["feature"],
            ws[:, self.num_nerf_ws :],
            lod,
            noise_mode=noise_mode,
            force_fp32=force_fp32 or not self.training,  # fp16 layers (fp16_quirk) in training mode only
            fused_modconv=fused_modconv,
        )
        if not return_extras:
            return img
        return img, {**extras, "camera": camera, "cam2world": cam2world}

    def extra_repr(self) -> str:
        return f"num_ws={self.num_ws}, nerf_resolution={self.nerf_resolution}, img_resolution={self.img_resolution}"


class VolumeGANGenerator(nn.Module):
    """Mapping (12 w's) + :class:`VolumeGANSynthesis`; ``forward``/``mapping`` as :class:`networks.stylegan2.Generator`.

    ``fp16_quirk=True`` reproduces the released FFHQ run (``--num_fp16_res=128`` underflows Hammer's threshold):
    renderer blocks from ``2 * nerf_resolution`` up run in fp16 on CUDA and every renderer layer clamps at 256. As in
    the original (fp16 in ``kwargs_train`` only, ``fp16_res=None`` in ``kwargs_val``), fp16 runs in training mode
    only: an ``eval()`` network (G_ema, evaluation, rendering) computes in fp32.
    """

    def __init__(
        self,
        z_dim: int = 512,
        c_dim: int = 0,
        w_dim: int = 512,
        img_resolution: int = 256,
        img_channels: int = 3,
        nerf_resolution: int = 32,
        volume_channels: list | tuple = (256, 256, 128, 64, 32),
        volume_init_res: int = 4,
        bbox: list | tuple = BBOX,
        pe_freqs: int = 10,
        mlp_layers: int = 4,
        mlp_hidden: int = 256,
        feat_dim: int = 512,
        num_coarse: int = 12,
        num_fine: int = 12,
        depth_range: list | tuple = (0.8, 1.2),
        camera: dict | None = None,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        fp16_quirk: bool = False,
        mapping_kwargs: dict | None = None,
    ):
        super().__init__()
        init = dict(locals())
        init.pop("self")
        init.pop("__class__", None)
        init["camera"] = {**CAMERA, **(camera or {})}
        init["mapping_kwargs"] = dict(mapping_kwargs or {})
        self.init_kwargs = copy.deepcopy(_plain(init))
        kw = self.init_kwargs
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.fp16_quirk = bool(fp16_quirk)
        self.synthesis = VolumeGANSynthesis(
            w_dim,
            img_resolution,
            img_channels,
            nerf_resolution=nerf_resolution,
            volume_channels=kw["volume_channels"],
            volume_init_res=volume_init_res,
            bbox=kw["bbox"],
            pe_freqs=pe_freqs,
            mlp_layers=mlp_layers,
            mlp_hidden=mlp_hidden,
            feat_dim=feat_dim,
            num_coarse=num_coarse,
            num_fine=num_fine,
            depth_range=kw["depth_range"],
            camera=kw["camera"],
            channel_base=channel_base,
            channel_max=channel_max,
            conv_clamp=256 if self.fp16_quirk else conv_clamp,
            fp16_resolution=2 * nerf_resolution if self.fp16_quirk else None,
        )
        self.num_ws = self.synthesis.num_ws
        self.num_nerf_ws = self.synthesis.num_nerf_ws
        self.max_lod = self.synthesis.max_lod
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **kw["mapping_kwargs"])

    @property
    def mixing_range(self) -> tuple[int, int]:
        """Style-mixing cutoffs ``[num_nerf_ws, num_ws)``: only renderer w's are mixed (the original draws
        ``randint(num_nerf_layers, num_layers)`` and replaces ``ws[:, cutoff:]``)."""
        return self.num_nerf_ws, self.num_ws

    def sample_camera(self, batch_size: int, device=None, generator: torch.Generator | None = None) -> dict:
        """``{'yaw': [N], 'pitch': [N]}`` from the training camera distribution."""
        return self.synthesis.sample_camera(batch_size, device, generator)

    def set_lod(self, lod: float) -> None:
        """Store ``lod`` in the synthesis buffer (used whenever ``lod`` is not passed)."""
        self.synthesis.lod.fill_(_check_lod(lod, self.max_lod, "VolumeGANGenerator"))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: str = "random",
        update_emas: bool = False,
        **synthesis_kwargs,
    ):
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas, **synthesis_kwargs)


class VolumeGANDiscriminator(nn.Module):
    """StyleGAN2 residual D with progressive-growing entries (``VolumeGANDiscriminator`` of the original).

    Blocks ``b{R} .. b8`` and the epilogue ``b4`` are :mod:`networks.stylegan2`'s; ``fromrgb{r}`` are the extra
    fromRGB layers of the levels ``r = R/2 .. lod_resolution`` (the original also builds them down to 4x4, where
    they are never used). ``fp16_quirk=True``: every block in fp16 on CUDA in training mode, clamp 256 (the
    released run).
    """

    def __init__(
        self,
        c_dim: int = 0,
        img_resolution: int = 256,
        img_channels: int = 3,
        lod_resolution: int = 32,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        fp16_quirk: bool = False,
        cmap_dim: int | None = None,
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        resample_filter: list | tuple = (1, 3, 3, 1),
        mapping_kwargs: dict | None = None,
    ):
        if architecture not in ("resnet", "orig"):
            raise ValueError(
                f"VolumeGANDiscriminator architecture: expected 'resnet' (released) or 'orig', got {architecture!r}"
            )
        if img_resolution & (img_resolution - 1) or not 8 <= lod_resolution <= img_resolution:
            raise ValueError(
                f"VolumeGANDiscriminator: img_resolution {img_resolution} must be a power of two and "
                f"lod_resolution {lod_resolution} in [8, img_resolution]"
            )
        super().__init__()
        init = dict(locals())
        init.pop("self")
        init.pop("__class__", None)
        init["mapping_kwargs"] = dict(mapping_kwargs or {})
        self.init_kwargs = copy.deepcopy(_plain(init))
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.max_lod = int(np.log2(img_resolution // lod_resolution))
        self.block_resolutions = [2**i for i in range(int(np.log2(img_resolution)), 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        self.cmap_dim = 0 if c_dim == 0 else (channels[4] if cmap_dim is None else cmap_dim)
        conv_clamp = 256 if fp16_quirk else conv_clamp
        resample_filter = list(resample_filter)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0,
                channels[res],
                channels[res // 2],
                resolution=res,
                img_channels=img_channels,
                first_layer_idx=layer_idx,
                architecture=architecture,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                use_fp16=bool(fp16_quirk),
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
            if lod_resolution <= res < img_resolution:
                entry = Conv2dLayer(
                    img_channels, channels[res], kernel_size=1, activation="lrelu", conv_clamp=conv_clamp
                )
                setattr(self, f"fromrgb{res}", entry)
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=self.cmap_dim, num_ws=None, w_avg_beta=None, **init["mapping_kwargs"]
            )
        self.b4 = DiscriminatorEpilogue(
            channels[4],
            cmap_dim=self.cmap_dim,
            resolution=4,
            img_channels=img_channels,
            architecture=architecture,
            mbstd_group_size=mbstd_group_size,
            mbstd_num_channels=mbstd_num_channels,
            conv_clamp=conv_clamp,
        )
        self.register_buffer("lod", torch.zeros([]))

    def set_lod(self, lod: float) -> None:
        """Store ``lod`` in the buffer (used whenever ``lod`` is not passed)."""
        self.lod.fill_(_check_lod(lod, self.max_lod, "VolumeGANDiscriminator"))

    def forward(
        self,
        img: torch.Tensor,
        c: torch.Tensor | None = None,
        lod: float | None = None,
        update_emas: bool = False,
        force_fp32: bool = False,
    ) -> torch.Tensor:
        """Logits [N, 1] of images [N, C, R, R] at level of detail ``lod`` (None reads the buffer)."""
        _check_shape(
            "VolumeGANDiscriminator img", img, [None, self.img_channels, self.img_resolution, self.img_resolution]
        )
        lod = _check_lod(self.lod if lod is None else lod, self.max_lod, "VolumeGANDiscriminator")
        force_fp32 = force_fp32 or not self.training  # fp16 blocks (fp16_quirk) in training mode only
        entry = min(int(math.floor(lod)), self.max_lod)
        a = math.ceil(lod) - lod  # weight of the finer level entry (module docstring)
        x = None
        for k, res in enumerate(self.block_resolutions):
            block = getattr(self, f"b{res}")
            if k > 0 and k <= entry + 1:
                img = F.avg_pool2d(img, kernel_size=2)
            if k < entry:
                continue
            if k == entry and k > 0:
                dtype = _block_dtype(block.use_fp16, force_fp32, img.device)
                x = getattr(self, f"fromrgb{res}")(img.to(dtype))
            elif k == entry + 1 and a > 0:
                dtype = _block_dtype(block.use_fp16, force_fp32, img.device)
                y = getattr(self, f"fromrgb{res}")(img.to(dtype))
                x = x.to(dtype) * a + y * (1 - a)
            x, _ = block(x, img if k == 0 else None, force_fp32=force_fp32)
        cmap = None
        if self.c_dim > 0:
            _check_shape("VolumeGANDiscriminator c", c, [x.shape[0], self.c_dim])
            cmap = self.mapping(None, c)
        return self.b4(x, None, cmap)

    def extra_repr(self) -> str:
        return f"img_resolution={self.img_resolution}, max_lod={self.max_lod}, c_dim={self.c_dim}"
