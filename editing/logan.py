"""LoGAN operators: content modulation, style modulation and the priority mask on a pretrained StyleGAN2.

Zhang, Xu, Shen, "Decorating Your Own Bedroom: Locally Controlling Image Generation with Generative Adversarial
Networks", arXiv 2105.08222. From the paper (abstract, Fig. 1 and Fig. 2 captions): two operators, *content
modulation* and *style modulation*, plus a *priority mask*, act on the intermediate generative features of a
well-trained StyleGAN2 bedroom model to remove, insert, shift and rotate single objects, and to clear out a room
(from a layout prediction) and refurnish it with chosen furniture and styles. No code was released; the exact
operators below are reconstructions (docs/logan.md lists what is from the paper and what is a choice):

- content modulation at one site l: ``F'_l = (1 − M_t) ⊙ F_l(w_tgt) + M_t ⊙ T(F_l(w_src))``, ``M_t = T(M_src)``
  (``T``: integer translation, exact; or bilinear warp for sub-cell shifts and rotations); removal fills the
  hole with layout features of the same image;
- style modulation at the chosen layers: ``M ⊙ layer(x; w_new) + (1 − M) ⊙ layer(x; w_old)``;
- priority mask: ``M_i ← M_i ⊙ Π_{j above i}(1 − M_j)``.

Masks are boolean ``[N, 1, R, R]`` tensors at the image resolution R in target coordinates (paste masks in
source coordinates) and are resized to each site (area + threshold by default). Blends are ``torch.where``, so
an empty edit or a paste of a sample onto itself reproduces the image bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from editing.features import Callback, expand_layers, layer_w_index, receptive_margin, site_resolution, synthesize

FILL_MODES = ("nearest", "mean")
MASK_RESIZE = ("area", "nearest")


# --------------------------------------------------------------------------------------------------- masks
def as_mask(mask: torch.Tensor | np.ndarray, name: str = "mask") -> torch.Tensor:
    """Boolean ``[N, 1, H, W]`` from ``[H, W]``, ``[N, H, W]`` or ``[N, 1, H, W]``."""
    m = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1:
        raise ValueError(f"{name}: expected a [H, W], [N, H, W] or [N, 1, H, W] mask, got shape {tuple(m.shape)}")
    return m.bool()


def resize_mask(mask: torch.Tensor, size: int, mode: str = "area", threshold: float = 0.5) -> torch.Tensor:
    """``[N, 1, size, size]`` boolean: ``area`` = covered fraction ≥ ``threshold``; ``nearest`` = centre pixel."""
    if mode not in MASK_RESIZE:
        raise ValueError(f"logan mask_resize={mode!r}: expected one of {MASK_RESIZE}")
    m = as_mask(mask)
    if m.shape[-1] == size and m.shape[-2] == size:
        return m
    if mode == "nearest":
        return F.interpolate(m.float(), size=(size, size), mode="nearest-exact") > 0.5
    return F.interpolate(m.float(), size=(size, size), mode="area") >= threshold


def resize_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, 1, size, size]`` long label map, centre-pixel sampling (labels are categorical)."""
    lab = labels if labels.ndim == 4 else labels[:, None]
    if lab.shape[-1] == size:
        return lab.long()
    return F.interpolate(lab.double(), size=(size, size), mode="nearest-exact").long()


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square dilation by ``radius`` pixels (a (2r+1)² max filter)."""
    m = as_mask(mask)
    if radius <= 0:
        return m
    return F.max_pool2d(m.float(), 2 * radius + 1, stride=1, padding=radius) > 0.5


def mask_centroid(mask: torch.Tensor) -> torch.Tensor:
    """``[N, 2]`` (row, col) centroid of each sample's mask in pixel-centre coordinates (image centre if empty)."""
    m = as_mask(mask)[:, 0].float()
    h, w = m.shape[-2:]
    rows = torch.arange(h, dtype=torch.float32)[None, :, None] + 0.5
    cols = torch.arange(w, dtype=torch.float32)[None, None, :] + 0.5
    area = m.sum(dim=(1, 2))
    safe = area.clamp(min=1)
    c = torch.stack([(m * rows).sum(dim=(1, 2)) / safe, (m * cols).sum(dim=(1, 2)) / safe], dim=1)
    return torch.where(area[:, None] > 0, c, torch.tensor([h / 2, w / 2]))


def resolve_priority(masks: Sequence[torch.Tensor], priorities: Sequence[float]) -> list[torch.Tensor]:
    """Priority mask: ``M_i ⊙ Π_j (1 − M_j)`` over every j above i (higher priority, or equal and later).

    The resolved masks are disjoint, their union equals the union of the inputs, and an overlap goes to the
    highest priority (ties: the later entry, so a newly added object is in front of an equal one).
    """
    if len(masks) != len(priorities):
        raise ValueError(f"priority mask: {len(masks)} masks but {len(priorities)} priorities")
    ms = list(torch.broadcast_tensors(*[as_mask(m) for m in masks])) if masks else []
    out = []
    for i, m in enumerate(ms):
        keep = m.clone()
        for j, other in enumerate(ms):
            above = priorities[j] > priorities[i] or (priorities[j] == priorities[i] and j > i)
            if j != i and above:
                keep &= ~other
        out.append(keep)
    return out


# ----------------------------------------------------------------------------------------------- transforms
@dataclass(frozen=True)
class Transform:
    """Spatial transform of features and masks: translation ``shift = (dy, dx)`` in image pixels, then a
    rotation by ``angle`` degrees (counter-clockwise on screen) about ``center`` (row, col) in image pixels
    (None: the centroid of the transformed object's mask).
    """

    shift: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    center: tuple[float, float] | None = None

    @property
    def is_identity(self) -> bool:
        return self.shift[0] == 0 and self.shift[1] == 0 and self.angle % 360 == 0


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Integer translation with zero fill: ``out[..., i + dy, j + dx] = x[..., i, j]`` (= ``torch.roll`` where
    nothing wraps around).
    """
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def _integer_cells(t: Transform, scale: float) -> tuple[int, int] | None:
    if t.angle % 360 != 0:
        return None
    dy, dx = t.shift[0] * scale, t.shift[1] * scale
    if abs(dy - round(dy)) > 1e-6 or abs(dx - round(dx)) > 1e-6:
        return None
    return int(round(dy)), int(round(dx))


def warp(x: torch.Tensor, t: Transform, image_size: int, centers: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``t`` to ``x [N, C, h, w]`` (h = w, any resolution): exact integer translation when the shift is a
    whole number of cells and there is no rotation, else a bilinear ``grid_sample`` with zero padding.

    ``centers`` ``[N, 2]`` (row, col, image pixels) is the rotation centre after the shift, per sample.
    """
    if t.is_identity:
        return x
    n, _, h, w = x.shape
    scale = h / image_size
    cells = _integer_cells(t, scale)
    if cells is not None:
        return translate(x, *cells)
    theta = math.radians(t.angle)
    if t.center is not None:
        c = torch.tensor([t.center], dtype=torch.float32).expand(n, 2)
    elif centers is not None:
        c = centers.float()
    else:
        c = torch.tensor([[image_size / 2, image_size / 2]]).expand(n, 2)
    c = c.to(x.device) * scale  # rotation centre in cell units, after the shift
    rows = torch.arange(h, dtype=torch.float32, device=x.device) + 0.5
    cols = torch.arange(w, dtype=torch.float32, device=x.device) + 0.5
    yy, xx = torch.meshgrid(rows, cols, indexing="ij")
    oy = yy[None] - c[:, 0, None, None]
    ox = xx[None] - c[:, 1, None, None]
    # inverse map: rotate the output offset by -angle (y points down, so a counter-clockwise turn on screen
    # is a clockwise one in (row, col)), add the centre, undo the shift
    cos, sin = math.cos(theta), math.sin(theta)
    sy = c[:, 0, None, None] + cos * oy + sin * ox - t.shift[0] * scale
    sx = c[:, 1, None, None] - sin * oy + cos * ox - t.shift[1] * scale
    grid = torch.stack([sx / w * 2 - 1, sy / h * 2 - 1], dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_mask(mask: torch.Tensor, t: Transform, centers: torch.Tensor | None = None) -> torch.Tensor:
    """``t`` applied to a boolean mask at its own resolution (bilinear coverage ≥ 0.5 for non-integer cases)."""
    m = as_mask(mask)
    return warp(m.float(), t, m.shape[-1], centers) >= 0.5


def rotation_centers(mask: torch.Tensor, t: Transform) -> torch.Tensor:
    """Rotation centre per sample: ``t.center`` or the mask centroid moved by the shift."""
    if t.center is not None:
        return torch.tensor([t.center], dtype=torch.float32).expand(as_mask(mask).shape[0], 2)
    return mask_centroid(mask) + torch.tensor([t.shift], dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ removal
def estimate_layout(
    labels: torch.Tensor, layout_ids: Sequence[int], hole: torch.Tensor, sampling: Sequence[float] = (1.0, 1.0)
) -> torch.Tensor:
    """Layout class behind every pixel, ``[N, 1, H, W]`` long, -1 where not a fill source or target.

    Visible layout pixels (label in ``layout_ids``, outside the hole) keep their label; hole pixels take the
    label of the nearest visible layout pixel (distance transform with (row, col) pixel spacing ``sampling``: a
    column spacing below 1 prefers horizontal neighbours, so a wall/floor boundary continues across the hole).
    The paper clears the room "based on layout prediction" (Fig. 2 caption); this rule stands in for its layout
    network.
    """
    lab = labels if labels.ndim == 4 else labels[:, None]
    hole = as_mask(hole).expand_as(lab)
    ids = torch.tensor(sorted({int(i) for i in layout_ids}), dtype=torch.long)
    visible = torch.isin(lab.long(), ids) & ~hole
    out = torch.where(visible, lab.long(), torch.full_like(lab.long(), -1))
    for n in range(lab.shape[0]):
        vis = visible[n, 0].cpu().numpy()
        if not vis.any():
            continue
        ii, jj = _nearest_index(vis, sampling)
        nearest = lab[n, 0].long().cpu()[ii, jj]
        out[n, 0] = torch.where(hole[n, 0].cpu(), nearest, out[n, 0].cpu()).to(out.device)
    return out


def _nearest_index(sources: np.ndarray, sampling: Sequence[float] = (1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of the nearest ``True`` pixel of ``sources`` for every pixel."""
    _, (ii, jj) = ndimage.distance_transform_edt(~sources, sampling=tuple(sampling), return_indices=True)
    return torch.from_numpy(ii), torch.from_numpy(jj)


def fill_holes(
    x: torch.Tensor,
    hole: torch.Tensor,
    layout: torch.Tensor | None = None,
    mode: str = "nearest",
    sampling: Sequence[float] = (1.0, 1.0),
) -> torch.Tensor:
    """Replace ``x [N, C, h, w]`` inside ``hole [N, 1, h, w]`` by features of the same image's layout.

    ``layout [N, 1, h, w]`` gives the layout class of every cell (-1: not layout). A hole cell of class c takes
    the feature of the nearest non-hole cell of class c (``nearest``) or the mean feature of those cells
    (``mean``); without a layout, or when class c has no visible cell, any non-hole cell of a layout class (or
    at last any non-hole cell) is used. ``sampling``: (row, col) spacing of the distance, as
    :func:`estimate_layout`.
    """
    if mode not in FILL_MODES:
        raise ValueError(f"logan fill={mode!r}: expected one of {FILL_MODES}")
    hole = as_mask(hole).to(x.device)
    if hole.shape[-1] != x.shape[-1]:
        raise ValueError(f"fill_holes: hole {tuple(hole.shape)} does not match features {tuple(x.shape)}")
    out = x.clone()
    for n in range(x.shape[0]):
        hn = hole[min(n, hole.shape[0] - 1), 0]
        if not hn.any():
            continue
        ln = None if layout is None else layout[min(n, layout.shape[0] - 1), 0].to(x.device)
        todo = hn.clone()
        groups: list[tuple[torch.Tensor, torch.Tensor]] = []
        if ln is not None:
            for c in torch.unique(ln[hn]).tolist():
                if c < 0:
                    continue
                src = (ln == c) & ~hn
                if src.any():
                    tgt = hn & (ln == c)
                    groups.append((tgt, src))
                    todo &= ~tgt
            any_layout = (ln >= 0) & ~hn
            if todo.any() and any_layout.any():
                groups.append((todo.clone(), any_layout))
                todo = torch.zeros_like(todo)
        if todo.any():
            groups.append((todo, ~hn))
        for tgt, src in groups:
            if not src.any():
                continue
            if mode == "mean":
                feat = x[n][:, src].mean(dim=1)
                out[n][:, tgt] = feat[:, None].expand(-1, int(tgt.sum()))
            else:
                ii, jj = _nearest_index(src.cpu().numpy(), sampling)
                ii, jj = ii.to(x.device), jj.to(x.device)
                out[n][:, tgt] = x[n][:, ii[tgt], jj[tgt]]
    return out


# -------------------------------------------------------------------------------------- content modulation
@dataclass
class Paste:
    """One object pasted at the content site.

    ``mask``: the object in source coordinates ``[N, 1, R, R]``; ``features`` / ``skip``: the source's outputs at
    the content site and at its block (RGB skip image), or None for the target's own (move within the image);
    ``transform`` places the object; ``priority`` orders overlapping objects.
    """

    mask: torch.Tensor
    features: torch.Tensor | None = None
    skip: torch.Tensor | None = None
    transform: Transform = Transform()
    priority: float = math.inf

    def placed_mask(self) -> torch.Tensor:
        """The object's mask in target coordinates (``M_t = T(M_src)``)."""
        return warp_mask(self.mask, self.transform, rotation_centers(self.mask, self.transform))

    def centers(self) -> torch.Tensor:
        return rotation_centers(self.mask, self.transform)


@dataclass
class ContentEdit:
    """Content modulation at ``site``: fill ``hole`` with layout features, then paste objects in priority order.

    ``occluders`` are (mask, priority) pairs of objects of the target that stay in place: a paste below them is
    hidden where they overlap. ``blend_skip`` applies the same replacement to the RGB skip image of the site's
    block (otherwise the low-resolution colours of the old content show through).
    """

    site: str
    hole: torch.Tensor | None = None
    layout: torch.Tensor | None = None
    fill: str = "nearest"
    sampling: tuple[float, float] = (1.0, 1.0)
    pastes: list[Paste] = field(default_factory=list)
    occluders: list[tuple[torch.Tensor, float]] = field(default_factory=list)
    blend_skip: bool = True
    mask_resize: str = "area"
    threshold: float = 0.5

    def resolved_masks(self) -> list[torch.Tensor]:
        """Placed paste masks after the priority mask (target coordinates, image resolution)."""
        placed = [p.placed_mask() for p in self.pastes]
        prios = [p.priority for p in self.pastes] + [float(p) for _, p in self.occluders]
        resolved = resolve_priority(placed + [as_mask(m) for m, _ in self.occluders], prios)
        return resolved[: len(self.pastes)]

    def changed_region(self) -> torch.Tensor:
        """Union of the hole and the resolved paste masks (image resolution)."""
        parts = ([as_mask(self.hole)] if self.hole is not None else []) + self.resolved_masks()
        if not parts:
            raise ValueError("content edit without a hole or a paste changes nothing")
        out = parts[0]
        for p in parts[1:]:
            out = out | p
        return out

    def apply(self, x: torch.Tensor, image_size: int, skip: bool = False) -> torch.Tensor:
        """The edited tensor (features at the site, or the block's RGB skip image when ``skip``)."""
        size = x.shape[-1]
        own = x
        out = x
        if self.hole is not None:
            hole = resize_mask(self.hole, size, self.mask_resize, self.threshold).to(x.device)
            layout = None if self.layout is None else resize_labels(self.layout, size)
            out = fill_holes(out, hole, layout, self.fill, self.sampling)
        resolved = self.resolved_masks()
        order = sorted(range(len(self.pastes)), key=lambda i: (self.pastes[i].priority, i))
        for i in order:
            p = self.pastes[i]
            src = p.skip if skip else p.features
            src = own if src is None else src.to(x.device, x.dtype)
            if src.shape[-1] != size:
                raise ValueError(f"paste source at resolution {src.shape[-1]}, content site at {size}")
            moved = warp(src, p.transform, image_size, p.centers())
            m = resize_mask(resolved[i], size, self.mask_resize, self.threshold).to(x.device)
            out = torch.where(m, moved, out)
        return out

    def callbacks(self, G: nn.Module) -> dict[str, list[Callback]]:
        """Hooks on the content site (features) and, with ``blend_skip``, on its block (RGB skip image)."""
        image_size = int(G.synthesis.img_resolution)

        def on_layer(module, args, kwargs, output):
            if isinstance(output, tuple):
                x, img = output
                img = self.apply(img, image_size, skip=True) if (self.blend_skip and img is not None) else img
                return self.apply(x, image_size), img
            return self.apply(output, image_size)

        cbs: dict[str, list[Callback]] = {self.site: [on_layer]}
        block = self.site.split(".")[0]
        if self.blend_skip and block != self.site:

            def on_block(module, args, kwargs, output):
                x, img = output
                return (x, img) if img is None else (x, self.apply(img, image_size, skip=True))

            cbs.setdefault(block, []).append(on_block)
        return cbs


def capture_source(G: nn.Module, ws: torch.Tensor, site: str, noise_mode: str = "const") -> dict[str, torch.Tensor]:
    """The source sample's image, its features at ``site`` and its block's RGB skip image (for pastes)."""
    block = site.split(".")[0]
    img, cap = synthesize(G, ws, capture=[site, block], noise_mode=noise_mode)
    out = cap[site]
    features = out[0] if isinstance(out, tuple) else out
    return {"image": img, "features": features, "skip": cap[block][1]}


# ---------------------------------------------------------------------------------------- style modulation
@dataclass
class StyleRegion:
    """Spatially varying style: inside ``mask`` the ``layers`` (names or blocks) use the styles ``ws`` instead of
    the target's; ``strength`` < 1 interpolates between the old and the new w.
    """

    mask: torch.Tensor
    ws: torch.Tensor
    layers: Sequence[str]
    strength: float = 1.0


def style_callbacks(
    G: nn.Module, regions: Sequence[StyleRegion], mask_resize: str = "area", threshold: float = 0.5
) -> dict[str, list[Callback]]:
    """Hooks that re-run each chosen modulated layer with the new w and blend: ``M ⊙ layer(x; w_new) +
    (1 − M) ⊙ layer(x; w_old)`` (noise, bias and activation are the same on both sides).
    """
    index = layer_w_index(G)
    cbs: dict[str, list[Callback]] = {}
    for region in regions:
        for name in expand_layers(G, region.layers):
            k = index[name]

            def hook(module, args, kwargs, output, region=region, k=k):
                x, w_old = args[0], args[1]
                w_new = region.ws[:, k].to(w_old.device, w_old.dtype)
                if region.strength != 1.0:
                    w_new = w_old.lerp(w_new, region.strength)
                new = module.forward(x, w_new, *args[2:], **kwargs)
                m = resize_mask(region.mask, new.shape[-1], mask_resize, threshold).to(new.device)
                return torch.where(m, new, output)

            cbs.setdefault(name, []).append(hook)
    return cbs


# ---------------------------------------------------------------------------------------------- rendering
@dataclass
class LoganEdit:
    """Everything applied in one synthesis pass: content modulation (optional) and style regions."""

    content: ContentEdit | None = None
    styles: list[StyleRegion] = field(default_factory=list)
    mask_resize: str = "area"
    threshold: float = 0.5

    def changed_region(self) -> torch.Tensor:
        parts = [self.content.changed_region()] if self.content is not None else []
        parts += [as_mask(s.mask) for s in self.styles]
        if not parts:
            raise ValueError("LoGAN edit without content or style changes nothing")
        out = parts[0]
        for p in parts[1:]:
            out = out | p
        return out

    def margin(self, G: nn.Module) -> int:
        """Pixels the changes may spread beyond ``changed_region``: receptive field of the earliest edited site
        plus one cell of the coarsest edited site (area-threshold masks may cover a cell partly outside).
        """
        sites = ([self.content.site] if self.content is not None else []) + [
            name for s in self.styles for name in expand_layers(G, s.layers)
        ]
        R = int(G.synthesis.img_resolution)
        return max(receptive_margin(G, s) + R // site_resolution(G, s) for s in sites)


def render(G: nn.Module, ws: torch.Tensor, edit: LoganEdit | None = None, noise_mode: str = "const") -> torch.Tensor:
    """Synthesise ``ws`` with ``edit`` applied (style hooks first, then content modulation on the same site)."""
    if noise_mode not in ("const", "none"):
        raise ValueError(
            f"logan noise_mode={noise_mode!r}: expected 'const' or 'none' (edits re-run layers and paste features "
            "from other passes; random noise would differ between them)"
        )
    callbacks: dict[str, list[Callback]] = {}
    if edit is not None:
        for site, cbs in style_callbacks(G, edit.styles, edit.mask_resize, edit.threshold).items():
            callbacks.setdefault(site, []).extend(cbs)
        if edit.content is not None:
            for site, cbs in edit.content.callbacks(G).items():
                callbacks.setdefault(site, []).extend(cbs)
    img, _ = synthesize(G, ws, edits=callbacks, noise_mode=noise_mode)
    return img
