"""Object masks for LoGAN: label maps from a scene parser, boxes, connected components.

LoGAN takes object masks from a segmentation of the generated image and clears rooms from a layout prediction
(arXiv 2105.08222, Fig. 2 caption); the networks are not named in the available text. Parsers here:

- ``PaletteParser``: the embedded indoor set's colour segmentation (``datamodules.embedded_indoor``), exact on
  images of that set and on generators trained on it (masks known by construction);
- ``LabelMapParser``: user label maps (``.npy`` or ``.png``), one per target sample;
- ``CheckpointParser``: any segmentation ``nn.Module`` the user names (built by the caller, e.g. Hydra
  ``_target_``) with weights read by ``torch.load(weights_only=True)`` (a plain state dict, or a dict holding one
  under ``state_dict`` / ``model``): a checkpoint never runs code.

Boxes use the editing convention of ``editing.regions`` (``[center_row, center_col, height, width]`` on a
``base`` grid, scaled to the image).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from editing.regions import _read_label_map, box_mask

PARSERS = ("none", "palette", "label_maps", "checkpoint")


def box_masks(box: Sequence[int], num: int, size: int, base: int = 256) -> torch.Tensor:
    """``[num, 1, size, size]`` boolean mask of one box (same box for every sample)."""
    return box_mask(box, size, base)[None, None].expand(num, 1, size, size).clone()


def class_ids(names: str | int | Sequence[str | int], table: Mapping[str, int]) -> list[int]:
    """Label ids of class names (or ints) through ``table``."""
    items = [names] if isinstance(names, str | int) else list(names)
    out = []
    for item in items:
        if isinstance(item, int):
            out.append(item)
        elif item in table:
            out.append(int(table[item]))
        else:
            raise KeyError(f"logan object class {item!r}: not in logan.masks.class_ids {sorted(table)}")
    return out


def object_masks(labels: torch.Tensor, ids: Sequence[int], component: str | int = "largest") -> torch.Tensor:
    """``[N, 1, H, W]`` mask of the pixels labelled ``ids``, reduced to one connected component per sample.

    ``component``: ``all`` (every pixel of the classes), ``largest`` or an int k (the k-th largest component,
    8-connectivity). A sample without such pixels gets an empty mask.
    """
    lab = labels if labels.ndim == 3 else labels[:, 0]
    hit = torch.isin(lab.long(), torch.tensor(list(ids), dtype=torch.long, device=lab.device))
    if component == "all":
        return hit[:, None]
    k = 0 if component == "largest" else int(component)
    out = torch.zeros_like(hit)
    for n in range(hit.shape[0]):
        comp, count = ndimage.label(hit[n].cpu().numpy(), structure=np.ones((3, 3)))
        if count <= k:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        pick = int(np.argsort(-sizes, kind="stable")[k]) + 1
        out[n] = torch.from_numpy(comp == pick).to(hit.device)
    return out[:, None]


class PaletteParser:
    """Class maps of images of the embedded indoor set by palette colour (``segment_by_palette``)."""

    def __init__(self, tolerance: float | None = None):
        from datamodules.embedded_indoor import CLASS_ID, PALETTE_TOLERANCE, segment_by_palette

        self.class_ids = dict(CLASS_ID)
        self.tolerance = PALETTE_TOLERANCE if tolerance is None else tolerance
        self._segment = segment_by_palette

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self._segment(images.float().clamp(-1, 1), self.tolerance).long()


class LabelMapParser:
    """User label maps for the target samples: file i is sample i (``.npy`` integer array or ``.png``).

    Insert / refurnish sources are other samples: with this parser they are selected by box.
    """

    targets_only = True

    def __init__(self, paths: Sequence[str]):
        if not paths:
            raise ValueError("logan.masks.label_maps: expected one label map file per target sample")
        self.paths = [str(p) for p in paths]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, size = images.shape[0], images.shape[-1]
        if len(self.paths) < n:
            raise ValueError(f"logan.masks.label_maps: {len(self.paths)} files for {n} target samples")
        maps = []
        for path in self.paths[:n]:
            if not Path(path).is_file():
                raise FileNotFoundError(f"logan.masks.label_maps: {path} not found")
            arr = torch.as_tensor(np.asarray(_read_label_map(path)).astype(np.int64))
            if arr.ndim != 2:
                raise ValueError(f"label map {path}: expected a 2-D array of class ids, got shape {tuple(arr.shape)}")
            maps.append(F.interpolate(arr[None, None].double(), size=(size, size), mode="nearest-exact")[0, 0].long())
        return torch.stack(maps)


def load_state_dict(path: str | Path, strip_prefix: str = "") -> dict[str, torch.Tensor]:
    """Weights of a segmentation checkpoint, read with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"logan.masks.checkpoint.path: {path} not found")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # the safe unpickler rejects anything but tensors and plain containers
        raise ValueError(
            f"{path}: not a plain-weights checkpoint ({type(e).__name__}: {str(e)[:200]}); expected a state dict "
            "(or a dict with it under 'state_dict' / 'model') readable by torch.load(weights_only=True)"
        ) from e
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or one under 'state_dict' / 'model')")
    if strip_prefix:
        data = {k[len(strip_prefix) :] if k.startswith(strip_prefix) else k: v for k, v in data.items()}
    return data


class CheckpointParser:
    """A segmentation network: ``module(x) -> logits [N, K, h, w]`` (or a dict with ``out``), argmax per pixel.

    Input: the generated image mapped to [0, 1], resized to ``input_size`` (None: as is), normalised by
    ``mean`` / ``std``; the label map is resized back (nearest) to the image size.
    """

    def __init__(
        self,
        module: nn.Module,
        path: str | Path,
        input_size: int | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        strip_prefix: str = "",
        device: str | torch.device = "cpu",
    ):
        state = load_state_dict(path, strip_prefix)
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{path}: weights do not fit {type(module).__name__}: {str(e)[:400]}") from e
        self.module = module.to(device).eval().requires_grad_(False)
        self.input_size = input_size
        self.mean = torch.tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[-1]
        x = (images.float().clamp(-1, 1) + 1) / 2
        if self.input_size is not None and self.input_size != size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = ((x - self.mean.to(x.device)) / self.std.to(x.device)).to(self.device)
        logits = self.module(x)
        if isinstance(logits, dict):
            logits = logits["out"]
        labels = logits.argmax(dim=1, keepdim=True).double()
        return F.interpolate(labels, size=(size, size), mode="nearest-exact")[:, 0].long().to(images.device)
