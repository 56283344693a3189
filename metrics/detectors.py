"""Feature detectors for FID/KID/PR, loaded from local files only (docs/metrics.md "Detectors").

- ``nvidia_inception``: NVIDIA's TorchScript ``inception-2015-12-05.pt`` (uint8 NCHW in, resize to 299 inside
  the net, ``return_features=True`` -> 2048-d pool features). The protocol of ``fid50k_full`` in the papers.
- ``nvidia_vgg16``: NVIDIA's TorchScript ``vgg16.pt`` (4096-d features) for precision/recall ``pr50k3_full``.
- ``random-cnn``: a tiny randomly initialised, seeded CNN for tests and offline smoke runs. Its numbers are
  NOT comparable to any paper; the protocol record says so.
- ``pixels``: the image's brightness, area-averaged to 8x8: a distance between image layouts that needs no network
  (the embedded demo's quality curve). NOT comparable to any paper either.

Nothing is downloaded: a missing file raises an error saying where to put it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

DETECTOR_FILES = {
    "nvidia_inception": (
        "inception-2015-12-05.pt",
        2048,
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
    ),
    "nvidia_vgg16": (
        "vgg16.pt",
        4096,
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt",
    ),
}
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (memoised on path, size and mtime)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _to_rgb(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"detectors take uint8 [N, C, H, W] images, got {images.dtype} {list(images.shape)}")
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    if images.shape[1] != 3:
        raise ValueError(f"detectors take 1 or 3 channels, got {images.shape[1]}")
    return images


class TorchScriptDetector(nn.Module):
    """NVIDIA TorchScript detector: uint8 NCHW (gray -> RGB) -> features (``return_features=True``)."""

    def __init__(self, path: str | os.PathLike, num_features: int, name: str) -> None:
        super().__init__()
        self.net = torch.jit.load(str(path), map_location="cpu").eval()
        self.num_features = num_features
        self.info = {"detector": name, "detector_file": Path(path).name, "detector_sha256": file_sha256(path)}

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(_to_rgb(images), return_features=True)


class RandomCNNFeatures(nn.Module):
    """Tiny seeded random CNN (for tests/offline): uint8 -> [-1, 1] -> 3 strided convs + ReLU -> global mean.

    Not an Inception network; numbers from it are only comparable with numbers from the same seed and width.
    """

    def __init__(self, num_features: int = 64, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        widths = [3, 16, 32, num_features]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        for conv in self.convs:
            fan_in = conv.weight[0].numel()
            conv.weight.data = torch.randn(conv.weight.shape, generator=gen) * (2 / fan_in) ** 0.5
            conv.bias.data = torch.randn(conv.bias.shape, generator=gen) * 0.1
        self.requires_grad_(False).eval()
        self.num_features = num_features
        self.info = {
            "detector": "random-cnn",
            "detector_file": None,
            "detector_sha256": None,
            "detector_note": f"random CNN seed={seed} width={num_features}: NOT comparable to papers",
        }

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _to_rgb(images).float() / 127.5 - 1
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x.mean(dim=(2, 3))


class PixelFeatures(nn.Module):
    """Pixels as features: uint8 -> [-1, 1] -> mean over channels -> area average to ``size`` x ``size``, flattened.

    Sensitive to where light and dark sit in the image (a face's eyes, mouth, outline), which the global statistics of
    a random CNN are not; a stand-in for a trained detector where none can be loaded, not a replacement.
    """

    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.size = size
        self.num_features = size * size
        self.info = {
            "detector": "pixels",
            "detector_file": None,
            "detector_sha256": None,
            "detector_note": f"brightness area-averaged to {size}x{size}: NOT comparable to papers",
        }

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().mean(dim=1, keepdim=True) / 127.5 - 1
        return nn.functional.adaptive_avg_pool2d(x, self.size).flatten(1)


def load_detector(name: str, detectors_dir: str | os.PathLike | None = None, path: str | None = None) -> nn.Module:
    """Detector by name from ``detectors_dir`` (or an explicit ``path``); ``random-cnn`` needs no file."""
    if name == "random-cnn":
        return RandomCNNFeatures()
    if name == "pixels":
        return PixelFeatures()
    if name not in DETECTOR_FILES:
        raise ValueError(
            f"unknown detector {name!r}; expected one of {sorted(DETECTOR_FILES)}, 'random-cnn' or 'pixels'"
        )
    fname, dim, url = DETECTOR_FILES[name]
    if path is None:
        if detectors_dir is None:
            raise ValueError(f"detector {name!r} needs paths.detectors_dir (or an explicit detector path)")
        path = str(Path(detectors_dir) / fname)
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"detector file {path} not found. Nothing is downloaded at run time: fetch {url} "
            "on a machine with "
            f"internet and put it at {path} (paths.detectors_dir / env SUITE_DETECTORS_DIR)."
        )
    return TorchScriptDetector(path, dim, name)


def detector_info(detector: nn.Module) -> dict[str, Any]:
    """Protocol fields of a detector; any nn.Module works (named by its class, flagged as custom)."""
    info = getattr(detector, "info", None)
    if info is not None:
        return dict(info)
    return {"detector": f"custom:{type(detector).__name__}", "detector_file": None, "detector_sha256": None}
