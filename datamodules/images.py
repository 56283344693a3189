"""Image datasets over the formats users have: image folder, stylegan2-ada zip (+ dataset.json), LSUN LMDB.

``ImageFolderDataset(path, resolution, ...)`` picks the reader from the path (directory, ``*.zip``, or an LMDB
directory holding ``data.mdb``) and serves uint8 CHW images + float labels, as NVlabs stylegan2-ada-pytorch
``training/dataset.py``.
``ImageDataModule`` wraps it for FFHQ / LSUN / AFHQ training with the ``InfiniteSampler``.
Preprocessing (``transform`` none / center-crop, resize filter) is NVIDIA's
``dataset_tool.py``; FFHQ-256 must use the box filter to reproduce the paper FIDs [R].
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from datamodules.base import GANDataModule, ImageDataset, labels_to_matrix
from datamodules.side_files import side_file

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
RESIZE_FILTERS = {
    "box": PIL.Image.BOX,
    "nearest": PIL.Image.NEAREST,
    "bilinear": PIL.Image.BILINEAR,
    "bicubic": PIL.Image.BICUBIC,
    "lanczos": PIL.Image.LANCZOS,
}
TRANSFORMS = ("none", "center-crop")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N")


def decode_image(data: bytes, num_channels: int | None = None) -> np.ndarray:
    """Encoded bytes -> HWC uint8 with ``num_channels`` (1 or 3; None: 1 for grayscale sources, else 3).

    16-bit grayscale (PIL modes ``I;16*`` and ``I``, e.g. 16-bit PNG) is scaled 0..65535 -> 0..255 (x / 257,
    rounded) instead of PIL's clipping to 255, which turns most of such an image white.
    """
    if num_channels not in (None, 1, 3):
        raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
    with PIL.Image.open(io.BytesIO(data)) as img:
        img.load()
        if num_channels is None:
            num_channels = 1 if img.mode in GRAY_MODES else 3
        if img.mode == "I" or img.mode.startswith("I;16"):
            wide = np.asarray(img).astype(np.float64)
            arr = np.clip(np.round(wide / 257), 0, 255).astype(np.uint8)[:, :, None]
            return arr if num_channels == 1 else np.repeat(arr, 3, axis=2)
        img = img.convert("L" if num_channels == 1 else "RGB")
        arr = np.asarray(img)
    return arr[:, :, None] if arr.ndim == 2 else arr


def image_mode(data: bytes) -> str:
    """PIL mode of an encoded image, from its header only (no pixel decoding)."""
    with PIL.Image.open(io.BytesIO(data)) as img:
        return img.mode


def preprocess(img: np.ndarray, resolution: int, transform: str = "none", resize_filter: str = "lanczos"):
    """HWC uint8 -> square ``resolution`` image as NVIDIA's dataset_tool (resize, or center-crop first)."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if resize_filter not in RESIZE_FILTERS:
        raise ValueError(f"resize_filter must be one of {sorted(RESIZE_FILTERS)}, got {resize_filter!r}")
    h, w, c = img.shape
    if transform == "center-crop":
        crop = min(h, w)
        img = img[(h - crop) // 2 : (h + crop) // 2, (w - crop) // 2 : (w + crop) // 2]
    if img.shape[0] != resolution or img.shape[1] != resolution:
        pil = PIL.Image.fromarray(img[:, :, 0] if c == 1 else img)
        pil = pil.resize((resolution, resolution), RESIZE_FILTERS[resize_filter])
        img = np.asarray(pil).reshape(resolution, resolution, c)
    return np.ascontiguousarray(img)


class _Reader:
    """A source of encoded images by name; opened lazily per process (safe with DataLoader workers)."""

    kind = "?"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = None
        self._pid = None
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def labels_json(self) -> Any:
        """The parsed ``dataset.json`` or None when the source has none."""
        return None

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_handle", "_pid", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._handle, self._pid, self._lock = None, None, threading.Lock()


class FolderReader(_Reader):
    """Recursive image folder; names are relative POSIX paths, sorted."""

    kind = "folder"

    def names(self) -> list[str]:
        out = []
        for root, _dirs, files in os.walk(self.path):
            for f in files:
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    out.append(Path(root, f).relative_to(self.path).as_posix())
        return sorted(out)

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def labels_json(self) -> Any:
        f = self.path / "dataset.json"
        return json.loads(f.read_text()) if f.is_file() else None

    def identity(self) -> dict[str, Any]:
        h = hashlib.sha256()
        for n in self.names():
            st = (self.path / n).stat()
            h.update(f"{n}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        lj = self.path / "dataset.json"
        if lj.is_file():
            h.update(lj.read_bytes())
        return {"kind": self.kind, "path": str(self.path.resolve()), "files_sha256": h.hexdigest()}


class ZipReader(_Reader):
    """stylegan2-ada zip (uncompressed PNGs, optional ``dataset.json``)."""

    kind = "zip"

    def _zip(self) -> zipfile.ZipFile:
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._handle

    def names(self) -> list[str]:
        return sorted(n for n in self._zip().namelist() if n.lower().endswith(IMAGE_EXTENSIONS))

    def read(self, name: str) -> bytes:
        with self._lock:
            return self._zip().read(name)

    def labels_json(self) -> Any:
        if "dataset.json" not in self._zip().namelist():
            return None
        return json.loads(self.read("dataset.json"))

    def identity(self) -> dict[str, Any]:
        h = hashlib.sha256()
        for info in sorted(self._zip().infolist(), key=lambda i: i.filename):
            h.update(f"{info.filename}\0{info.CRC}\0{info.file_size}\n".encode())
        st = self.path.stat()
        return {
            "kind": self.kind,
            "path": str(self.path.resolve()),
            "size": st.st_size,
            "content_sha256": h.hexdigest(),
        }


class LmdbReader(_Reader):
    """LSUN LMDB export: key -> encoded image (webp/jpeg/png); names are the decoded keys, sorted."""

    kind = "lmdb"

    def _env(self):
        if self._handle is None or self._pid != os.getpid():
            import lmdb

            self._handle = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False, max_readers=64)
            self._pid = os.getpid()
        return self._handle

    def names(self) -> list[str]:
        with self._env().begin(write=False) as txn:
            return sorted(k.decode("latin-1") for k in txn.cursor().iternext(keys=True, values=False))

    def read(self, name: str) -> bytes:
        with self._env().begin(write=False) as txn:
            data = txn.get(name.encode("latin-1"))
        if data is None:
            raise KeyError(f"LMDB {self.path}: key {name!r} not found")
        return bytes(data)

    def identity(self) -> dict[str, Any]:
        st = (self.path / "data.mdb").stat()
        env = self._env()
        return {
            "kind": self.kind,
            "path": str(self.path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "entries": env.stat()["entries"],
        }


def open_reader(path: str | os.PathLike) -> _Reader:
    """Pick the reader from the path: ``*.zip`` file, LMDB directory (``data.mdb``), or image folder."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset path {p} does not exist (expected a folder, a .zip or an LMDB dir)")
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise ValueError(f"dataset file {p} is not a zip archive (expected the stylegan2-ada zip format)")
        return ZipReader(p)
    if (p / "data.mdb").is_file():
        return LmdbReader(p)
    return FolderReader(p)


def parse_labels(reader: _Reader, names: list[str], use_labels: bool) -> np.ndarray | None:
    """``dataset.json`` labels in ``names`` order; None if unconditional. Errors name the file and key."""
    if not use_labels:
        return None
    where = f"{reader.path}/dataset.json"
    data = reader.labels_json()
    if data is None:
        raise FileNotFoundError(
            f"use_labels=true but {reader.path} has no dataset.json (expected {{'labels': [[name, label]]}})"
        )
    labels = data.get("labels") if isinstance(data, dict) else None
    if labels is None:
        raise ValueError(f"use_labels=true but {where} has 'labels': null or no 'labels' key")
    table = {str(n).replace("\\", "/"): v for n, v in labels}
    missing = [n for n in names if n not in table]
    if missing:
        raise KeyError(f"{where}: {len(missing)} images have no label, e.g. {missing[:3]}")
    return labels_to_matrix([table[n] for n in names], where)


class ImageFolderDataset(ImageDataset):
    """One Dataset for folder / zip / LMDB sources (as NVIDIA's ``training/dataset.py``).

    ``resolution=None`` takes the size of the first image (which must be square). Images of another size are
    brought to ``resolution`` with ``transform`` and ``resize_filter``; undecodable images are skipped,
    counted and replaced by the next image. ``num_channels`` (1 or 3) converts every image; None takes the
    first image's. The default ``max_images`` subset file goes next to the data, or under ``cache_dir`` when
    that folder is read-only.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        resolution: int | None = None,
        use_labels: bool = False,
        xflip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        subset_file: str | os.PathLike | None = None,
        transform: str = "none",
        resize_filter: str = "lanczos",
        num_channels: int | None = None,
        name: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.reader = open_reader(path)
        names = self.reader.names()
        if not names:
            raise FileNotFoundError(f"dataset {path}: no images found (extensions {IMAGE_EXTENSIONS})")
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        if resize_filter not in RESIZE_FILTERS:
            raise ValueError(f"resize_filter must be one of {sorted(RESIZE_FILTERS)}, got {resize_filter!r}")
        self.transform, self.resize_filter = transform, resize_filter
        if resolution is None or num_channels is None:
            first = self._first_decodable(names, num_channels)
            num_channels = num_channels or first.shape[2]
            if resolution is None:
                if first.shape[0] != first.shape[1] and transform == "none":
                    raise ValueError(
                        f"dataset {path}: first image {first.shape[1]}x{first.shape[0]} is not square; "
                        "set resolution and transform (center-crop)"
                    )
                resolution = min(first.shape[:2])
        labels = parse_labels(self.reader, names, use_labels)
        if subset_file is None and max_images is not None:
            subset_file = default_subset_file(path, max_images, seed, cache_dir)
        super().__init__(
            name or Path(path).stem,
            names,
            labels,
            resolution,
            num_channels,
            xflip=xflip,
            max_images=max_images,
            seed=seed,
            subset_file=subset_file,
        )

    def _first_decodable(self, names: list[str], num_channels: int | None) -> np.ndarray:
        for n in names[:100]:
            try:
                return decode_image(self.reader.read(n), num_channels)
            except Exception:  # probe the next one; real skips are counted in __getitem__
                continue
        raise ValueError(f"dataset {self.reader.path}: none of the first 100 images could be decoded")

    def _load_raw(self, raw_idx: int) -> np.ndarray:
        img = decode_image(self.reader.read(self.raw_names[raw_idx]), self.num_channels)
        return preprocess(img, self.resolution, self.transform, self.resize_filter)

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "source": self.reader.identity(),
            "transform": self.transform,
            "resize_filter": self.resize_filter,
            "labels": self.has_labels,
        }


def default_subset_file(
    path: str | os.PathLike, max_images: int, seed: int, cache_dir: str | os.PathLike | None = None
) -> Path:
    """``<dataset>.subset<N>_seed<S>.json`` next to the dataset (folder, zip or LMDB dir); when that folder is
    read-only, under ``cache_dir`` (``datamodules.side_files``), else an error naming ``data.subset_file``."""
    p = Path(path)
    return side_file(p.parent / f"{p.name}.subset{max_images}_seed{seed}.json", cache_dir, "data.subset_file")


class ImageDataModule(GANDataModule):
    """FFHQ / LSUN / AFHQ (any folder, zip or LMDB): ``batch_size`` is the GLOBAL batch.

    ``num_channels`` (1 or 3), when declared, is what every image is converted to; None takes the first
    image's. ``cache_dir`` receives the subset file when the dataset's folder is read-only.
    """

    def __init__(
        self,
        path: str,
        resolution: int | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        use_labels: bool = False,
        xflip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        subset_seed: int = 0,
        subset_file: str | None = None,
        transform: str = "none",
        resize_filter: str = "lanczos",
        name: str | None = None,
        pin_memory: bool = True,
        label_dim: int | None = None,
        num_channels: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            batch_size,
            num_workers=num_workers,
            seed=seed,
            pin_memory=pin_memory,
            label_dim=label_dim,
            num_channels=num_channels,
        )
        self.path = path
        self.kwargs = dict(
            resolution=resolution,
            use_labels=use_labels,
            transform=transform,
            resize_filter=resize_filter,
            name=name,
            num_channels=num_channels,
        )
        self.cache_dir = cache_dir
        self.xflip, self.max_images, self.subset_file = xflip, max_images, subset_file
        self.subset_seed = subset_seed

    def build_dataset(self, full: bool) -> ImageFolderDataset:
        if full:
            return ImageFolderDataset(self.path, **self.kwargs)
        return ImageFolderDataset(
            self.path,
            xflip=self.xflip,
            max_images=self.max_images,
            seed=self.subset_seed,
            subset_file=self.subset_file,
            cache_dir=self.cache_dir,
            **self.kwargs,
        )
