"""One-shot DataModule for GenDA (Yang et al., arXiv 2111.09876): batches of one reference image, lightly augmented.

The reference is ``path`` (an image file, or a folder / zip of images from which one is picked by
``reference_seed``, its file name recorded with the run) or, offline, one of the images that ship with
scikit-image (``builtin``). Every training item is the same uint8 image; the light augmentation (``hflip``,
integer ``translate`` with reflect padding; a suite choice [X], the paper's is unknown) runs batched on the device
in ``on_after_batch_transfer`` (:func:`augment_batch`) from the global torch RNG, which the LightningModule seeds
per rank and saves in its checkpoints, so resumed runs draw the same augmentations. GenDA applies the same
function to its fakes (``model.fake_augment``, tied to ``data.hflip`` / ``data.translate`` in the configs), so
reference and fakes reach D alike.

``eval_path`` (optional) is the full target set (e.g. all Babies / Sunglasses images) that the metrics
callback scores the adapted generator against (``reference: full``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.base import SkipCounter, per_rank_batch_size
from datamodules.images import IMAGE_EXTENSIONS, decode_image, open_reader, preprocess

log = logging.getLogger(__name__)

# Built-in references (skimage.data): name -> (loader name, crop rows, crop cols) [D].
BUILTINS = {
    "astronaut": ("astronaut", slice(70, 190), slice(180, 300)),  # face of Eileen Collins, LFW-like framing
    "chelsea": ("chelsea", slice(0, 300), slice(50, 350)),  # the cat's head
    "coffee": ("coffee", slice(0, 400), slice(100, 500)),  # the cup
}


def load_builtin(name: str) -> np.ndarray:
    """HWC uint8 crop of a scikit-image sample image (``BUILTINS``)."""
    if name not in BUILTINS:
        raise ValueError(f"data.builtin must be one of {sorted(BUILTINS)}, got {name!r}")
    import skimage.data

    loader, rows, cols = BUILTINS[name]
    img = getattr(skimage.data, loader)()[rows, cols]
    return np.ascontiguousarray(img if img.ndim == 3 else img[:, :, None])


def augment_batch(img: torch.Tensor, hflip: bool, translate: float) -> torch.Tensor:
    """Per-sample random x-flip and integer translation (up to ``translate``·size, reflect padding)."""
    n, _, h, w = img.shape
    if hflip:
        flip = torch.rand([n], device=img.device) < 0.5
        img = torch.where(flip[:, None, None, None], img.flip(3), img)
    pad = int(round(translate * min(h, w)))
    if pad > 0:
        padded = torch.nn.functional.pad(img.float(), [pad, pad, pad, pad], mode="reflect").to(img.dtype)
        c, wp = img.shape[1], w + 2 * pad
        dy = torch.randint(0, 2 * pad + 1, [n, 1], device=img.device) + torch.arange(h, device=img.device)
        dx = torch.randint(0, 2 * pad + 1, [n, 1], device=img.device) + torch.arange(w, device=img.device)
        img = padded.gather(2, dy[:, None, :, None].expand(n, c, h, wp)).gather(3, dx[:, None, None].expand(n, c, h, w))
    return img


class RepeatedImage(Dataset):
    """``length`` copies of one uint8 CHW image with an empty label (the GAN batch layout)."""

    def __init__(self, image: torch.Tensor, length: int, label_dim: int = 0) -> None:
        self.image, self.length, self.label = image, int(length), torch.zeros([label_dim])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image, self.label


class OneShotDataModule(pl.LightningDataModule):
    """One reference image served as GAN batches ``(uint8 [N, C, R, R], float [N, 0])``.

    Args:
        path: image file, or folder / zip of images (one picked with ``reference_seed``); None: ``builtin``.
        builtin: scikit-image sample used when ``path`` is None (``astronaut`` face, ``chelsea``, ``coffee``).
        resolution, num_channels: the source generator's image size and channels.
        grayscale: convert the reference to gray (e.g. the LFW-trained embedded demo generator) [D].
        batch_size: the GLOBAL batch (divided by the world size in ``setup``).
        hflip, translate: light augmentation of the reference (and, in GenDA, of the fakes) [X].
        batches_per_epoch: length of one pass (the module stops on ``total_kimg``, not on epochs).
        reference_seed: seed of the pick from a folder; eval_path: full target set for the metrics.
        transform, resize_filter: how the reference and the eval images are brought to ``resolution``.
    """

    def __init__(
        self,
        path: str | None = None,
        builtin: str = "astronaut",
        resolution: int = 32,
        num_channels: int = 3,
        label_dim: int = 0,
        grayscale: bool = False,
        batch_size: int = 8,
        hflip: bool = True,
        translate: float = 0.0625,
        batches_per_epoch: int = 100,
        reference_seed: int = 0,
        eval_path: str | None = None,
        transform: str = "center-crop",
        resize_filter: str = "lanczos",
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if label_dim != 0:
            raise ValueError(f"data.label_dim: the one-shot reference has no label, expected 0, got {label_dim}")
        if num_channels not in (1, 3):
            raise ValueError(f"data.num_channels must be 1 or 3, got {num_channels}")
        if not 0 <= translate < 0.5:
            raise ValueError(f"data.translate must be in [0, 0.5) (fraction of the size), got {translate}")
        self.save_hyperparameters()
        self.path, self.builtin = path, builtin
        self.resolution, self.num_channels, self.label_dim = int(resolution), int(num_channels), 0
        self.batch_size = int(batch_size)
        self.per_rank_batch: int | None = None
        self.reference_name: str | None = None
        self.skips = SkipCounter("one-shot reference")
        self._image: torch.Tensor | None = None

    # ---------------------------------------------------------------- reference
    def _candidates(self) -> tuple[Any, list[str]]:
        reader = open_reader(self.path)
        names = sorted(n for n in reader.names() if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise FileNotFoundError(f"data.path={self.path}: no images found (extensions {IMAGE_EXTENSIONS})")
        return reader, names

    def _load_reference(self) -> tuple[np.ndarray, str]:
        if self.path is None:
            return load_builtin(self.builtin), f"skimage.data:{self.builtin}"
        path = Path(self.path)
        if path.is_file() and path.suffix.lower() != ".zip":
            try:
                return decode_image(path.read_bytes(), 3), str(path)
            except Exception as e:
                raise ValueError(f"data.path={self.path}: cannot decode the reference image ({e})") from e
        if not path.exists():
            raise FileNotFoundError(f"data.path={self.path}: no such reference image, folder or zip")
        reader, names = self._candidates()
        start = int(np.random.RandomState(self.hparams.reference_seed).randint(len(names)))
        for k in range(len(names)):
            name = names[(start + k) % len(names)]
            try:
                return decode_image(reader.read(name), 3), f"{self.path}/{name}"
            except Exception as e:  # a corrupt candidate is skipped, counted and logged; the next one is used
                self.skips.skip(name, f"{type(e).__name__}: {e}")
        raise ValueError(f"data.path={self.path}: none of the {len(names)} images could be decoded")

    def reference_image(self) -> torch.Tensor:
        """The reference as uint8 [C, R, R] (before augmentation)."""
        if self._image is None:
            raw, self.reference_name = self._load_reference()
            hp = self.hparams
            img = preprocess(raw, self.resolution, hp.transform, hp.resize_filter)
            if hp.grayscale or self.num_channels == 1:
                gray = np.round(img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
                img = np.repeat(gray.clip(0, 255).astype(np.uint8)[:, :, None], self.num_channels, axis=2)
            self._image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
            log.info("one-shot reference: %s (%s)", self.reference_name, list(self._image.shape))
        return self._image

    # ------------------------------------------------------------------ loaders
    def setup(self, stage: str | None = None) -> None:
        world = self.trainer.world_size if self.trainer is not None else 1
        self.per_rank_batch = per_rank_batch_size(self.batch_size, world)
        self.reference_image()
        self.hparams["reference_file"] = self.reference_name
        for logger in self.trainer.loggers if self.trainer is not None else []:
            logger.log_hyperparams({"reference_file": self.reference_name})  # recorded with the run

    def train_dataloader(self) -> DataLoader:
        if self.per_rank_batch is None:
            self.setup("fit")
        data = RepeatedImage(self.reference_image(), self.per_rank_batch * self.hparams.batches_per_epoch)
        # Own generator: creating the iterator must not draw from the global RNG that drives the augmentation,
        # or a resumed run would draw different augmentations than an uninterrupted one.
        return DataLoader(
            data,
            batch_size=self.per_rank_batch,
            shuffle=False,
            num_workers=self.hparams.num_workers,
            generator=torch.Generator().manual_seed(0),
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is not None and self.trainer.training:
            img, c = batch
            batch = (augment_batch(img, self.hparams.hflip, self.hparams.translate), c)
        return batch

    def reference_dataset(self, reference: str):
        """Metric reference: ``full`` = every image of ``eval_path`` (the full target set)."""
        if reference != "full":
            raise ValueError(f"one-shot data: metric reference must be 'full' (data.eval_path), got {reference!r}")
        if not self.hparams.eval_path:
            raise ValueError("metrics with reference=full need data.eval_path: the full target set (folder/zip)")
        from datamodules.images import ImageFolderDataset

        return ImageFolderDataset(
            self.hparams.eval_path,
            resolution=self.resolution,
            num_channels=self.num_channels,
            transform=self.hparams.transform,
            resize_filter=self.hparams.resize_filter,
        )
