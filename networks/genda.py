"""GenDA networks (Yang et al., "One-Shot Generative Domain Adaptation", arXiv 2111.09876, Sec. 3).

No official code exists, so every form below is a reconstruction from the paper [M] with the open choices as
arguments:

- ``AttributeAdaptor``: w' = a ⊙ w + b on the ws fed to the frozen synthesis network (a = 1, b = 0 at start);
  ``granularity`` ``shared`` (one (a, b) for every layer, 2·w_dim parameters) or ``per_layer`` (one per ws
  entry, W+, 2·num_ws·w_dim parameters).
- ``AttributeClassifier``: a small head (``depth`` fully connected layers) on features of the frozen
  discriminator; one logit, reference (positive) vs adapted syntheses (negative). Features: ``b<res>`` (the
  output of block ``b<res>``, averaged over space; default ``b8``, the 4x4 input of D's epilogue) is computed per
  sample. ``epilogue_fc`` (the output of D's epilogue FC, before ``out``) comes after the minibatch-std layer,
  which mixes the samples of a group: a reference batch is copies of one image (zero spread), so a classifier on
  it can tell reference from fakes by the batch spread alone; kept as an ablation.
- ``AdaptedGenerator``: the frozen source generator behind the adaptor, with the ``Generator`` call API, so
  sample grids, metrics, ``generate.py`` and ``evaluate.py`` treat the adapted domain like any generator.

Plain PyTorch (no Lightning, no Hydra).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from networks.stylegan2 import Discriminator, FullyConnectedLayer, Generator

GRANULARITIES = ("shared", "per_layer")


class AttributeAdaptor(nn.Module):
    """w' = a ⊙ w + b (arXiv 2111.09876 Sec. 3) on ws [N, num_ws, w_dim]; ``scale`` = a, ``bias`` = b, [rows, w_dim]."""

    def __init__(self, w_dim: int, num_ws: int, granularity: str = "shared"):
        if granularity not in GRANULARITIES:
            raise ValueError(f"model.adaptor.granularity must be one of {GRANULARITIES}, got {granularity!r}")
        super().__init__()
        self.init_kwargs = dict(w_dim=w_dim, num_ws=num_ws, granularity=granularity)
        self.w_dim, self.num_ws, self.granularity = int(w_dim), int(num_ws), granularity
        rows = 1 if granularity == "shared" else self.num_ws
        self.scale = nn.Parameter(torch.ones([rows, self.w_dim]))
        self.bias = nn.Parameter(torch.zeros([rows, self.w_dim]))

    @classmethod
    def for_generator(cls, G: nn.Module, granularity: str = "shared") -> AttributeAdaptor:
        return cls(w_dim=G.w_dim, num_ws=G.num_ws, granularity=granularity)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"AttributeAdaptor: expected ws [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        return ws * self.scale + self.bias

    def deviation(self) -> torch.Tensor:
        """||a - 1||² + ||b||²: the optional L2 pull towards the identity (``adaptor_l2``, a suite choice)."""
        return (self.scale - 1).square().sum() + self.bias.square().sum()

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, granularity={self.granularity}"


def feature_dim(D: Discriminator, feature: str) -> int:
    """Width of the D feature ``feature`` (``b<res>`` or ``epilogue_fc``)."""
    check_feature(D, feature)
    if feature == "epilogue_fc":
        return int(D.b4.in_channels)
    res = int(feature[1:])
    if res == D.block_resolutions[-1]:
        return int(D.b4.in_channels)
    return int(getattr(D, f"b{res // 2}").in_channels)


def check_feature(D: Discriminator, feature: str) -> None:
    valid = ["epilogue_fc"] + [f"b{r}" for r in D.block_resolutions]
    if feature not in valid:
        raise ValueError(f"model.classifier.feature must be one of {valid}, got {feature!r}")


def discriminator_features(D: Discriminator, img: torch.Tensor, c: torch.Tensor | None, feature: str):
    """Features [N, F] of the (frozen) discriminator for the attribute classifier: the ``feature`` tap, block
    outputs averaged over space (per sample); ``epilogue_fc`` depends on the batch through minibatch-std."""
    check_feature(D, feature)
    tapped = D.features(img, c, [feature])[feature]
    return tapped if feature == "epilogue_fc" else tapped.float().mean(dim=[2, 3])


class AttributeClassifier(nn.Module):
    """Head on frozen-D features -> one logit (arXiv 2111.09876 Sec. 3): ``depth`` FC layers, lrelu between them."""

    def __init__(
        self,
        in_features: int,
        feature: str = "b8",
        depth: int = 1,
        hidden_features: int | None = None,
    ):
        if depth < 1:
            raise ValueError(f"model.classifier.depth must be >= 1, got {depth}")
        super().__init__()
        hidden = int(hidden_features or in_features)
        self.init_kwargs = dict(in_features=in_features, feature=feature, depth=depth, hidden_features=hidden_features)
        self.in_features, self.feature, self.depth = int(in_features), feature, int(depth)
        widths = [self.in_features] + [hidden] * (depth - 1) + [1]
        self.layers = nn.Sequential(
            *[
                FullyConnectedLayer(widths[i], widths[i + 1], activation="lrelu" if i < depth - 1 else "linear")
                for i in range(depth)
            ]
        )

    @classmethod
    def for_discriminator(
        cls,
        D: Discriminator,
        feature: str = "b8",
        depth: int = 1,
        hidden_features: int | None = None,
    ) -> AttributeClassifier:
        return cls(feature_dim(D, feature), feature=feature, depth=depth, hidden_features=hidden_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"AttributeClassifier: expected features [N, {self.in_features}], got {list(features.shape)}"
            )
        return self.layers(features)

    def extra_repr(self) -> str:
        return f"feature={self.feature}, depth={self.depth}"


class AdaptedGenerator(nn.Module):
    """G_adapted(z, c) = synthesis(A(trunc(mapping(z, c)))) with the ``Generator`` API.

    ``generator`` / ``adaptor``: modules (shared, not copied) or their ``init_kwargs`` (rebuilt, as
    ``networks.checkpoint`` does). Truncation acts in the source W space, before the adaptor: that is the
    diversity constraint w ← w̄ + β(w − w̄) when called with ``truncation_psi=β``.
    """

    def __init__(self, generator: nn.Module | dict, adaptor: nn.Module | dict):
        super().__init__()
        self.generator = generator if isinstance(generator, nn.Module) else Generator(**copy.deepcopy(generator))
        self.adaptor = adaptor if isinstance(adaptor, nn.Module) else AttributeAdaptor(**dict(adaptor))
        if (self.adaptor.w_dim, self.adaptor.num_ws) != (self.generator.w_dim, self.generator.num_ws):
            raise ValueError(
                f"AdaptedGenerator: adaptor is for w_dim={self.adaptor.w_dim}, num_ws={self.adaptor.num_ws} "
                f"but the generator has w_dim={self.generator.w_dim}, num_ws={self.generator.num_ws}"
            )
        self.init_kwargs = dict(
            generator=copy.deepcopy(self.generator.init_kwargs), adaptor=dict(self.adaptor.init_kwargs)
        )
        for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_ws"):
            setattr(self, key, getattr(self.generator, key))

    @property
    def synthesis(self) -> nn.Module:
        return self.generator.synthesis

    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """Adapted ws: the source mapping (truncated towards the source w_avg), then the adaptor."""
        ws = self.generator.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.adaptor(ws)

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
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        return self.generator.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas, **synthesis_kwargs)
