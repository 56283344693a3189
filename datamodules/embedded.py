"""Embedded real datasets shipped inside installed packages: the offline default of every 2D pipeline.

- ``faces``: ``skimage.data.lfw_subset()`` — the first 100 of its 200 images are LFW faces (25x25 grayscale);
  the other 100 are background crops and are NOT used. Resized to ``resolution``; gray, or replicated to 3 channels
  (``num_channels``, default 3).
- ``digits``: ``sklearn.datasets.load_digits()`` — 1797 8x8 digits (values 0..16 scaled to 0..255), 1 channel,
  10 classes (one-hot labels with ``use_labels=true``).

Resize filter: PIL Lanczos by default (dataset_tool.py's default), configurable. API::

    dm = EmbeddedImageDataModule(name="faces", resolution=32, batch_size=32)   # batch_size = GLOBAL batch
    dm.label_dim, dm.resolution, dm.num_channels                              # for the model config
    img, c = next(iter(dm.train_dataloader()))  # img uint8 [N, C, H, W], c float32 [N, label_dim]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datamodules.base import GANDataModule, ImageDataset, labels_to_matrix
from datamodules.images import preprocess

EMBEDDED = ("faces", "digits")


def load_embedded(name: str) -> tuple[np.ndarray, list[int]]:
    """Raw images [N, H, W] uint8 and class labels of an embedded set."""
    if name == "faces":
        from skimage.data import lfw_subset

        faces = lfw_subset()[:100]
        return np.clip(np.round(faces * 255), 0, 255).astype(np.uint8), [0] * len(faces)
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        imgs = np.clip(np.round(bunch.images * (255 / 16)), 0, 255).astype(np.uint8)
        return imgs, [int(t) for t in bunch.target]
    raise ValueError(f"data.name must be one of {EMBEDDED}, got {name!r}")


class EmbeddedImageDataset(ImageDataset):
    """All images resized once at construction (they are tiny); same interface as ``ImageFolderDataset``."""

    def __init__(
        self,
        name: str,
        resolution: int = 32,
        use_labels: bool = False,
        xflip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        resize_filter: str = "lanczos",
        channels: int | None = None,
    ) -> None:
        raw, classes = load_embedded(name)
        if channels is None:
            channels = 3 if name == "faces" else 1
        if channels not in (1, 3):
            raise ValueError(
                f"data.num_channels for embedded {name!r} must be 1 or 3 (gray, or gray as RGB), got {channels}"
            )
        imgs = [preprocess(im[:, :, None], resolution, "none", resize_filter) for im in raw]
        self._images = np.stack([np.repeat(im, channels, axis=2) for im in imgs])
        self.resize_filter = resize_filter
        names = [f"{name}/{i:05d}" for i in range(len(raw))]
        labels = labels_to_matrix(classes, f"embedded:{name}") if use_labels and name == "digits" else None
        if use_labels and name == "faces":
            raise ValueError("embedded 'faces' has no class labels; set use_labels=false")
        super().__init__(
            f"embedded_{name}",
            names,
            labels,
            resolution,
            channels,
            xflip=xflip,
            max_images=max_images,
            seed=seed,
        )

    def _load_raw(self, raw_idx: int) -> np.ndarray:
        return self._images[raw_idx]

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "resize_filter": self.resize_filter, "labels": self.has_labels}


class EmbeddedImageDataModule(GANDataModule):
    """``faces`` | ``digits`` at ``resolution`` (default 32); ``batch_size`` is the GLOBAL batch."""

    def __init__(
        self,
        name: str = "faces",
        resolution: int = 32,
        batch_size: int = 32,
        num_workers: int = 0,
        xflip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        subset_seed: int = 0,
        use_labels: bool = False,
        resize_filter: str = "lanczos",
        label_dim: int | None = None,
        num_channels: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers=num_workers, seed=seed, label_dim=label_dim, num_channels=num_channels)
        if name not in EMBEDDED:
            raise ValueError(f"data.name must be one of {EMBEDDED}, got {name!r}")
        self.name = name
        self.kwargs = dict(
            resolution=resolution, use_labels=use_labels, resize_filter=resize_filter, channels=num_channels
        )
        self.xflip, self.max_images, self.subset_seed = xflip, max_images, subset_seed

    def build_dataset(self, full: bool) -> EmbeddedImageDataset:
        if full:
            return EmbeddedImageDataset(self.name, **self.kwargs)
        return EmbeddedImageDataset(
            self.name, xflip=self.xflip, max_images=self.max_images, seed=self.subset_seed, **self.kwargs
        )
