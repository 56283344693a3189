"""Region masks on the Jacobian grid (zhujiapeng/resefa ``coordinate.py``: boxes on the 256x256 grid).

Boxes are ``[center_row, center_col, height, width]`` on a 256x256 grid. The official indexing
(zhujiapeng/resefa:coordinate.py) is half-open: rows ``[cr - h//2, cr - h//2 + h)``, columns likewise.
``box_mask`` reproduces it exactly at 256 and scales the box edges to any other grid size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

BASE_SIZE = 256

# FFHQ / MetFaces (both repos; eyebrow is ReSeFa only; left_region / point_* are LowRankGAN only).
FFHQ_BOXES: dict[str, tuple[int, int, int, int]] = {
    "left_eye": (120, 95, 20, 38),
    "right_eye": (120, 159, 20, 38),
    "eyes": (120, 128, 20, 115),
    "eyebrow": (126, 105, 15, 118),
    "nose": (142, 131, 40, 46),
    "mouth": (184, 127, 30, 70),
    "chin": (217, 130, 42, 110),
    "left_region": (128, 74, 128, 64),
    "point_eye": (120, 95, 2, 2),
    "point_mouth": (184, 127, 2, 2),
}

# Unaligned FFHQ for StyleGAN3 (ReSeFa).
FFHQU_BOXES: dict[str, tuple[int, int, int, int]] = {
    "eyesr2": (134, 116, 30, 115),
    "eyesr3": (64, 128, 26, 115),
    "eyest0": (70, 88, 30, 115),
    "eyest3": (108, 142, 26, 115),
}

# BigGAN sets (ReSeFa coordinate.py; no released BigGAN pipeline).
BIGGAN_BOXES: dict[str, tuple[int, int, int, int]] = {
    "center0": (120, 120, 80, 80),
    "center1": (120, 120, 130, 130),
    "center2": (120, 120, 200, 200),
    "left_side": (128, 64, 256, 128),
    "top_side": (64, 128, 128, 256),
    "head0": (89, 115, 49, 70),
    "head1": (93, 110, 48, 70),
}

BOXES: dict[str, dict[str, tuple[int, int, int, int]]] = {
    "ffhq": FFHQ_BOXES,
    "metfaces": FFHQ_BOXES,
    "ffhqu": FFHQU_BOXES,
    "biggan": BIGGAN_BOXES,
}

# CelebAMask-HQ 19-class face-parsing labels (LowRankGAN coordinate.py).
CELEBAMASK_LABELS: dict[str, int] = {
    "background": 0,
    "skin": 1,
    "nose": 2,
    "eye_g": 3,
    "l_eye": 4,
    "r_eye": 5,
    "l_brow": 6,
    "r_brow": 7,
    "l_ear": 8,
    "r_ear": 9,
    "mouth": 10,
    "u_lip": 11,
    "l_lip": 12,
    "hair": 13,
    "hat": 14,
    "ear_r": 15,
    "neck_l": 16,
    "neck": 17,
    "cloth": 18,
}


def get_box(name: str, dataset: str = "ffhq") -> tuple[int, int, int, int]:
    """Look up a named box of the originals' table (``coordinate.py``)."""
    if dataset not in BOXES:
        raise KeyError(f"region.dataset={dataset!r}: expected one of {sorted(BOXES)}")
    boxes = BOXES[dataset]
    if name not in boxes:
        raise KeyError(f"region.name={name!r} is not a box of dataset {dataset!r}; expected one of {sorted(boxes)}")
    return boxes[name]


def box_bounds(box: Sequence[int], size: int = BASE_SIZE, base: int = BASE_SIZE) -> tuple[int, int, int, int]:
    """Half-open ``(top, bottom, left, right)`` of a box given on a ``base`` grid, scaled to ``size``.

    At ``size == base`` this is exactly the official ``[cr - h//2, cr - h//2 + h)`` indexing; otherwise the
    edges are
    scaled by ``size / base`` and rounded, clipped to the grid, and at least one pixel is kept.
    """
    if len(box) != 4:
        raise ValueError(f"region.box={list(box)}: expected [center_row, center_col, height, width]")
    cr, cc, h, w = (int(v) for v in box)
    if h <= 0 or w <= 0:
        raise ValueError(f"region.box={list(box)}: height and width must be positive")
    top, left = cr - h // 2, cc - w // 2
    bottom, right = top + h, left + w
    scale = size / base
    edges = [round(v * scale) for v in (top, bottom, left, right)]
    top, bottom, left, right = (min(max(v, 0), size) for v in edges)
    if bottom <= top:
        bottom = min(top + 1, size)
        top = bottom - 1
    if right <= left:
        right = min(left + 1, size)
        left = right - 1
    return top, bottom, left, right


def box_mask(box: Sequence[int], size: int = BASE_SIZE, base: int = BASE_SIZE) -> torch.Tensor:
    """Boolean ``[size, size]`` mask of one box, indexed as ``coordinate.py`` does."""
    top, bottom, left, right = box_bounds(box, size, base)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


def label_mask(label_map: np.ndarray | torch.Tensor, labels: Iterable[int | str], size: int | None = None):
    """Union of face-parsing labels (ints or CelebAMask-HQ names) as a boolean mask, resized (nearest) to
    ``size``.
    """
    lm = torch.as_tensor(np.asarray(label_map))
    if lm.ndim != 2:
        raise ValueError(f"label map: expected a 2-D array of integer labels, got shape {tuple(lm.shape)}")
    ids = []
    for lab in labels:
        if isinstance(lab, str):
            if lab not in CELEBAMASK_LABELS:
                raise KeyError(f"region.labels: unknown label {lab!r}; expected one of {sorted(CELEBAMASK_LABELS)}")
            ids.append(CELEBAMASK_LABELS[lab])
        else:
            ids.append(int(lab))
    if not ids:
        raise ValueError("region.labels: expected at least one label")
    mask = torch.isin(lm.long(), torch.tensor(ids))
    if size is not None and tuple(mask.shape) != (size, size):
        mask = torch.nn.functional.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5
    return mask


def region_mask(
    name: str | None = None,
    box: Sequence[int] | None = None,
    labels: Iterable[int | str] | None = None,
    label_map: np.ndarray | torch.Tensor | str | None = None,
    dataset: str = "ffhq",
    size: int = BASE_SIZE,
    base: int = BASE_SIZE,
) -> torch.Tensor:
    """Build a region mask from a named box, a user box, or labels of a label map (``.npy`` path or array)."""
    if labels is not None:
        if label_map is None:
            raise ValueError("region.labels given without region.label_map (expected a .npy/.png label map path)")
        if isinstance(label_map, str):
            label_map = _read_label_map(label_map)
        mask = label_mask(label_map, labels, size)
    elif box is not None:
        mask = box_mask(box, size, base)
    elif name is not None:
        mask = box_mask(get_box(name, dataset), size, base)
    else:
        raise ValueError("region: expected one of region.name, region.box or region.labels")
    if not mask.any() or mask.all():
        raise ValueError(f"region {name or box or labels}: mask must cover some but not all of the {size}x{size} grid")
    return mask


def _read_label_map(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        return np.load(path)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)
