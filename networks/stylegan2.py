"""StyleGAN2 G and D, equal to NVlabs/stylegan2-ada-pytorch@d72cc7d ``training/networks.py``.

Papers: StyleGAN2 (Karras et al. 2020, arXiv 1912.04958) and StyleGAN2-ADA (arXiv 2006.06676); state-dict keys
equal the original's one to one. Operators come from :mod:`ops` (docs/ops.md). "NVlabs ``X``" below names ``X`` in
NVlabs/stylegan2-ada-pytorch (``training/networks.py`` unless another file is named).

Suite additions (documented in ``docs/networks.md``):

- fp16 policy: blocks marked fp16 (the top ``num_fp16_res`` resolutions) run in fp16 **only on CUDA
  tensors**; on any other device they run in fp32 (as with ``force_fp32=True``). ``conv_clamp`` is applied
  in both cases, as in the reference.
- Named taps on D: ``Discriminator.forward(img, c, taps=("b8", "epilogue_fc"))`` also returns
  ``{name: tensor}`` of intermediate outputs; ``Discriminator.features`` runs only as far as the deepest tap.
- ``SynthesisLayer.sel`` / ``ToRGBLayer.sel``: optional module applied to the layer input before the
  modulated convolution, called as ``sel(x, spatial)`` with the ``spatial`` keyword given to
  ``G.synthesis`` (EqGAN-SA's spatial encoding layer).
- ``MappingNetwork`` updates ``w_avg`` only when called with ``update_emas=True``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from ops import bias_act, conv2d_resample, upfirdn2d


def _check_shape(name: str, x: torch.Tensor, shape: list) -> None:
    """Raise a ValueError naming ``name`` when ``x`` does not have ``shape`` (None = any size)."""
    expected = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor of shape {expected}, got {type(x).__name__}")
    if x.ndim != len(shape) or any(s is not None and int(d) != s for d, s in zip(x.shape, shape)):
        raise ValueError(f"{name}: expected shape {expected}, got {list(x.shape)}")


def _act_gain(activation: str) -> float:
    """Default gain of a bias_act activation (NVlabs ``bias_act.activation_funcs``)."""
    if activation not in bias_act.activation_funcs:
        raise ValueError(f"activation: expected one of {sorted(bias_act.activation_funcs)}, got {activation!r}")
    return bias_act.activation_funcs[activation].def_gain


# Activations with act(g·y) = g·act(y) for g > 0, through which a positive gain can move to bias_act's gain.
_POSITIVELY_HOMOGENEOUS = frozenset({"linear", "relu", "lrelu"})


def _block_dtype(use_fp16: bool, force_fp32: bool, device: torch.device) -> torch.dtype:
    """fp16 only for fp16 blocks on CUDA (NVlabs ``use_fp16``; suite policy: fp32 on every other device)."""
    return torch.float16 if use_fp16 and not force_fp32 and device.type == "cuda" else torch.float32


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x · (mean(x²) + eps)^(−1/2) along ``dim`` (NVlabs ``normalize_2nd_moment``)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """Modulated (and demodulated) convolution, arXiv 1912.04958 Sec. 2.2, Eq. 1-3.

    x [N,I,H,W], weight [O,I,k,k], styles [N,I]; ``noise`` (broadcastable to the output) is added after
    demodulation. ``fused_modconv`` runs one grouped conv with per-sample weights; otherwise x is scaled
    by the styles, convolved with the shared weight and the output scaled by the demodulation coefficients.
    """
    batch_size = x.shape[0]
    _, in_channels, kh, kw = weight.shape
    _check_shape("modulated_conv2d x", x, [None, in_channels, None, None])
    _check_shape("modulated_conv2d styles", styles, [batch_size, in_channels])

    # fp16 pre-normalisation (NVlabs ``modulated_conv2d``): demodulation removes the scale afterwards.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (
            1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    # Demodulation (arXiv 1912.04958 Eq. 3): sum_{i,k} (weight[o,i,k] * styles[n,i])^2 = styles^2 @ sum_k weight^2,
    # a [N,I]x[I,O] product instead of materialising the per-sample weights [N,O,I,k,k] (equal up to summation order).
    dcoefs = None
    if demodulate:
        taps = weight.flatten(2)
        # vecdot: the sum of squares whose backward is one pass (square().sum() costs five weight-sized passes).
        dcoefs = (styles.square() @ torch.linalg.vecdot(taps, taps).T + 1e-8).rsqrt()  # [N,O]

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample.conv2d_resample(
            x=x,
            w=weight.to(x.dtype),
            f=resample_filter,
            up=up,
            down=down,
            padding=padding,
            flip_weight=flip_weight,
        )
        if demodulate and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        if noise is not None:
            return x + noise.to(x.dtype)
        return x

    w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # [N,O,I,k,k]
    if demodulate:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(
        x=x,
        w=w.to(x.dtype),
        f=resample_filter,
        up=up,
        down=down,
        padding=padding,
        groups=batch_size,
        flip_weight=flip_weight,
    )
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


class FullyConnectedLayer(nn.Module):
    """Equalised-lr dense layer (arXiv 1710.10196 Sec. 4.1): W ~ N(0,1)/lr_mul used as W·lr_mul/√in, b as b·lr_mul."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1,
        bias_init: float = 0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x·(W·g)ᵀ computed as (x·g)·Wᵀ: the gain scales the [N, in] input instead of the [out, in] weight (and the
        # weight's gradient needs no rescaling); equal up to rounding.
        x = x * self.weight_gain
        w = self.weight.to(x.dtype)
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution with optional FIR up/down-sampling (arXiv 1710.10196 Sec. 4.1).

    ``trainable=False`` (Freeze-D, arXiv 2002.10964) registers weight and bias as buffers under the same keys.
    ``forward(x, gain)`` scales the activation gain and the clamp by ``gain`` (√0.5 on resnet paths).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: list | tuple = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        channels_last: bool = False,
        trainable: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = _act_gain(activation)

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias_t = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_t) if bias_t is not None else None
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_t)

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        b = self.bias.to(x.dtype) if self.bias is not None else None
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        if self.activation in _POSITIVELY_HOMOGENEOUS and x.dtype == torch.float32:
            # act(g·(x∗W) + b) = g·act(x∗W + b/g) for g > 0: the weight gain moves into bias_act's gain, so the weight
            # is never rescaled (nor its gradient); equal up to rounding. fp16 keeps the scaled weight (range).
            w = self.weight
            b = b * (1 / self.weight_gain) if b is not None else None
            act_gain = act_gain * self.weight_gain
        else:
            w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample.conv2d_resample(
            x=x,
            w=w,
            f=self.resample_filter,
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=(self.up == 1),
        )
        return bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"activation={self.activation}, up={self.up}, down={self.down}"
        )


class MappingNetwork(nn.Module):
    """z (and c) → w, NVlabs ``MappingNetwork``. ``num_ws=None``: output [N, w_dim]; ``w_avg_beta=None``: no w_avg."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ):
        super().__init__()
        self.init_kwargs = dict(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            num_ws=num_ws,
            num_layers=num_layers,
            embed_features=embed_features,
            layer_features=layer_features,
            activation=activation,
            lr_multiplier=lr_multiplier,
            w_avg_beta=w_avg_beta,
        )
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """ws [N, num_ws, w_dim] (w [N, w_dim] if num_ws is None); truncation on the first ``cutoff`` ws."""
        x = None
        if self.z_dim > 0:
            _check_shape("MappingNetwork z", z, [None, self.z_dim])
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            _check_shape("MappingNetwork c", c, [None, self.c_dim])
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas and self.w_avg_beta is not None and self.num_ws is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            if self.num_ws is None or self.w_avg_beta is None:
                raise ValueError("MappingNetwork: truncation_psi != 1 needs num_ws and w_avg_beta (a w_avg buffer)")
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = torch.cat(
                    [self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi), x[:, truncation_cutoff:]],
                    dim=1,
                )
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv + noise + bias + lrelu (+ clamp), arXiv 1912.04958 Sec. 2.2.

    Extension point: ``self.sel`` (None by default, adds no state) may hold a module applied to the input
    before the modulated conv as ``x = sel(x, spatial)`` (EqGAN-SA's spatial encoding layer; the input is
    ``in_channels`` × (``resolution // up``)²).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: list | tuple = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = _act_gain(activation)
        self.sel: nn.Module | None = None

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool = True,
        gain: float = 1,
        spatial=None,
    ) -> torch.Tensor:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"SynthesisLayer noise_mode: expected 'random', 'const' or 'none', got {noise_mode!r}")
        in_resolution = self.resolution // self.up
        _check_shape("SynthesisLayer x", x, [None, self.in_channels, in_resolution, in_resolution])
        if self.sel is not None:
            x = self.sel(x, spatial)
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == "random":
            noise = (
                torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
            )
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(
            x=x,
            weight=self.weight,
            styles=styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=(self.up == 1),
            fused_modconv=fused_modconv,
        )
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
            f"resolution={self.resolution}, up={self.up}, activation={self.activation}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1×1 conv without demodulation, bias, linear act, clamp (NVlabs ``ToRGBLayer``).

    Same ``sel`` extension point as :class:`SynthesisLayer` (input at the block resolution).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.sel: nn.Module | None = None
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True, spatial=None) -> torch.Tensor:
        if self.sel is not None:
            x = self.sel(x, spatial)
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}"


_ARCHITECTURES = ("orig", "skip", "resnet")


def _check_architecture(owner: str, architecture: str) -> None:
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"{owner} architecture: expected one of {_ARCHITECTURES}, got {architecture!r}")


class SynthesisBlock(nn.Module):
    """One resolution of G (const or conv0 up ×2, conv1, ToRGB / skip): skip G, arXiv 1912.04958 Sec. 4.1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: list | tuple = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        **layer_kwargs,
    ):
        super().__init__()
        _check_architecture("SynthesisBlock", architecture)
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                channels_last=self.channels_last,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels,
            out_channels,
            w_dim=w_dim,
            resolution=resolution,
            conv_clamp=conv_clamp,
            channels_last=self.channels_last,
            **layer_kwargs,
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(
                out_channels,
                img_channels,
                w_dim=w_dim,
                conv_clamp=conv_clamp,
                channels_last=self.channels_last,
            )
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                up=2,
                resample_filter=resample_filter,
                channels_last=self.channels_last,
            )

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        spatial=None,
        **layer_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _check_shape("SynthesisBlock ws", ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        dtype = _block_dtype(self.use_fp16, force_fp32, ws.device)
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if fused_modconv is None:
            fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            _check_shape("SynthesisBlock x", x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = x.to(dtype=dtype, memory_format=memory_format)

        lk = dict(fused_modconv=fused_modconv, spatial=spatial, **layer_kwargs)
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), **lk)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), **lk)
            x = self.conv1(x, next(w_iter), gain=np.sqrt(0.5), **lk)
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), **lk)
            x = self.conv1(x, next(w_iter), **lk)

        if img is not None:
            _check_shape(
                "SynthesisBlock img",
                img,
                [None, self.img_channels, self.resolution // 2, self.resolution // 2],
            )
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv, spatial=spatial)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}"


class SynthesisNetwork(nn.Module):
    """ws → image, blocks b4 … b{img_resolution} (NVlabs ``SynthesisNetwork``); ``num_ws`` = 2·log₂R − 2."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        **block_kwargs,
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f"SynthesisNetwork img_resolution: expected a power of two >= 4, got {img_resolution}")
        super().__init__()
        self.init_kwargs = dict(
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            channel_base=channel_base,
            channel_max=channel_max,
            num_fp16_res=num_fp16_res,
            **copy.deepcopy(block_kwargs),
        )
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, update_emas: bool = False, **block_kwargs) -> torch.Tensor:
        """Image [N, img_channels, R, R], fp32; block kwargs: noise_mode, force_fp32, fused_modconv, spatial.

        ``update_emas`` is accepted for API symmetry; synthesis keeps no running averages.
        """
        _check_shape("SynthesisNetwork ws", ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, **block_kwargs)
        return img

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


class Generator(nn.Module):
    """Mapping + synthesis (arXiv 1912.04958); constructor as NVIDIA's ``Generator``."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
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
            mapping_kwargs=copy.deepcopy(mapping_kwargs),
            synthesis_kwargs=copy.deepcopy(synthesis_kwargs),
        )
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: str = "random",
        update_emas: bool = False,
        **synthesis_kwargs,
    ) -> torch.Tensor:
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas, **synthesis_kwargs)


class DiscriminatorBlock(nn.Module):
    """One resolution of D (fromrgb, conv0, conv1 down ×2, skip), arXiv 1912.04958 Sec. 4.1; Freeze-D: freeze_layers."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int,
        architecture: str = "resnet",
        activation: str = "lrelu",
        resample_filter: list | tuple = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        freeze_layers: int = 0,
    ):
        _check_architecture("DiscriminatorBlock", architecture)
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"DiscriminatorBlock in_channels: expected 0 or {tmp_channels}, got {in_channels}")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(list(resample_filter)))
        self.num_layers = 0

        def trainable() -> bool:
            idx = first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, trainable=trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=trainable(), **common)
        self.conv1 = Conv2dLayer(
            tmp_channels,
            out_channels,
            kernel_size=3,
            down=2,
            trainable=trainable(),
            resample_filter=resample_filter,
            **common,
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                down=2,
                trainable=trainable(),
                resample_filter=resample_filter,
                channels_last=self.channels_last,
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = (x if x is not None else img).device
        dtype = _block_dtype(self.use_fp16, force_fp32, device)
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0 or self.architecture == "skip":
            _check_shape("DiscriminatorBlock img", img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == "skip" else None

        if self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}"


class MinibatchStdLayer(nn.Module):
    """Minibatch standard deviation (arXiv 1710.10196 Sec. 3): strided groups (sample n in group n mod (N/G))."""

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        if n % g != 0:
            raise ValueError(
                f"MinibatchStdLayer: batch size {n} must be divisible by the group size min(mbstd_group_size, N) = {g}"
            )
        if c % f != 0:
            raise ValueError(f"MinibatchStdLayer: channels {c} must be divisible by mbstd_num_channels={f}")
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n/G, F, c, H, W]; group j = samples j, j + N/G, ...
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])  # [n/G, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


EPILOGUE_TAPS = ("epilogue_conv", "epilogue_fc")


class DiscriminatorEpilogue(nn.Module):
    """b4: (fromrgb) → mbstd → conv → fc → out (→ projection on cmap), always fp32; NVlabs ``DiscriminatorEpilogue``."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ):
        _check_architecture("DiscriminatorEpilogue", architecture)
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels,
            in_channels,
            kernel_size=3,
            activation=activation,
            conv_clamp=conv_clamp,
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(
        self,
        x: torch.Tensor,
        img: torch.Tensor | None,
        cmap: torch.Tensor | None,
        taps: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Logits; with a ``taps`` dict also records ``epilogue_conv`` [N, C, 4, 4] and ``epilogue_fc`` [N, C]."""
        _check_shape("DiscriminatorEpilogue x", x, [None, self.in_channels, self.resolution, self.resolution])
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            img = img.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            x = x + self.fromrgb(img)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        if taps is not None:
            taps["epilogue_conv"] = x
        x = self.fc(x.flatten(1))
        if taps is not None:
            taps["epilogue_fc"] = x
        x = self.out(x)
        if self.cmap_dim > 0:
            _check_shape("DiscriminatorEpilogue cmap", cmap, [x.shape[0], self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, cmap_dim={self.cmap_dim}"


class Discriminator(nn.Module):
    """Blocks b{R} … b8 + epilogue b4 (+ label mapping), arXiv 1912.04958 Sec. 4.1; constructor as NVlabs'."""

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        block_kwargs: dict | None = None,
        mapping_kwargs: dict | None = None,
        epilogue_kwargs: dict | None = None,
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f"Discriminator img_resolution: expected a power of two >= 4, got {img_resolution}")
        _check_architecture("Discriminator", architecture)
        super().__init__()
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        self.init_kwargs = dict(
            c_dim=c_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            architecture=architecture,
            channel_base=channel_base,
            channel_max=channel_max,
            num_fp16_res=num_fp16_res,
            conv_clamp=conv_clamp,
            cmap_dim=cmap_dim,
            block_kwargs=copy.deepcopy(block_kwargs),
            mapping_kwargs=copy.deepcopy(mapping_kwargs),
            epilogue_kwargs=copy.deepcopy(epilogue_kwargs),
        )
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        cur_layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0,
                channels[res],
                channels[res // 2],
                resolution=res,
                first_layer_idx=cur_layer_idx,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
                **common,
            )
            setattr(self, f"b{res}", block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs
            )
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common)

    def tap_names(self) -> list[str]:
        """Names accepted by ``taps``: ``b{res}`` (output of block b{res}; ``b8`` is the 4x4 epilogue input), then
        ``epilogue_conv`` and ``epilogue_fc`` (the epilogue's conv and FC outputs, after minibatch-std)."""
        return [f"b{res}" for res in self.block_resolutions] + list(EPILOGUE_TAPS)

    def _check_taps(self, taps) -> tuple[str, ...]:
        if isinstance(taps, str):
            raise TypeError(f"Discriminator taps: expected a sequence of names, got the string {taps!r}")
        taps = tuple(taps)
        unknown = [t for t in taps if t not in self.tap_names()]
        if unknown:
            raise ValueError(f"Discriminator taps {unknown}: not taps of this D; expected some of {self.tap_names()}")
        return taps

    def forward(
        self,
        img: torch.Tensor,
        c: torch.Tensor | None,
        update_emas: bool = False,
        taps: tuple[str, ...] | list[str] = (),
        **block_kwargs,
    ):
        """Logits [N, 1]; with ``taps`` the pair (logits, {name: tensor}) of the named intermediate outputs.

        The b8/b16/b32 outputs are EqGAN-SA's CAM features, pooled b8 InsGen's instance feature, ``epilogue_fc``
        GenDA's classifier input. ``update_emas`` is accepted for API symmetry; D keeps no running averages.
        """
        wanted = self._check_taps(taps)
        out: dict[str, torch.Tensor] = {}
        x, img = self._blocks(img, wanted, out, block_kwargs)
        cmap = None
        if self.c_dim > 0:
            _check_shape("Discriminator c", c, [x.shape[0], self.c_dim])
            cmap = self.mapping(None, c)
        epilogue = {} if any(t in EPILOGUE_TAPS for t in wanted) else None
        x = self.b4(x, img, cmap, taps=epilogue)
        if not wanted:
            return x
        out.update({k: v for k, v in (epilogue or {}).items() if k in wanted})
        return x, {name: out[name] for name in wanted}

    def features(self, img: torch.Tensor, c: torch.Tensor | None, taps, **block_kwargs) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` of the named taps, running D only as far as the deepest one (block taps need no
        labels and never touch the minibatch-std layer, so samples stay independent)."""
        wanted = self._check_taps(taps)
        if not wanted:
            return {}
        if any(t in EPILOGUE_TAPS for t in wanted):
            return self.forward(img, c, taps=wanted, **block_kwargs)[1]
        out: dict[str, torch.Tensor] = {}
        self._blocks(img, wanted, out, block_kwargs, stop_after=min(int(t[1:]) for t in wanted))
        return {name: out[name] for name in wanted}

    def _blocks(self, img, wanted, out, block_kwargs, stop_after: int = 0):
        _check_shape("Discriminator img", img, [None, self.img_channels, self.img_resolution, self.img_resolution])
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
            if f"b{res}" in wanted:
                out[f"b{res}"] = x
            if res == stop_after:
                break
        return x, img

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"
