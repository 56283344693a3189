"""Classic classifiers written for the suite: ResNet (He et al. 2016) and VGG (Simonyan & Zisserman 2015).

Layouts follow the usual ImageNet definitions (ResNet v1.5: a bottleneck's stride sits on its 3 x 3 conv).
The RGB input convolution is always named ``stem`` so that :func:`networks.compconv.convert_model` keeps it
vanilla, as the CompConv paper does (docs/compconv.md). ``width`` scales every stage (64 = standard);
``small_input=True`` uses the CIFAR stem (3 x 3, stride 1, no max-pool) for 32 x 32 images.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class BasicBlock(nn.Module):
    """Two 3 x 3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out, stride)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


class Bottleneck(nn.Module):
    """1 x 1 -> 3 x 3 (stride) -> 1 x 1 with expansion 4 (ResNet-50/101/152, v1.5)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out, stride)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + idt)


def _shortcut(in_ch: int, out: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_ch == out:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out, 1, stride, bias=False), nn.BatchNorm2d(out))


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


_RESNET_LAYERS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """ResNet-{18,34,50}; ``stem`` + ``layer1..4`` + global average pool + ``fc``."""

    def __init__(
        self,
        depth: int = 50,
        num_classes: int = 1000,
        width: int = 64,
        in_channels: int = 3,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if depth not in _RESNET_LAYERS:
            raise ValueError(f"ResNet: depth must be one of {sorted(_RESNET_LAYERS)}, got {depth}")
        block, layers = _RESNET_LAYERS[depth]
        self.init_kwargs = dict(
            depth=depth,
            num_classes=num_classes,
            width=width,
            in_channels=in_channels,
            small_input=small_input,
        )
        if small_input:
            self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.stem = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        ch = width
        stages = []
        for i, n in enumerate(layers):
            w = width * 2**i
            blocks = []
            for b in range(n):
                blocks.append(block(ch, w, 2 if (b == 0 and i > 0) else 1))
                ch = w * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)
        _init(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.stem(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    return ResNet(18, num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    return ResNet(50, num_classes, **kwargs)


_VGG_CFGS: dict[int, Sequence[int | str]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """VGG-{11,13,16} (with BatchNorm by default); the first conv is ``stem``, the rest ``features``.

    ``fc_dims=(4096, 4096)`` with ``pool_size=7`` is the ImageNet head; ``fc_dims=()``, ``pool_size=1`` the
    global-pool head used for small inputs.
    """

    def __init__(
        self,
        depth: int = 16,
        num_classes: int = 1000,
        width: int = 64,
        in_channels: int = 3,
        batch_norm: bool = True,
        fc_dims: Sequence[int] = (4096, 4096),
        pool_size: int = 7,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if depth not in _VGG_CFGS:
            raise ValueError(f"VGG: depth must be one of {sorted(_VGG_CFGS)}, got {depth}")
        self.init_kwargs = dict(
            depth=depth, num_classes=num_classes, width=width, in_channels=in_channels, batch_norm=batch_norm,
            fc_dims=tuple(fc_dims), pool_size=pool_size, dropout=dropout,
        )  # fmt: skip
        cfg = [v if v == "M" else int(v) * width // 64 for v in _VGG_CFGS[depth]]
        self.stem = nn.Conv2d(in_channels, cfg[0], 3, 1, 1, bias=not batch_norm)
        layers: list[nn.Module] = [nn.BatchNorm2d(cfg[0])] if batch_norm else []
        layers.append(nn.ReLU(inplace=True))
        ch = cfg[0]
        for v in cfg[1:]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(ch, v, 3, 1, 1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            ch = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        head: list[nn.Module] = []
        dim = ch * pool_size * pool_size
        for h in fc_dims:
            head += [nn.Linear(dim, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            dim = h
        head.append(nn.Linear(dim, num_classes))
        self.classifier = nn.Sequential(*head)
        _init(self)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(self.stem(x))).flatten(1))


def vgg16(num_classes: int = 1000, **kwargs) -> VGG:
    return VGG(16, num_classes, **kwargs)
