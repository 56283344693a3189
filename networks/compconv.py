"""CompConv: compact convolution by recursive divide and conquer along channels.

Zhang, Xu, Shen, "CompConv: A Compact Convolution Module for Efficient Feature Learning", CVPRW 2021
(arXiv 2106.10486). No official code exists; the module is a concrete reconstruction that satisfies every formula of
the paper's method section (channel budget, adaptive depth, complexity; docs/compconv.md). With input ``x``
(``C_in`` channels):

1. ``u0 = Conv_k(x)``: ``C_in -> C_prim`` (carries the stride).
2. for ``j = 1..d-1``: ``t_j = I_j (+) v_{j-1}`` with ``|I_j| = |v_{j-1}| = 2^(j-1) C_prim`` identity channels
   of ``x`` (``v_0 = u0``), and ``v_j = Conv_k(t_j)``: ``2^j C_prim -> 2^j C_prim``.
3. ``X_B0 = v_{d-1}``; the tail ``X_A0 = cheap_op(X_B0)`` (depthwise k x k by default).
4. ``y = Shuffle(t_1 (+) ... (+) t_{d-1} (+) X_A0 (+) X_B0)``, ``C_out`` channels (surplus trimmed from X_A0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DEPTH_RULES = ("min", "max")
IDENTITY_SLICES = ("first", "strided")
INNER_NORM_ACTS = ("bn_relu", "relu", "none")
TAIL_OPS = ("depthwise", "pointwise")
SHUFFLES = ("channel", "none")
STRIDE2_IDENTITIES = ("avgpool", "sample")


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"CompConv2d: {name}={value!r} is not one of {list(allowed)} (docs/compconv.md)")


def compconv_depth(in_channels: int, c0: int, rule: str = "min", max_depth: int = 3) -> int:
    """Adaptive recursion depth d from ``C_in`` and the model constant ``C0`` (arXiv 2106.10486, adaptive
    separation strategy).

    ``min`` (default): ``d = min(floor(log2(max(1, C_in/C0))) + 1, max_depth)``. The paper motivates the cap: C_prim
    "cannot be too small", at d = 3 it is about 8 % of the output channels, so d is limited to at most 3; and a
    larger C0 gives a smaller d (lighter compression). ``max`` (``max(..., max_depth)``, one summary's
    transcription of the formula) makes 3 a floor instead and is kept as a choice.
    """
    _check_choice("depth_rule", rule, DEPTH_RULES)
    if c0 < 1 or in_channels < 1:
        raise ValueError(f"compconv_depth: need in_channels >= 1 and c0 >= 1, got {in_channels}, {c0}")
    base = int(math.floor(math.log2(max(1.0, in_channels / c0)))) + 1
    return min(base, max_depth) if rule == "min" else max(base, max_depth)


def compconv_prim_channels(out_channels: int, depth: int) -> int:
    """``C_prim = ceil(C_out / (2 (2^d - 1)))`` so that ``sum_{i=1..d} 2^i C_prim >= C_out`` (arXiv 2106.10486)."""
    if depth < 1:
        raise ValueError(f"compconv_prim_channels: depth must be >= 1, got {depth}")
    return -(-out_channels // (2 * (2**depth - 1)))


def _interleave_order(sizes: Sequence[int]) -> list[int]:
    """Round-robin order over concatenated parts: ShuffleNet's channel shuffle generalised to unequal parts.

    For equal parts of size n this is exactly ``reshape(g, n).transpose(0, 1)`` with ``g = len(sizes)``.
    """
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [starts[p] + i for i in range(max(sizes)) for p in range(len(sizes)) if i < sizes[p]]


class CompConv2d(nn.Module):
    """Drop-in replacement of ``nn.Conv2d(C_in, C_out, k, stride, padding=k//2)``.

    ``depth=None`` picks d with :func:`compconv_depth`; ``depth=0`` is the degenerate case without a divide
    step (a plain convolution). Each choice the paper leaves open is an argument:
    ``depth_rule``, ``max_depth``, ``identity_slices``, ``inner_norm_act``, ``tail_op``, ``shuffle``,
    ``stride2_identity``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = False,
        c0: int = 128,
        depth: int | None = None,
        depth_rule: str = "min",
        max_depth: int = 3,
        identity_slices: str = "first",
        inner_norm_act: str = "bn_relu",
        tail_op: str = "depthwise",
        shuffle: str = "channel",
        stride2_identity: str = "avgpool",
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("identity_slices", identity_slices, IDENTITY_SLICES),
            ("inner_norm_act", inner_norm_act, INNER_NORM_ACTS),
            ("tail_op", tail_op, TAIL_OPS),
            ("shuffle", shuffle, SHUFFLES),
            ("stride2_identity", stride2_identity, STRIDE2_IDENTITIES),
        ):
            _check_choice(name, value, allowed)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CompConv2d: kernel_size must be odd ('same' padding k//2), got {kernel_size}")
        if stride < 1:
            raise ValueError(f"CompConv2d: stride must be >= 1, got {stride}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = int(kernel_size), int(stride)
        self.depth = compconv_depth(in_channels, c0, depth_rule, max_depth) if depth is None else int(depth)
        self.identity_slices, self.inner_norm_act = identity_slices, inner_norm_act
        self.tail_op, self.shuffle, self.stride2_identity = tail_op, shuffle, stride2_identity
        k, pad, d = self.kernel_size, self.kernel_size // 2, self.depth
        if d < 0:
            raise ValueError(f"CompConv2d: depth must be >= 0, got {d}")
        if d == 0:
            self.prim_channels = self.out_channels
            self.primary = nn.Conv2d(in_channels, out_channels, k, stride, pad, bias=bias)
            self.inner = nn.ModuleList()
            self.inner_post = nn.ModuleList()
            self.tail = None
            self.bias = None
            self.register_buffer("identity_index", torch.zeros(0, dtype=torch.long), persistent=False)
            self.register_buffer("order", torch.zeros(0, dtype=torch.long), persistent=False)
            return

        cp = compconv_prim_channels(out_channels, d)
        self.prim_channels = cp
        n_identity = (2 ** (d - 1) - 1) * cp
        if n_identity > in_channels:
            raise ValueError(
                f"CompConv2d({in_channels}->{out_channels}, depth={d}): the identity parts need "
                f"(2^(d-1)-1)*C_prim = {n_identity} input channels but only {in_channels} exist; "
                "use a smaller depth / larger c0, or keep this layer vanilla"
            )
        half = 2 ** (d - 1) * cp  # |X_B0| = |X_A0| before trimming
        n_tail = out_channels - (2**d - 2) * cp - half  # X_A0 keeps what the budget leaves
        if n_tail < 1:
            raise ValueError(
                f"CompConv2d({in_channels}->{out_channels}, depth={d}): C_prim={cp} overshoots C_out by more "
                f"than the tail X_A0 ({half} channels); out_channels is too small for this depth"
            )
        self.primary = nn.Conv2d(in_channels, cp, k, stride, pad, bias=False)
        self.inner = nn.ModuleList(nn.Conv2d(2**j * cp, 2**j * cp, k, 1, pad, bias=False) for j in range(1, d))
        # inner_norm_act acts on the conv outputs that feed another conv of the recursion: v_0 .. v_{d-2}
        self.inner_post = nn.ModuleList(self._norm_act(2**j * cp) for j in range(d - 1))
        if tail_op == "depthwise":
            # choice [X]: cheap op = depthwise k x k on the first n_tail channels of X_B0 (GhostNet-like)
            self.tail = nn.Conv2d(n_tail, n_tail, k, 1, pad, groups=n_tail, bias=False)
        else:
            # choice [X]: 1 x 1 convolution X_B0 -> X_A0 (only the kept channels are computed)
            self.tail = nn.Conv2d(half, n_tail, 1, bias=False)
        self.n_tail = n_tail
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

        if identity_slices == "first":
            idx = torch.arange(n_identity)
        else:  # evenly spread over the input channels
            idx = torch.tensor([(i * in_channels) // max(n_identity, 1) for i in range(n_identity)])
        self.register_buffer("identity_index", idx.long(), persistent=False)
        sizes = [2**j * cp for j in range(1, d)] + [n_tail, half]
        order = _interleave_order(sizes) if shuffle == "channel" else list(range(sum(sizes)))
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)
        self.reset_parameters()

    def _norm_act(self, channels: int) -> nn.Module:
        if self.inner_norm_act == "bn_relu":
            return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        if self.inner_norm_act == "relu":
            return nn.ReLU(inplace=True)
        return nn.Identity()

    def reset_parameters(self) -> None:
        """He init (fan_out, ReLU) for every conv, as the classic ResNet/VGG initialisation."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _identity(self, x: torch.Tensor) -> torch.Tensor:
        """Identity channels I_1 .. I_{d-1} of x at the output resolution (choice ``stride2_identity``)."""
        if self.identity_slices == "strided":
            ident = x.index_select(1, self.identity_index)
        else:
            ident = x[:, : self.identity_index.numel()]
        s = self.stride
        if s == 1:
            return ident
        if self.stride2_identity == "avgpool":
            return F.avg_pool2d(ident, s, s, ceil_mode=True)
        return ident[:, :, ::s, ::s]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth == 0:
            return self.primary(x)
        v = self.primary(x)
        parts: list[torch.Tensor] = []
        if self.depth > 1:
            ident = self._identity(x)
            offset = 0
            for j, conv in enumerate(self.inner, start=1):
                n = v.shape[1]  # |I_j| = |v_{j-1}| = 2^(j-1) C_prim
                t = torch.cat([ident[:, offset : offset + n], self.inner_post[j - 1](v)], dim=1)
                offset += n
                parts.append(t)
                v = conv(t)
        tail_in = v[:, : self.n_tail] if self.tail_op == "depthwise" else v
        parts += [self.tail(tail_in), v]
        y = torch.cat(parts, dim=1)
        if self.shuffle == "channel":
            y = y.index_select(1, self.order)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"depth={self.depth}, C_prim={self.prim_channels}"
        )


def _is_replaceable(conv: nn.Conv2d, replace_1x1: bool = False) -> bool:
    """k x k (k > 1, odd, square; k = 1 too with ``replace_1x1``), 'same' padding, no groups/dilation."""
    k = conv.kernel_size
    return (
        k[0] == k[1]
        and (k[0] > 1 or replace_1x1)
        and k[0] % 2 == 1
        and conv.padding == (k[0] // 2, k[0] // 2)
        and conv.groups == 1
        and conv.dilation == (1, 1)
        and conv.stride[0] == conv.stride[1]
        and conv.padding_mode == "zeros"
    )


def convert_model(
    model: nn.Module,
    c0: int = 128,
    skip: Sequence[str] = ("stem",),
    replace_1x1: bool = False,
    **compconv_kwargs,
) -> nn.Module:
    """Swap every replaceable k x k ``nn.Conv2d`` of ``model`` for :class:`CompConv2d` (in place).

    Grouped/dilated convolutions and modules whose qualified name starts with an entry of ``skip`` (the RGB stem,
    which cannot supply identity channels) stay vanilla; 1 x 1 convolutions too unless ``replace_1x1``.
    ``compconv_kwargs`` are passed to every CompConv2d. The names of the replaced layers are stored in
    ``model.compconv_replaced``.
    """
    skip = tuple(skip)
    targets = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
        and _is_replaceable(m, replace_1x1)
        and not any(name == s or name.startswith(s + ".") for s in skip)
    ]
    if not targets:
        raise ValueError(f"convert_model: no k x k convolution to replace in {type(model).__name__} (skip={skip})")
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old: nn.Conv2d = getattr(parent, attr)
        new = CompConv2d(
            old.in_channels,
            old.out_channels,
            old.kernel_size[0],
            old.stride[0],
            bias=old.bias is not None,
            c0=c0,
            **compconv_kwargs,
        )
        setattr(parent, attr, new.to(device=old.weight.device, dtype=old.weight.dtype))
    model.compconv_replaced = targets
    return model
