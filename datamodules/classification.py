"""Image-classification data for CompConv (arXiv 2106.10486): ImageNet folders, CIFAR-10 pickles, digits.

Formats:

- ``imagenet``: ``<data_dir>/train/<wnid>/*.JPEG`` and ``<data_dir>/val/<wnid>/*.JPEG`` (the usual layout
  after the standard val-prep script); classes are the sorted ``train`` sub-folders.
- ``cifar10``: the python-pickle release, ``data_batch_1..5``, ``test_batch``, ``batches.meta`` in
  ``<data_dir>`` or ``<data_dir>/cifar-10-batches-py``.
- ``digits``: the embedded default, scikit-learn's 8 x 8 digits (1797 images shipped inside the package),
  upsampled bilinearly to ``image_size`` and replicated to 3 channels; a seeded ``val_fraction`` split.

Undecodable images and malformed CIFAR rows are skipped and counted (``datamodules.base.SkipCounter``).
The CIFAR pickles are read with the restricted unpickler (``networks.converters.safe_pickle``): a file that
references anything but dicts, lists, strings, bytes, numbers and numpy arrays is refused, never run.
``batch_size`` is the GLOBAL batch, divided with ``per_rank_batch_size`` in ``setup()``.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datamodules.base import SkipCounter, per_rank_batch_size
from networks.converters.safe_pickle import load_data_pickle

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGE_EXTS = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILES = ("test_batch",)


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def _pad_crop_flip(x: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` pixels, then an optional random horizontal flip (CHW)."""
    h, w = x.shape[-2:]
    if pad > 0:
        x = F.pad(x, (pad, pad, pad, pad))
        i, j = random.randint(0, 2 * pad), random.randint(0, 2 * pad)
        x = x[:, i : i + h, j : j + w]
    if flip and random.random() < 0.5:
        x = x.flip(-1)
    return x


def _to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


def random_resized_crop(img: Image.Image, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """Inception-style crop: random area fraction in ``scale`` and aspect ratio (log-uniform) in ``ratio``."""
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * random.uniform(*scale)
        aspect = float(np.exp(random.uniform(np.log(ratio[0]), np.log(ratio[1]))))
        cw, ch = round((target * aspect) ** 0.5), round((target / aspect) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = random.randint(0, w - cw), random.randint(0, h - ch)
            return img.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    side = min(w, h)  # fallback: central square
    x0, y0 = (w - side) // 2, (h - side) // 2
    return img.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))


def resize_center_crop(img: Image.Image, resize: int, size: int) -> Image.Image:
    """Evaluation transform: shorter side to ``resize``, then the central ``size`` x ``size`` crop."""
    w, h = img.size
    s = resize / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
    w, h = img.size
    x0, y0 = (w - size) // 2, (h - size) // 2
    return img.crop((x0, y0, x0 + size, y0 + size))


class ImageFolderClassification(Dataset):
    """``<root>/<split>/<class>/<image>``; undecodable files are skipped, counted and replaced by the next."""

    max_replacements = 100

    def __init__(
        self,
        root: str | Path,
        split: str,
        classes: list[str] | None = None,
        train: bool = True,
        image_size: int = 224,
        resize_size: int = 256,
        min_scale: float = 0.08,
    ) -> None:
        self.dir = Path(root) / split
        if not self.dir.is_dir():
            raise FileNotFoundError(
                f"ImageFolderClassification: {self.dir} does not exist (expected {split}/<class>/*)"
            )
        found = sorted(p.name for p in self.dir.iterdir() if p.is_dir())
        if not found:
            raise FileNotFoundError(f"ImageFolderClassification: no class folders in {self.dir}")
        self.classes = list(classes) if classes is not None else found
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = [c for c in found if c not in index]
        if unknown:
            raise ValueError(
                f"ImageFolderClassification: {self.dir} has class folders absent from the training classes, "
                f"e.g. {unknown[:3]}"
            )
        self.samples = [
            (str(f), index[c])
            for c in found
            for f in sorted((self.dir / c).iterdir())
            if f.suffix.lower() in IMAGE_EXTS
        ]
        if not self.samples:
            raise FileNotFoundError(f"ImageFolderClassification: no images ({sorted(IMAGE_EXTS)}) under {self.dir}")
        self.train, self.image_size = train, image_size
        self.resize_size, self.min_scale = resize_size, min_scale
        self.skips = SkipCounter(f"imagenet/{split}")

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: str) -> torch.Tensor:
        with Image.open(path) as im:
            img = im.convert("RGB")
        if self.train:
            img = random_resized_crop(img, self.image_size, (self.min_scale, 1.0))
            x = _to_tensor(img)
            if random.random() < 0.5:
                x = x.flip(-1)
        else:
            x = _to_tensor(resize_center_crop(img, self.resize_size, self.image_size))
        return _normalize(x, IMAGENET_MEAN, IMAGENET_STD)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        for attempt in range(self.max_replacements + 1):
            path, label = self.samples[(idx + attempt) % len(self.samples)]
            try:
                return self._load(path), label
            except (OSError, ValueError, SyntaxError) as e:  # PIL's decode errors
                self.skips.skip(path, f"{type(e).__name__}: {e}")
        raise RuntimeError(
            f"ImageFolderClassification: {self.max_replacements + 1} consecutive files from index {idx} of "
            f"{self.dir} failed to decode ({self.skips.count} skipped in total)"
        )


def read_cifar10(root: str | Path, train: bool, skips: SkipCounter) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CIFAR-10 python pickles -> (uint8 [N, 32, 32, 3], int64 [N], class names); malformed rows skipped."""
    root = Path(root)
    if not (root / "batches.meta").is_file() and (root / "cifar-10-batches-py" / "batches.meta").is_file():
        root = root / "cifar-10-batches-py"
    meta_path = root / "batches.meta"
    if not meta_path.is_file():
        raise FileNotFoundError(f"read_cifar10: {meta_path} not found (expected the python-pickle CIFAR-10 release)")
    try:
        meta = load_data_pickle(meta_path, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as e:
        raise ValueError(f"read_cifar10: {meta_path} is not a CIFAR-10 batches.meta pickle ({e})") from e
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        raise ValueError(f"read_cifar10: {meta_path} lacks a non-empty 'label_names' list")
    images, labels = [], []
    for fname in CIFAR_TRAIN_FILES if train else CIFAR_TEST_FILES:
        path = root / fname
        if not path.is_file():
            raise FileNotFoundError(f"read_cifar10: {path} not found")
        try:
            batch = load_data_pickle(path, encoding="bytes")
            data, labs = batch[b"data"], batch[b"labels"]
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"read_cifar10: {path} is not a CIFAR-10 batch with b'data' and b'labels' ({e})") from e
        if len(data) != len(labs):
            raise ValueError(f"read_cifar10: {path} has {len(data)} images but {len(labs)} labels")
        for i, (row, lab) in enumerate(zip(data, labs)):
            row = np.asarray(row)
            if row.size != 3072 or not 0 <= int(lab) < len(names):
                skips.skip(f"{path}[{i}]", f"expected 3072 uint8 values and a label in [0, {len(names)})")
                continue
            images.append(row.astype(np.uint8).reshape(3, 32, 32).transpose(1, 2, 0))
            labels.append(int(lab))
    if not images:
        raise ValueError(f"read_cifar10: no valid image in {root} ({skips.count} skipped)")
    return np.stack(images), np.asarray(labels, dtype=np.int64), names


class ArrayClassification(Dataset):
    """In-memory float images [N, C, H, W] in [0, 1] + labels, with pad-crop(-flip) augmentation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, pad: int = 0, flip: bool = False):
        self.images, self.labels = images, labels
        self.mean, self.std, self.pad, self.flip = mean, std, pad, flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        x = self.images[idx]
        if self.pad or self.flip:
            x = _pad_crop_flip(x, self.pad, self.flip)
        return _normalize(x, self.mean, self.std), int(self.labels[idx])


def load_digits_images(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn digits (values 0..16) -> float [1797, 3, S, S] in [0, 1] (bilinear) and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp_(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(d.target.astype(np.int64))


class ClassificationDataModule(pl.LightningDataModule):
    """One DataModule for ``dataset`` in ``imagenet | cifar10 | digits`` (see the module docstring).

    ``num_classes``, when given, is checked against the classes found (it also feeds the model config).
    """

    DATASETS = ("imagenet", "cifar10", "digits")

    def __init__(
        self,
        dataset: str = "digits",
        data_dir: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int | None = None,
        resize_size: int = 256,
        min_scale: float = 0.08,
        augment: bool = True,
        val_fraction: float = 0.2,
        seed: int = 0,
        pin_memory: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if dataset not in self.DATASETS:
            raise ValueError(f"data.dataset must be one of {list(self.DATASETS)}, got {dataset!r}")
        if dataset != "digits" and not data_dir:
            raise ValueError(f"data.data_dir is required for dataset={dataset!r}")
        self.dataset, self.data_dir = dataset, data_dir
        self.batch_size, self.num_workers, self.pin_memory = int(batch_size), int(num_workers), pin_memory
        self.image_size = image_size or {"imagenet": 224, "cifar10": 32, "digits": 32}[dataset]
        self.resize_size, self.min_scale, self.augment = resize_size, min_scale, augment
        self.val_fraction, self.seed, self.expected_classes = val_fraction, seed, num_classes
        self.per_rank_batch: int | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.skips: list[SkipCounter] = []
        self.classes: list[str] = []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def skipped(self) -> int:
        """Samples skipped so far (undecodable images, malformed CIFAR rows), all splits together."""
        return sum(s.count for s in self.skips)

    def _build(self) -> None:
        if self.dataset == "imagenet":
            tr = ImageFolderClassification(
                self.data_dir, "train", None, self.augment, self.image_size, self.resize_size, self.min_scale
            )
            va = ImageFolderClassification(
                self.data_dir, "val", tr.classes, False, self.image_size, self.resize_size, self.min_scale
            )
            self.classes, self.skips = tr.classes, [tr.skips, va.skips]
        elif self.dataset == "cifar10":
            skips = SkipCounter("cifar10")
            xs, ys = {}, {}
            for split in (True, False):
                img, lab, self.classes = read_cifar10(self.data_dir, split, skips)
                xs[split] = torch.from_numpy(img).permute(0, 3, 1, 2).float().div_(255)
                ys[split] = torch.from_numpy(lab)
            pad, flip = (4, True) if self.augment else (0, False)
            tr = ArrayClassification(xs[True], ys[True], CIFAR_MEAN, CIFAR_STD, pad, flip)
            va = ArrayClassification(xs[False], ys[False], CIFAR_MEAN, CIFAR_STD)
            self.skips = [skips]
        else:
            x, y = load_digits_images(self.image_size)
            if not 0 < self.val_fraction < 1:
                raise ValueError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
            perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed))
            n_val = round(len(y) * self.val_fraction)
            vi, ti = perm[:n_val], perm[n_val:]
            # suite choice [D]: translate-only augmentation (digits are not flip-invariant), 2 px at 32 px
            pad = max(1, self.image_size // 16) if self.augment else 0
            tr = ArrayClassification(x[ti], y[ti], (0.5,) * 3, (0.5,) * 3, pad, False)
            va = ArrayClassification(x[vi], y[vi], (0.5,) * 3, (0.5,) * 3)
            self.classes = [str(i) for i in range(10)]
        if self.expected_classes is not None and self.expected_classes != len(self.classes):
            raise ValueError(
                f"data.num_classes={self.expected_classes} but {self.dataset} at {self.data_dir} has "
                f"{len(self.classes)} classes"
            )
        self.train_set, self.val_set = tr, va

    def setup(self, stage: str | None = None) -> None:
        world = self.trainer.world_size if self.trainer is not None else 1
        self.per_rank_batch = per_rank_batch_size(self.batch_size, world)
        if self.train_set is None:
            self._build()

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        if self.per_rank_batch is None:
            self.setup()
        return DataLoader(
            ds,
            batch_size=self.per_rank_batch,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)
