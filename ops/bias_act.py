"""bias_act: fused bias + activation + gain + clamp (NVlabs stylegan2-ada-pytorch ``torch_utils/ops/bias_act.py``).

Order: ``x + b -> act(., alpha) -> * gain -> clamp to [-clamp, clamp]``. Defaults per activation are NVIDIA's
``activation_funcs``. The gradient of ``act='linear'`` with a clamp follows ``linear_clamp_grad`` (docs/ops.md):
``passthrough`` (default; what the authors' CUDA runs did: gradients flow through clamped values) or
``mask`` (gradient zero where the output was clamped, the NVIDIA reference path). Both backends implement the
selected semantics.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ops import _backend


@dataclass(frozen=True)
class ActSpec:
    """One row of the activation table (NVIDIA ``activation_funcs``)."""

    name: str
    def_alpha: float
    def_gain: float
    index: int  # NVIDIA's CUDA index, also used by suite_ops::bias_act
    ref: str  # what the compiled backward needs: '' (nothing), 'y' or 'x'
    has_2nd_grad: bool


activation_funcs = {
    "linear": ActSpec("linear", 0.0, 1.0, 1, "", False),
    "relu": ActSpec("relu", 0.0, math.sqrt(2), 2, "y", False),
    "lrelu": ActSpec("lrelu", 0.2, math.sqrt(2), 3, "y", False),
    "tanh": ActSpec("tanh", 0.0, 1.0, 4, "y", True),
    "sigmoid": ActSpec("sigmoid", 0.0, 1.0, 5, "y", True),
    "elu": ActSpec("elu", 0.0, 1.0, 6, "y", True),
    "selu": ActSpec("selu", 0.0, 1.0, 7, "y", True),
    "softplus": ActSpec("softplus", 0.0, 1.0, 8, "y", True),
    "swish": ActSpec("swish", 0.0, math.sqrt(2), 9, "x", True),
}

LINEAR_CLAMP_GRAD_MODES = ("passthrough", "mask")
# The environment variable carries the choice into spawned DDP workers (experiments/train.py sets it).
_linear_clamp_grad = {"mode": os.environ.get("SUITE_OPS_LINEAR_CLAMP_GRAD", "passthrough")}


def set_linear_clamp_grad(mode: str) -> None:
    """Select the gradient semantics of ``act='linear'`` with a clamp (config ``ops.linear_clamp_grad``)."""
    if mode not in LINEAR_CLAMP_GRAD_MODES:
        raise ValueError(f"ops.linear_clamp_grad must be one of {LINEAR_CLAMP_GRAD_MODES}, got {mode!r}")
    _linear_clamp_grad["mode"] = mode


def get_linear_clamp_grad() -> str:
    """The active linear+clamp gradient semantics (docs/ops.md)."""
    return _linear_clamp_grad["mode"]


def _activation_ref(x: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    if act == "linear":
        return x
    if act == "relu":
        return F.relu(x)
    if act == "lrelu":
        return F.leaky_relu(x, alpha)
    if act == "tanh":
        return torch.tanh(x)
    if act == "sigmoid":
        return torch.sigmoid(x)
    if act == "elu":
        return F.elu(x)
    if act == "selu":
        return F.selu(x)
    if act == "softplus":
        return F.softplus(x)
    return torch.sigmoid(x) * x  # swish


def _resolve(act, alpha, gain, clamp) -> tuple[ActSpec, float, float, float]:
    if act not in activation_funcs:
        raise ValueError(f"bias_act: unknown act {act!r}; expected one of {sorted(activation_funcs)}")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def _bias_act_ref(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None) -> torch.Tensor:
    """Reference path (NVIDIA ``_bias_act_ref``): plain PyTorch, differentiable to any order."""
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = _activation_ref(x, spec.name, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        if spec.name == "linear" and get_linear_clamp_grad() == "passthrough":
            x = x + (x.clamp(-clamp, clamp) - x).detach()
        else:
            x = x.clamp(-clamp, clamp)
    return x


def _bias_act_compiled(x, b, dim, spec: ActSpec, alpha, gain, clamp) -> torch.Tensor:
    # The backward masks clamped elements by the saved output, so save it whenever clamping (NVIDIA
    # does not for swish, letting gradients through clamped values); linear + clamp follows
    # linear_clamp_grad (docs/ops.md).
    passthrough = spec.name == "linear" and get_linear_clamp_grad() == "passthrough"
    save_y = spec.ref == "y" or (clamp >= 0 and not passthrough)
    piecewise_linear = spec.name in ("relu", "lrelu") or (spec.name == "linear" and save_y)
    if piecewise_linear and _needs_grad(x, b) and _masked_path(x):
        # Their derivative only needs which side of the kink and of the clamp each output fell on: a 2-bit mask
        # (1/16 of the output's bytes) replaces the saved output, one memory stream less in the backward.
        return torch.ops.suite_ops.bias_act_masked(x, b, dim, spec.index, alpha, gain, clamp)[0]
    return torch.ops.suite_ops.bias_act(x, b, None, None, None, 0, dim, spec.index, alpha, gain, clamp, save_y)


def _needs_grad(x: torch.Tensor, b: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))


# The masked path needs AVX2 on the CPU to beat the saved-output path (experiments/bench_ops.py); None = use it
# when the CPU has AVX2. Tests set it to compare both paths.
_masked_on_cpu: dict[str, bool | None] = {"enabled": None}


def _masked_path(x: torch.Tensor) -> bool:
    if x.device.type != "cpu":
        return True
    enabled = _masked_on_cpu["enabled"]
    return _backend.cpu_has_avx2() if enabled is None else enabled


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None) -> torch.Tensor:
    """Fused ``clamp(act(x + b, alpha) * gain)`` with the defaults of NVIDIA ``activation_funcs``."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"bias_act: x must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if clamp is not None and clamp < 0:
        raise ValueError(f"bias_act: clamp must be None or >= 0, got {clamp}")
    if not (0 <= dim < x.ndim):
        raise ValueError(f"bias_act: dim must be in [0, {x.ndim}), got {dim}")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(f"bias_act: b must be 1-D of length x.shape[{dim}]={x.shape[dim]}, got {tuple(b.shape)}")
    spec, alpha_f, gain_f, clamp_f = _resolve(act, alpha, gain, clamp)
    if _backend.use_compiled("bias_act", x):
        if b is not None:
            b = b.to(x.dtype)
        return _bias_act_compiled(x, b, dim, spec, alpha_f, gain_f, clamp_f)
    return _bias_act_ref(x, b, dim, act, alpha, gain, clamp)
