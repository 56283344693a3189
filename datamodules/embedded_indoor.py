"""Embedded procedural indoor set: ray-cast box rooms with exact depth, class labels and instance ids.

The offline default of the indoor methods (DepthGAN, arXiv 2202.08553; LoGAN, arXiv 2105.08222), standing in
for LSUN bedroom/kitchen with LeReS depth. Everything is numpy, a few ms per 64x64 room.

- Room: an axis-aligned box (floor y = 0, ceiling y = height, walls at x = +-width/2, z = 0 and z = -depth) in a
  right-handed room frame (x right, y up, z towards the viewer). Furniture: axis-aligned boxes standing on the
  floor, one or more boxes per instance (a bed is a base and a headboard, a table a top and four legs ...).
- Camera: OpenCV pinhole (x right, y down, z forward) near the front wall, random yaw / downward pitch / height;
  intrinsics ``K = [[f, 0, R/2], [0, f, R/2], [0, 0, 1]]`` with pixel (i, j) centred at (j + 0.5, i + 0.5);
  default ``f = 260 * R / 256`` (DepthGAN's fixed focal at 256 px, VivianSZF/depthgan
  runners/losses/depthgan_loss.py, i.e. a 52.4 degree field of view at every resolution).
- ``depth`` is the exact z of the first hit along each pixel-centre ray (metres along the optical axis).
- Colour: a fixed base colour per class (:data:`PALETTE`) times a shade in :data:`SHADE_RANGE` (half-Lambert
  light from a random direction, a small falloff with depth, floor planks). Shading scales brightness only, so
  :func:`segment_by_palette` recovers the class of every pixel from its colour, also in generated images.

API::

    scene = render_room(np.random.default_rng(0), 64)     # IndoorScene: rgb, depth, labels, instances, K, ...
    labels = segment_by_palette(scene.rgb)                # == scene.labels
    dm = EmbeddedIndoorDataModule(modality="rgbd", resolution=64, batch_size=32)   # GLOBAL batch
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from datamodules.base import GANDataModule, ImageDataset
from datamodules.rgbd import DEPTH_RULES, encode_depth_uint16, normalize_depth, to_rgbd

INDOOR_CLASSES = ("wall", "floor", "ceiling", "bed", "table", "cabinet", "lamp", "chair", "sofa")
LAYOUT_CLASSES = ("wall", "floor", "ceiling")
CLASS_ID = {name: i for i, name in enumerate(INDOOR_CLASSES)}
# Base colours (uint8 RGB), chosen so that the shaded segments {s * colour : s in SHADE_RANGE} of any two
# classes are at least 81 apart (Euclidean, uint8 units): a colour error below 40 cannot change the class.
PALETTE = np.array(
    [
        (185, 230, 120),  # wall
        (125, 75, 15),  # floor
        (200, 195, 255),  # ceiling
        (50, 80, 220),  # bed
        (250, 0, 85),  # table
        (30, 170, 60),  # cabinet
        (255, 250, 0),  # lamp
        (185, 45, 210),  # chair
        (5, 215, 215),  # sofa
    ],
    dtype=np.uint8,
)
SHADE_RANGE = (0.6, 1.0)
PALETTE_TOLERANCE = 40.0
UNLABELLED = -1
GENERATOR_VERSION = 1
DEFAULT_FOCAL_AT_256 = 260.0

_FURNITURE_WEIGHTS = {"bed": 0.18, "table": 0.2, "cabinet": 0.2, "lamp": 0.14, "chair": 0.16, "sofa": 0.12}
_AGAINST_WALL = ("bed", "cabinet", "lamp", "sofa")
_CAMERA_CLEARANCE = 0.9  # metres (floor plan) between the camera and any furniture


@dataclass(frozen=True)
class IndoorScene:
    """One rendered room.

    ``rgb`` uint8 [H, W, 3]; ``depth`` float32 [H, W] (metres along the optical axis); ``labels`` int64 [H, W]
    (index into :data:`INDOOR_CLASSES`); ``instances`` int64 [H, W] (0 = layout, 1..K furniture);
    ``instance_classes`` int64 [K + 1] (class of each instance, -1 for the layout); ``intrinsics`` float64
    [3, 3]; ``cam_to_world`` float64 [4, 4] (OpenCV camera -> room frame).
    """

    rgb: np.ndarray
    depth: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    instance_classes: np.ndarray
    intrinsics: np.ndarray
    cam_to_world: np.ndarray

    @property
    def focal(self) -> float:
        return float(self.intrinsics[0, 0])


@dataclass(frozen=True)
class _Box:
    lo: np.ndarray  # [3] room frame
    hi: np.ndarray
    instance: int
    label: int


def default_focal(resolution: int) -> float:
    """DepthGAN's f = 260 px at 256 px scaled to ``resolution`` (same field of view at every size)."""
    return DEFAULT_FOCAL_AT_256 * resolution / 256


def _camera(rng: np.random.Generator, width: float, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre and rotation (columns: right, down, forward in the room frame)."""
    centre = np.array([rng.uniform(-0.2, 0.2) * width, rng.uniform(1.2, 1.6), -rng.uniform(0.2, 0.5)])
    yaw = math.radians(rng.uniform(-25, 25))
    pitch = math.radians(rng.uniform(-15, -4))
    forward = np.array([-math.sin(yaw) * math.cos(pitch), math.sin(pitch), -math.cos(yaw) * math.cos(pitch)])
    right = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
    down = np.cross(forward, right)
    return centre, np.stack([right, down, forward], axis=1)


def _local_parts(kind: str, rng: np.random.Generator) -> tuple[float, float, list[tuple[float, ...]]]:
    """Footprint (w along the wall, d away from it) and parts (u0, u1, v0, v1, y0, y1) of one piece."""
    if kind == "bed":
        w, d, h = rng.uniform(1.4, 1.9), rng.uniform(1.9, 2.2), rng.uniform(0.4, 0.55)
        return w, d, [(0, w, 0, d, 0, h), (0, w, 0, 0.08, 0, rng.uniform(0.9, 1.2))]
    if kind == "cabinet":
        w, d = rng.uniform(0.6, 1.4), rng.uniform(0.4, 0.6)
        return w, d, [(0, w, 0, d, 0, rng.uniform(0.8, 2.0))]
    if kind == "sofa":
        w, d = rng.uniform(1.6, 2.2), rng.uniform(0.8, 1.0)
        return w, d, [(0, w, 0, d, 0, 0.42), (0, w, 0, 0.2, 0, rng.uniform(0.8, 0.9))]
    if kind == "lamp":
        s, h = rng.uniform(0.3, 0.4), rng.uniform(1.3, 1.7)
        c0, c1 = s / 2 - 0.025, s / 2 + 0.025
        return s, s, [(c0, c1, c0, c1, 0, h - 0.3), (0, s, 0, s, h - 0.3, h)]
    if kind == "table":
        w, d, h = rng.uniform(0.8, 1.4), rng.uniform(0.6, 0.9), rng.uniform(0.7, 0.75)
        legs = [(u, u + 0.06, v, v + 0.06, 0, h - 0.05) for u in (0.02, w - 0.08) for v in (0.02, d - 0.08)]
        return w, d, [(0, w, 0, d, h - 0.05, h), *legs]
    if kind == "chair":
        s, h = 0.45, rng.uniform(0.42, 0.47)
        legs = [(u, u + 0.04, v, v + 0.04, 0, h - 0.05) for u in (0.01, s - 0.05) for v in (0.01, s - 0.05)]
        return s, s, [(0, s, 0, s, h - 0.05, h), (0, s, 0, 0.06, h, h + rng.uniform(0.4, 0.5)), *legs]
    raise ValueError(f"unknown furniture kind {kind!r}; expected one of {sorted(_FURNITURE_WEIGHTS)}")


def _to_room(part: tuple[float, ...], origin: tuple[float, float], wall: str, room: tuple[float, float]):
    """Local (u along the wall, v into the room) box -> room-frame (lo, hi); ``origin`` = (u0, v0) offset."""
    u0, u1, v0, v1, y0, y1 = part
    ou, ov = origin
    width, depth = room
    u0, u1, v0, v1 = u0 + ou, u1 + ou, v0 + ov, v1 + ov
    if wall == "back":  # u -> x, v -> +z from z = -depth
        x, z = (u0, u1), (-depth + v0, -depth + v1)
    elif wall == "left":  # u -> -z, v -> +x from x = -width/2
        x, z = (-width / 2 + v0, -width / 2 + v1), (-u1, -u0)
    elif wall == "right":  # u -> -z, v -> -x from x = +width/2
        x, z = (width / 2 - v1, width / 2 - v0), (-u1, -u0)
    else:  # "front": free-standing, u -> x, v -> -z
        x, z = (u0, u1), (-v1, -v0)
    return np.array([x[0], y0, z[0]]), np.array([x[1], y1, z[1]])


def _furnish(rng: np.random.Generator, room: tuple[float, float], count: int, camera: np.ndarray) -> list[_Box]:
    """Place up to ``count`` pieces without overlap (0.05 m gap) and away from the camera."""
    width, depth = room
    kinds = list(_FURNITURE_WEIGHTS)
    probs = np.array([_FURNITURE_WEIGHTS[k] for k in kinds])
    footprints: list[tuple[float, float, float, float]] = []
    boxes: list[_Box] = []
    have_bed = False
    for _ in range(count):
        kind = kinds[int(rng.choice(len(kinds), p=probs / probs.sum()))]
        if kind == "bed" and have_bed:
            kind = "table"
        w, d, parts = _local_parts(kind, rng)
        for _attempt in range(20):
            if kind in _AGAINST_WALL:
                wall = ("back", "left", "right")[int(rng.integers(3))]
                along = width if wall == "back" else depth
                if w > along - 0.2:
                    continue
                ou = rng.uniform(0.1, along - w - 0.1) - (width / 2 if wall == "back" else 0)
                ov = 0.0 if kind != "lamp" else rng.uniform(0.05, 0.3)
            else:
                wall = "front"
                if w > width - 0.6 or d > depth - 0.6:
                    continue
                ou = rng.uniform(-width / 2 + 0.3, width / 2 - 0.3 - w)
                ov = rng.uniform(0.3, depth - 0.3 - d)
            lo, hi = _to_room((0, w, 0, d, 0, 1), (ou, ov), wall, room)
            rect = (lo[0] - 0.05, hi[0] + 0.05, lo[2] - 0.05, hi[2] + 0.05)
            clear = all(rect[1] <= f[0] or f[1] <= rect[0] or rect[3] <= f[2] or f[3] <= rect[2] for f in footprints)
            dx = max(lo[0] - camera[0], 0.0, camera[0] - hi[0])
            dz = max(lo[2] - camera[2], 0.0, camera[2] - hi[2])
            if clear and math.hypot(dx, dz) >= _CAMERA_CLEARANCE:
                footprints.append(rect)
                instance = len(footprints)
                for part in parts:
                    plo, phi = _to_room(part, (ou, ov), wall, room)
                    boxes.append(_Box(plo, phi, instance, CLASS_ID[kind]))
                have_bed |= kind == "bed"
                break
    return boxes


def _hit_room(centre: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Exit distance from inside the room box, hit axis and the sign of the ray along it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dirs > 0, (hi - centre) / dirs, np.where(dirs < 0, (lo - centre) / dirs, np.inf))
    axis = np.argmin(t, axis=1)
    rows = np.arange(len(dirs))
    return t[rows, axis], axis, np.sign(dirs[rows, axis])


def _hit_boxes(centre: np.ndarray, dirs: np.ndarray, boxes: list[_Box]):
    """Nearest box entry distance per ray (inf = none), its box index and entry axis (slab method)."""
    n = len(dirs)
    if not boxes:
        return np.full(n, np.inf), np.zeros(n, np.int64), np.zeros(n, np.int64)
    lo = np.stack([b.lo for b in boxes])[:, None, :]
    hi = np.stack([b.hi for b in boxes])[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t0, t1 = (lo - centre) * inv, (hi - centre) * inv
    tmin, tmax = np.fmin(t0, t1), np.fmax(t0, t1)  # fmin/fmax: a ray parallel to a slab face gives +-inf or nan
    near, far = tmin.max(axis=2), tmax.min(axis=2)
    near = np.where((near <= far) & (near > 1e-9), near, np.inf)  # [B, P]
    best = np.argmin(near, axis=0)
    rows = np.arange(n)
    return near[best, rows], best, np.argmax(tmin[best, rows], axis=1)


def render_room(
    rng: np.random.Generator,
    resolution: int,
    focal: float | None = None,
    num_furniture: tuple[int, int] = (2, 6),
    furnished: bool = True,
) -> IndoorScene:
    """Render one random room at ``resolution`` (square) with exact depth.

    ``focal`` in pixels (None: :func:`default_focal`); ``num_furniture`` = inclusive range of pieces tried;
    ``furnished=False`` draws the same room, camera and light but leaves the furniture out (the empty-room
    counterpart: all furniture draws come after the layout draws).
    """
    if resolution < 4:
        raise ValueError(f"render_room: resolution must be >= 4, got {resolution}")
    f = default_focal(resolution) if focal is None else float(focal)
    width, depth, height = rng.uniform(3.5, 5.0), rng.uniform(3.5, 5.5), rng.uniform(2.5, 3.0)
    centre, rot = _camera(rng, width, depth)
    light = np.array([rng.uniform(-0.6, 0.6), 1.0, rng.uniform(-0.3, 0.8)])
    light /= np.linalg.norm(light)
    count = int(rng.integers(num_furniture[0], num_furniture[1] + 1))
    boxes = _furnish(rng, (width, depth), count, centre) if furnished else []

    c = resolution / 2
    jj, ii = np.meshgrid(np.arange(resolution) + 0.5, np.arange(resolution) + 0.5)
    cam = np.stack([(jj - c) / f, (ii - c) / f, np.ones_like(jj)], axis=-1).reshape(-1, 3)
    dirs = cam @ rot.T  # room-frame directions with unit camera-z: the hit distance is the depth
    room_lo, room_hi = np.array([-width / 2, 0.0, -depth]), np.array([width / 2, height, 0.0])
    t_room, axis_room, sign_room = _hit_room(centre, dirs, room_lo, room_hi)
    label = np.where(axis_room == 1, np.where(sign_room < 0, CLASS_ID["floor"], CLASS_ID["ceiling"]), 0)
    t_box, which, axis_box = _hit_boxes(centre, dirs, boxes)
    on_box = t_box < t_room
    t = np.where(on_box, t_box, t_room)
    axis = np.where(on_box, axis_box, axis_room)
    if boxes:
        label = np.where(on_box, np.array([b.label for b in boxes])[which], label)
        instance = np.where(on_box, np.array([b.instance for b in boxes])[which], 0)
    else:
        instance = np.zeros(len(dirs), np.int64)

    rows = np.arange(len(dirs))
    normal = np.zeros_like(dirs)
    normal[rows, axis] = -np.sign(dirs[rows, axis])
    point = centre + t[:, None] * dirs
    lit = 0.5 + 0.5 * normal @ light - 0.03 * t
    planks = (np.floor(point[:, 0] / 0.2) % 2 - 0.5) * 0.08
    lit = lit + np.where(label == CLASS_ID["floor"], planks, 0.0)
    shade = SHADE_RANGE[0] + (SHADE_RANGE[1] - SHADE_RANGE[0]) * np.clip(lit, 0, 1)
    rgb = np.clip(np.round(PALETTE[label].astype(np.float64) * shade[:, None]), 0, 255).astype(np.uint8)

    n_inst = max((b.instance for b in boxes), default=0)
    inst_classes = np.full(n_inst + 1, -1, np.int64)
    for b in boxes:
        inst_classes[b.instance] = b.label
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rot, centre
    shape = (resolution, resolution)
    return IndoorScene(
        rgb=rgb.reshape(*shape, 3),
        depth=t.reshape(shape).astype(np.float32),
        labels=label.reshape(shape).astype(np.int64),
        instances=instance.reshape(shape).astype(np.int64),
        instance_classes=inst_classes,
        intrinsics=np.array([[f, 0, c], [0, f, c], [0, 0, 1]], dtype=np.float64),
        cam_to_world=pose,
    )


def _palette_distances(rgb: torch.Tensor) -> torch.Tensor:
    """Distance [..., C] from float RGB (0..255) to each class's shaded palette segment."""
    pal = torch.as_tensor(PALETTE, dtype=torch.float64, device=rgb.device)  # [C, 3]
    p = rgb.to(torch.float64)[..., None, :]  # [..., 1, 3]
    s = ((p * pal).sum(-1) / pal.square().sum(-1)).clamp(*SHADE_RANGE)  # best shade per class
    return (p - s[..., None] * pal).norm(dim=-1)


def segment_by_palette(rgb: np.ndarray | torch.Tensor, tolerance: float | None = PALETTE_TOLERANCE):
    """Class map of an image of this set (real or generated) by the nearest shaded palette colour.

    ``rgb``: uint8 numpy [H, W, 3] or [N, H, W, 3] (returns numpy int64 [H, W] / [N, H, W]), or a torch tensor
    [3, H, W] / [N, 3, H, W], float in [-1, 1] (generator output) or uint8 (returns torch int64 on its device).
    A pixel whose distance to the nearest segment {s * PALETTE[k] : s in SHADE_RANGE} exceeds ``tolerance``
    (uint8 units, Euclidean RGB; default 40 = just under half the smallest distance between two classes) is
    :data:`UNLABELLED` (-1); ``tolerance=None`` labels every pixel.
    """
    if isinstance(rgb, np.ndarray):
        if rgb.dtype != np.uint8 or rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
            raise ValueError(
                f"segment_by_palette: numpy input must be uint8 [..., H, W, 3], got {rgb.dtype} {rgb.shape}"
            )
        return segment_by_palette(torch.from_numpy(np.ascontiguousarray(np.moveaxis(rgb, -1, -3))), tolerance).numpy()
    if not isinstance(rgb, torch.Tensor) or rgb.ndim not in (3, 4) or rgb.shape[-3] != 3:
        shape = list(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
        raise ValueError(f"segment_by_palette: expected [3, H, W] or [N, 3, H, W], got {shape}")
    x = rgb.detach()
    x = x.to(torch.float64) if x.dtype == torch.uint8 else (x.to(torch.float64) + 1) * 127.5
    dist = _palette_distances(x.movedim(-3, -1))
    best, label = dist.min(dim=-1)
    if tolerance is not None:
        label = torch.where(best > tolerance, torch.full_like(label, UNLABELLED), label)
    return label


class EmbeddedIndoorDataset(ImageDataset):
    """``num_images`` rooms, room ``i`` drawn from ``default_rng([scene_seed, i])`` (same on every machine).

    ``modality='rgb'``: uint8 [3, H, W] images. ``modality='rgbd'``: float32 [4, H, W] = RGB in [-1, 1] and
    depth normalised as the RGB-D zips (:func:`datamodules.rgbd.normalize_depth` of the uint16 encoding by
    ``depth_rule``), i.e. what the RGB-D reader returns for this scene written to a zip. Labels: none
    (``label_dim`` 0). :meth:`scene` returns the full :class:`IndoorScene` (labels, instances, K) of an item.
    """

    def __init__(
        self,
        resolution: int = 64,
        num_images: int = 2000,
        scene_seed: int = 0,
        modality: str = "rgb",
        depth_rule: str = "minmax",
        depth_range: tuple[float, float] = (0.8, 6.95),
        focal: float | None = None,
        xflip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        if modality not in ("rgb", "rgbd"):
            raise ValueError(f"data.modality must be 'rgb' or 'rgbd', got {modality!r}")
        if depth_rule not in DEPTH_RULES:
            raise ValueError(f"data.depth_rule must be one of {DEPTH_RULES}, got {depth_rule!r}")
        if num_images < 1:
            raise ValueError(f"data.num_images must be >= 1, got {num_images}")
        self.modality, self.scene_seed = modality, int(scene_seed)
        self.depth_rule, self.depth_range = depth_rule, tuple(float(v) for v in depth_range)
        self.focal = default_focal(resolution) if focal is None else float(focal)
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        names = [f"indoor/{i:06d}" for i in range(num_images)]
        super().__init__(
            f"embedded_indoor_{modality}",
            names,
            None,
            resolution,
            3 if modality == "rgb" else 4,
            xflip=xflip,
            max_images=max_images,
            seed=seed,
        )

    def scene(self, raw_idx: int) -> IndoorScene:
        """The rendered room of raw item ``raw_idx`` (before subset / x-flip)."""
        return render_room(np.random.default_rng([self.scene_seed, int(raw_idx)]), self.resolution, self.focal)

    def _load_raw(self, raw_idx: int) -> np.ndarray:
        if self._cache is not None and raw_idx in self._cache:
            return self._cache[raw_idx]
        scene = self.scene(raw_idx)
        if self.modality == "rgb":
            out = scene.rgb
        else:
            v = encode_depth_uint16(scene.depth, self.depth_rule, self.depth_range)
            out = to_rgbd(scene.rgb, normalize_depth(v))
        if self._cache is not None:
            self._cache[raw_idx] = out
        return out

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "generator": f"embedded_indoor/v{GENERATOR_VERSION}",
            "scene_seed": self.scene_seed,
            "focal": self.focal,
            "modality": self.modality,
            "depth_rule": self.depth_rule if self.modality == "rgbd" else None,
            "depth_range": list(self.depth_range) if self.modality == "rgbd" else None,
        }


class EmbeddedIndoorDataModule(GANDataModule):
    """Procedural rooms as RGB (``modality: rgb``, StyleGAN2/LoGAN demos) or RGB-D (``rgbd``, DepthGAN demo).

    ``batch_size`` is the GLOBAL batch. The ``full`` reference set is all ``num_images`` rooms (no subset or
    x-flip). Batches: ``(img uint8 [N, 3, H, W], c [N, 0])`` or ``(rgbd float32 [N, 4, H, W], c [N, 0])``.
    """

    def __init__(
        self,
        modality: str = "rgb",
        resolution: int = 64,
        num_images: int = 2000,
        scene_seed: int = 0,
        depth_rule: str = "minmax",
        depth_range: tuple[float, float] = (0.8, 6.95),
        focal: float | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        xflip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        subset_seed: int = 0,
        cache: bool = True,
        label_dim: int | None = None,
        num_channels: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers=num_workers, seed=seed, label_dim=label_dim, num_channels=num_channels)
        self.kwargs = dict(
            resolution=resolution,
            num_images=num_images,
            scene_seed=scene_seed,
            modality=modality,
            depth_rule=depth_rule,
            depth_range=tuple(depth_range),
            focal=focal,
            cache=cache,
        )
        self.xflip, self.max_images, self.subset_seed = xflip, max_images, subset_seed

    def build_dataset(self, full: bool) -> EmbeddedIndoorDataset:
        if full:
            return EmbeddedIndoorDataset(**self.kwargs)
        return EmbeddedIndoorDataset(xflip=self.xflip, max_images=self.max_images, seed=self.subset_seed, **self.kwargs)
