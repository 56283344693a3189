"""3D-ResNet-18/50 in the SlowOnly style (no temporal down-sampling) with a width multiplier.

CMPL (arXiv 2112.09690) pairs a primary 3D-ResNet-50 with an auxiliary network of the same architecture at 1/4 of
the channels ("R50+R50-1/4") or a shallower R18; both are this class with different ``depth`` / ``width_mult``.
SlowOnly-R50 inflates the temporal kernel (3x1x1 in the first conv of each bottleneck) only in res4/res5
(``inflate=(0, 0, 1, 1)``); the stem is a 1x7x7 conv with stride (1, 2, 2) and a 1x3x3 max-pool.
Plain PyTorch: no Lightning, no Hydra.
"""

from __future__ import annotations

import torch
from torch import nn

_STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_BOTTLENECK_DEPTHS = {50, 101}


def scaled_channels(channels: int, width_mult: float, min_channels: int = 4) -> int:
    """Channel count after the width multiplier (rounded, at least ``min_channels``)."""
    return max(min_channels, int(round(channels * width_mult)))


class BasicBlock3d(nn.Module):
    """Two 3x3 convs (the first one 3x3x3 when inflated), as in the R18/R34 SlowOnly variants."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, inflate: bool):
        super().__init__()
        kt = 3 if inflate else 1
        self.conv1 = nn.Conv3d(in_ch, planes, (kt, 3, 3), (1, stride, stride), (kt // 2, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, (1, 3, 3), 1, (0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        nn.init.zeros_(self.bn2.weight)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_ch, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck3d(nn.Module):
    """1x1 (3x1x1 when inflated) -> 1x3x3 -> 1x1 bottleneck with expansion 4 (SlowOnly-R50)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, inflate: bool):
        super().__init__()
        kt = 3 if inflate else 1
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv3d(in_ch, planes, (kt, 1, 1), 1, (kt // 2, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_ch)
        nn.init.zeros_(self.bn3.weight)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, 1, (1, stride, stride), bias=False),
        nn.BatchNorm3d(out_ch),
    )


class ResNet3d(nn.Module):
    """SlowOnly-style 3D-ResNet classifier; input (B, C, T, H, W), output logits (B, num_classes).

    Args:
        depth: 18, 34, 50 or 101.
        num_classes: classifier outputs.
        width_mult: multiplies every channel count (CMPL auxiliary: 0.25, "R50+R50-1/4").
        base_channels: stem / res2 planes before the multiplier (64 in ResNet).
        inflate: per stage, whether its blocks use a temporal kernel of 3 (SlowOnly: (0, 0, 1, 1)).
        stem_stride: spatial stride of the stem conv (2 in ResNet; 1 for tiny inputs).
        stem_pool: 1x3x3 max-pool after the stem (ResNet: True).
        dropout: dropout before the classifier.
    """

    def __init__(
        self,
        depth: int = 50,
        num_classes: int = 400,
        width_mult: float = 1.0,
        in_channels: int = 3,
        base_channels: int = 64,
        inflate: tuple[int, int, int, int] | list[int] = (0, 0, 1, 1),
        stem_stride: int = 2,
        stem_pool: bool = True,
        dropout: float = 0.5,
    ):
        super().__init__()
        if depth not in _STAGE_BLOCKS:
            raise ValueError(f"ResNet3d: depth must be one of {sorted(_STAGE_BLOCKS)}, got {depth}")
        inflate = tuple(int(v) for v in inflate)
        if len(inflate) != 4:
            raise ValueError(f"ResNet3d: inflate needs 4 entries (one per stage), got {inflate}")
        if width_mult <= 0:
            raise ValueError(f"ResNet3d: width_mult must be > 0, got {width_mult}")
        self.init_kwargs = dict(
            depth=depth,
            num_classes=num_classes,
            width_mult=width_mult,
            in_channels=in_channels,
            base_channels=base_channels,
            inflate=list(inflate),
            stem_stride=stem_stride,
            stem_pool=stem_pool,
            dropout=dropout,
        )
        block = Bottleneck3d if depth in _BOTTLENECK_DEPTHS else BasicBlock3d
        stem_ch = scaled_channels(base_channels, width_mult)
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, stem_ch, (1, 7, 7), (1, stem_stride, stem_stride), (0, 3, 3), bias=False),
            nn.BatchNorm3d(stem_ch),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)) if stem_pool else nn.Identity(),
        )
        stages = []
        in_ch = stem_ch
        for i, n_blocks in enumerate(_STAGE_BLOCKS[depth]):
            planes = scaled_channels(base_channels * 2**i, width_mult)
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_ch, planes, stride, bool(inflate[i])))
                in_ch = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.feature_dim = in_ch
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, feature_dim)."""
        if x.ndim != 5:
            raise ValueError(f"ResNet3d expects (B, C, T, H, W) clips, got shape {tuple(x.shape)}")
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def head(self, features: torch.Tensor, dropout: bool = True) -> torch.Tensor:
        """Logits from pooled features; ``dropout=False`` skips the dropout even in training mode (the
        pseudo-labelling views of FixMatch/CMPL)."""
        return self.fc(self.dropout(features) if dropout else features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def auxiliary_of(primary: ResNet3d, width_mult: float = 0.25, depth: int | None = None) -> ResNet3d:
    """The CMPL auxiliary network: the primary's architecture at reduced width or depth."""
    kwargs = dict(primary.init_kwargs)
    kwargs["width_mult"] = width_mult
    if depth is not None:
        kwargs["depth"] = depth
    return ResNet3d(**kwargs)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
