"""RGB-D pairs (DepthGAN, arXiv 2202.08553): RGB image + 16-bit PNG depth, from a zip or a folder.

Depth is stored as uint16 and normalised as the original, d = (v - 30000) / 30000
(VivianSZF/depthgan datasets/rgbd_dataset.py). The uint16 scaling of the monocular depth is not published;
the suite's rules are :data:`DEPTH_RULES` (recorded in ``dataset.json`` by ``experiments/extract_depth.py``).

Layout (zip or folder)::

    dataset.json   {"pairs": [["rgb/000000.jpg", "depth/000000.png"], ...], "depth": {<scaling record>}}
    rgb/...        JPEG or PNG, any size (centre-cropped and resized to ``resolution``)
    depth/...      16-bit grayscale PNG, same size as its RGB image

``RGBDDataset`` serves float32 [4, R, R] items (RGB in [-1, 1], normalised depth); ``RGBDDataModule`` wraps it
with a train / validation split written once to a split file and reused.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import PIL.Image

from datamodules.base import GANDataModule, ImageDataset
from datamodules.images import RESIZE_FILTERS, TRANSFORMS, _Reader, decode_image, open_reader, preprocess
from datamodules.side_files import side_file

log = logging.getLogger(__name__)

DEPTH_OFFSET = 30000.0
DEPTH_SCALE = 30000.0
DEPTH_MAX_CODE = 60000
DEPTH_RULES = ("minmax", "fixed")
DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
SPLITS = ("train", "val", "all")


def encode_depth_uint16(depth: np.ndarray, rule: str = "minmax", depth_range=(0.8, 6.95)) -> np.ndarray:
    """Depth (larger = farther) -> uint16 codes in [0, 60000], so that :func:`normalize_depth` gives [-1, 1].

    ``minmax`` (suite default, choice [X]): per image, min -> 0 and max -> 60000 (a constant image -> 0).
    ``fixed``: ``depth_range`` = (near, far) -> (0, 60000), values outside clipped (metric depth kept up to
    scale and offset).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if not np.all(np.isfinite(depth)):
        raise ValueError("encode_depth_uint16: depth has non-finite values")
    if rule == "minmax":
        lo, hi = float(depth.min()), float(depth.max())
    elif rule == "fixed":
        lo, hi = (float(v) for v in depth_range)
        if not hi > lo:
            raise ValueError(f"encode_depth_uint16: depth_range must be (near, far) with far > near, got {depth_range}")
        depth = np.clip(depth, lo, hi)
    else:
        raise ValueError(f"depth rule must be one of {DEPTH_RULES}, got {rule!r}")
    if hi <= lo:
        return np.zeros(depth.shape, np.uint16)
    return np.round((depth - lo) / (hi - lo) * DEPTH_MAX_CODE).astype(np.uint16)


def normalize_depth(codes: np.ndarray) -> np.ndarray:
    """uint16 depth codes -> float32 (v - 30000) / 30000, as VivianSZF/depthgan datasets/rgbd_dataset.py."""
    return ((np.asarray(codes, dtype=np.float32) - DEPTH_OFFSET) / DEPTH_SCALE).astype(np.float32)


def to_rgbd(rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] + normalised depth [H, W] -> float32 [H, W, 4], RGB as x / 127.5 - 1."""
    if rgb.shape[:2] != depth.shape[:2]:
        raise ValueError(f"to_rgbd: RGB {rgb.shape[:2]} and depth {depth.shape[:2]} sizes differ")
    out = np.empty((*depth.shape[:2], 4), np.float32)
    out[..., :3] = rgb.astype(np.float32) / 127.5 - 1
    out[..., 3] = depth
    return out


def decode_depth(data: bytes) -> np.ndarray:
    """16-bit grayscale PNG bytes -> uint16 [H, W]; any other mode (8-bit, RGB) is an error."""
    with PIL.Image.open(io.BytesIO(data)) as img:
        img.load()
        if img.mode not in DEPTH_MODES:
            raise ValueError(f"depth must be a 16-bit grayscale PNG, got PIL mode {img.mode!r}")
        arr = np.asarray(img)
    if arr.dtype != np.uint16:
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"depth values must lie in 0..65535, got {arr.min()}..{arr.max()}")
        arr = arr.astype(np.uint16)
    return arr


def encode_depth_png(codes: np.ndarray) -> bytes:
    """uint16 [H, W] -> 16-bit grayscale PNG bytes."""
    if codes.dtype != np.uint16 or codes.ndim != 2:
        raise ValueError(f"encode_depth_png: expected uint16 [H, W], got {codes.dtype} {codes.shape}")
    buf = io.BytesIO()
    PIL.Image.fromarray(codes).save(buf, format="png")
    return buf.getvalue()


def preprocess_depth(
    codes: np.ndarray, resolution: int, transform: str = "center-crop", resize_filter: str = "bilinear"
):
    """uint16 depth [H, W] -> float32 codes [R, R]: the same crop as the RGB, then a float resize (no rounding)."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if resize_filter not in RESIZE_FILTERS:
        raise ValueError(f"depth_resize_filter must be one of {sorted(RESIZE_FILTERS)}, got {resize_filter!r}")
    h, w = codes.shape
    if transform == "center-crop":
        crop = min(h, w)
        codes = codes[(h - crop) // 2 : (h + crop) // 2, (w - crop) // 2 : (w + crop) // 2]
    out = codes.astype(np.float32)
    if out.shape != (resolution, resolution):
        img = PIL.Image.fromarray(out, mode="F").resize((resolution, resolution), RESIZE_FILTERS[resize_filter])
        out = np.asarray(img, dtype=np.float32)
    return out


def _common_folder(names: list[str]) -> str:
    """The deepest folder holding all ``names`` ("" or "a/b/")."""
    if not names:
        return ""
    common = posixpath.commonpath([posixpath.dirname(n) for n in names])
    return f"{common}/" if common else ""


def _stem(name: str, prefix: str) -> str:
    return str(PurePosixPath(name[len(prefix) :]).with_suffix(""))


def _pair_by_stem(rgb: list[str], depth: list[str], rgb_prefix: str = "", depth_prefix: str = ""):
    """Pairs whose stems (path after the prefix, without extension) agree, plus the unpaired names."""
    by_stem = {_stem(d, depth_prefix): d for d in depth}
    pairs, unpaired = [], []
    used = set()
    for r in rgb:
        d = by_stem.get(_stem(r, rgb_prefix))
        if d is None:
            unpaired.append((r, "no depth map with the same name"))
        else:
            pairs.append((r, d))
            used.add(d)
    unpaired += [(d, "depth map without an RGB image") for d in depth if d not in used]
    return pairs, unpaired


def find_pairs(reader: _Reader, pairs_file: str | os.PathLike | None = None):
    """(pairs [(rgb, depth)], unpaired [(name, reason)], depth record or None) of a zip or folder.

    Pairing, first match wins: ``pairs_file`` or the source's ``dataset.json`` with ``"pairs": [[rgb, depth],
    ...]`` (the suite's format, written by ``experiments/extract_depth.py``); the same file with the original's
    ``"rgb_paths"`` / ``"depth_paths"`` lists, paired by the path below each list's common folder, without
    extension (the original pairs the sorted lists by position, so one missing file shifts every later pair);
    else ``rgb/*`` and ``depth/*.png`` paired by the path below those folders. Listed files absent from the
    source are unpaired.
    """
    where = str(pairs_file) if pairs_file is not None else f"{reader.path}/dataset.json"
    if pairs_file is not None:
        meta = json.loads(Path(pairs_file).read_text())
    else:
        meta = reader.labels_json()
    names = reader.names()
    present = set(names)
    if isinstance(meta, dict) and ("pairs" in meta or "rgb_paths" in meta):
        if "pairs" in meta:
            listed = meta["pairs"]
            if not isinstance(listed, list) or not all(isinstance(p, list | tuple) and len(p) == 2 for p in listed):
                raise ValueError(f"{where}: 'pairs' must be a list of [rgb_path, depth_path]")
            candidates, unpaired = [(str(r), str(d)) for r, d in listed], []
        else:
            rgb, depth = meta.get("rgb_paths"), meta.get("depth_paths")
            if not isinstance(rgb, list) or not isinstance(depth, list):
                raise ValueError(f"{where}: 'rgb_paths' and 'depth_paths' must both be lists of file names")
            rgb, depth = sorted(map(str, rgb)), sorted(map(str, depth))
            candidates, unpaired = _pair_by_stem(rgb, depth, _common_folder(rgb), _common_folder(depth))
        pairs = []
        for r, d in candidates:
            missing = [n for n in (r, d) if n not in present]
            if missing:
                unpaired.append((r, f"listed in {Path(where).name} but {missing[0]!r} is not in the data"))
            else:
                pairs.append((r, d))
        record = meta.get("depth")
    else:
        rgb = [n for n in names if n.startswith("rgb/")]
        depth = [n for n in names if n.startswith("depth/") and n.lower().endswith(".png")]
        if not rgb and not depth:
            raise FileNotFoundError(
                f"{reader.path}: no RGB-D pairs: expected {where} with 'pairs' (or 'rgb_paths'/'depth_paths'), "
                "or the folders rgb/ and depth/"
            )
        pairs, unpaired = _pair_by_stem(rgb, depth, "rgb/", "depth/")
        record = None
    pairs.sort()
    return pairs, unpaired, record


def split_pairs(names: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Suite split rule, choice [X]: the last ``val_fraction`` of the sorted names (at least one) is validation."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(names)
    n_val = 0 if val_fraction == 0 or len(ordered) < 2 else max(1, round(len(ordered) * val_fraction))
    return ordered[: len(ordered) - n_val], ordered[len(ordered) - n_val :]


def load_or_write_split(names: list[str], val_fraction: float, split_file: Path) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` from ``split_file`` if it exists (reused as is), else drawn and written.

    The file lists pair names (the RGB paths), so a split is the same images on every machine.
    """
    if split_file.is_file():
        data = json.loads(split_file.read_text())
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("train"), list)
            or not isinstance(data.get("val"), list)
        ):
            raise ValueError(f"split file {split_file}: expected {{'train': [...], 'val': [...]}}")
        if data.get("val_fraction") != val_fraction:
            raise ValueError(
                f"split file {split_file} was written with val_fraction={data.get('val_fraction')}, the config asks "
                f"{val_fraction}; delete it or set data.split_file to another path"
            )
        present = set(names)
        missing = [n for n in data["train"] + data["val"] if n not in present]
        if missing:
            raise FileNotFoundError(
                f"split file {split_file} names {len(missing)} pairs absent from the dataset, e.g. {missing[:3]}"
            )
        extra = len(present) - len(data["train"]) - len(data["val"])
        if extra:
            log.warning(
                "split file %s: %d pairs of the dataset are in neither split and are not used", split_file, extra
            )
        log.info("reusing split file %s (%d train, %d val)", split_file, len(data["train"]), len(data["val"]))
        return {"train": data["train"], "val": data["val"]}
    train, val = split_pairs(names, val_fraction)
    split_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = split_file.with_name(f"{split_file.name}.tmp{os.getpid()}")
    record = {
        "val_fraction": val_fraction,
        "rule": "last val_fraction of the sorted pair names",
        "train": train,
        "val": val,
    }
    tmp.write_text(json.dumps(record, indent=0))
    os.replace(tmp, split_file)
    log.info("wrote split file %s (%d train, %d val)", split_file, len(train), len(val))
    return {"train": train, "val": val}


def default_split_file(path: str | os.PathLike, val_fraction: float, cache_dir: str | os.PathLike | None) -> Path:
    """``<dataset>.split_val<fraction>.json`` next to the data, or under ``cache_dir`` when that folder is
    read-only (``datamodules.side_files``); else an error naming ``data.split_file``."""
    p = Path(path)
    return side_file(p.parent / f"{p.name}.split_val{val_fraction:g}.json", cache_dir, "data.split_file")


class RGBDDataset(ImageDataset):
    """RGB-D pairs of a zip or folder (:func:`find_pairs`) as float32 [4, R, R]: RGB x / 127.5 - 1, depth
    (v - 30000) / 30000 (VivianSZF/depthgan datasets/rgbd_dataset.py).

    ``split``: ``train`` | ``val`` | ``all``, from the split file (:func:`load_or_write_split`). Unpaired files
    are counted in ``skips`` when the dataset is built; pairs that fail to decode (corrupt file, 8-bit depth,
    RGB and depth of different sizes) are counted and replaced by the next pair. ``xflip`` mirrors RGB and depth
    together (the original flips only the RGB). Crop and resize: RGB as :func:`datamodules.images.preprocess`,
    depth cropped alike and resized in float (:func:`preprocess_depth`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        resolution: int | None = None,
        split: str = "train",
        val_fraction: float = 0.01,
        split_file: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        pairs_file: str | os.PathLike | None = None,
        xflip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        subset_file: str | os.PathLike | None = None,
        transform: str = "center-crop",
        resize_filter: str = "lanczos",
        depth_resize_filter: str = "bilinear",
        name: str | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        preprocess_depth(np.zeros((1, 1), np.uint16), 1, transform, depth_resize_filter)  # validates both
        self.reader = open_reader(path)
        pairs, unpaired, self.depth_record = find_pairs(self.reader, pairs_file)
        if not pairs:
            raise FileNotFoundError(f"dataset {path}: no RGB-D pairs found ({len(unpaired)} unpaired files)")
        self.depth_of = dict(pairs)
        names = [r for r, _ in pairs]
        self.split, self.val_fraction = split, float(val_fraction)
        self.split_file = Path(split_file) if split_file else default_split_file(path, self.val_fraction, cache_dir)
        if split != "all":
            names = load_or_write_split(names, self.val_fraction, self.split_file)[split]
            if not names:
                raise ValueError(f"dataset {path}: split {split!r} of {self.split_file} is empty")
        self.transform, self.resize_filter, self.depth_resize_filter = transform, resize_filter, depth_resize_filter
        if resolution is None:
            resolution = self._first_resolution(names)
        if subset_file is None and max_images is not None:
            p = Path(path)
            subset_file = side_file(
                p.parent / f"{p.name}.{split}.subset{max_images}_seed{seed}.json", cache_dir, "data.subset_file"
            )
        super().__init__(
            name or f"{Path(path).stem}_{split}",
            names,
            None,
            resolution,
            4,
            xflip=xflip,
            max_images=max_images,
            seed=seed,
            subset_file=subset_file,
        )
        for name_, reason in unpaired:
            self.skips.skip(name_, f"unpaired: {reason}")

    def _first_resolution(self, names: list[str]) -> int:
        for n in names[:100]:
            try:
                return int(min(decode_image(self.reader.read(n), 3).shape[:2]))
            except Exception:  # probe the next one; real skips are counted in __getitem__
                continue
        raise ValueError(f"dataset {self.reader.path}: none of the first 100 RGB images could be decoded")

    def _load_raw(self, raw_idx: int) -> np.ndarray:
        rgb_name = self.raw_names[raw_idx]
        rgb = decode_image(self.reader.read(rgb_name), 3)
        codes = decode_depth(self.reader.read(self.depth_of[rgb_name]))
        if rgb.shape[:2] != codes.shape:
            raise ValueError(f"RGB {rgb.shape[1]}x{rgb.shape[0]} and depth {codes.shape[1]}x{codes.shape[0]} differ")
        rgb = preprocess(rgb, self.resolution, self.transform, self.resize_filter)
        depth = preprocess_depth(codes, self.resolution, self.transform, self.depth_resize_filter)
        return to_rgbd(rgb, normalize_depth(depth))

    def identity(self) -> dict[str, Any]:
        h = hashlib.sha256("\n".join(f"{r}\0{self.depth_of[r]}" for r in self.raw_names).encode()).hexdigest()
        return {
            **super().identity(),
            "source": self.reader.identity(),
            "split": self.split,
            "val_fraction": self.val_fraction,
            "pairs_sha256": h,
            "transform": self.transform,
            "resize_filter": self.resize_filter,
            "depth_resize_filter": self.depth_resize_filter,
            "depth_record": self.depth_record,
        }


class RGBDDataModule(GANDataModule):
    """LSUN bedroom/kitchen RGB-D (any zip or folder of pairs): batches ``(rgbd float32 [N, 4, R, R], c [N, 0])``.

    ``batch_size`` is the GLOBAL batch. Training uses ``train_split`` (with ``max_images`` / ``xflip``); the
    metric reference set (``reference_dataset('full')``) is ``reference_split`` (default ``val``: the original
    scores against all images of its test annotation). ``prepare_data`` writes the split file once (rank 0).
    """

    def __init__(
        self,
        path: str,
        resolution: int | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        train_split: str = "train",
        reference_split: str = "val",
        val_fraction: float = 0.01,
        split_file: str | None = None,
        cache_dir: str | None = None,
        pairs_file: str | None = None,
        xflip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        subset_seed: int = 0,
        subset_file: str | None = None,
        transform: str = "center-crop",
        resize_filter: str = "lanczos",
        depth_resize_filter: str = "bilinear",
        name: str | None = None,
        pin_memory: bool = True,
        label_dim: int | None = None,
        num_channels: int | None = None,
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
        self.train_split, self.reference_split = train_split, reference_split
        self.kwargs = dict(
            resolution=resolution,
            val_fraction=val_fraction,
            split_file=split_file,
            cache_dir=cache_dir,
            pairs_file=pairs_file,
            transform=transform,
            resize_filter=resize_filter,
            depth_resize_filter=depth_resize_filter,
        )
        self.name = name
        self.xflip, self.max_images, self.subset_seed, self.subset_file = xflip, max_images, subset_seed, subset_file

    def prepare_data(self) -> None:
        """Write the split (and subset) file once, on one process, before the ranks build their datasets."""
        self.build_dataset(full=False)

    def build_dataset(self, full: bool) -> RGBDDataset:
        if full:
            name = f"{self.name}_{self.reference_split}" if self.name else None
            return RGBDDataset(self.path, split=self.reference_split, name=name, **self.kwargs)
        return RGBDDataset(
            self.path,
            split=self.train_split,
            xflip=self.xflip,
            max_images=self.max_images,
            seed=self.subset_seed,
            subset_file=self.subset_file,
            name=f"{self.name}_{self.train_split}" if self.name else None,
            **self.kwargs,
        )
