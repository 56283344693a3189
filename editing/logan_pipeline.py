"""LoGAN operations from a config: remove, move (shift / rotate), insert, restyle, clear out and refurnish.

Each entry of ``logan.operations`` becomes one :class:`editing.logan.LoganEdit` applied to every target sample
(arXiv 2105.08222: Fig. 1 top row = single-object operations, bottom row and Fig. 2 = clear out, refurnish,
restyle). Outputs as for the other editing methods (``editing.manipulate``): a PNG grid (rows = samples,
columns = before + operations), the changed regions over the image, a self-contained before/after HTML page,
masked MSE inside / outside the changed region (dilated by the receptive-field margin), W&B images.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from editing.features import check_site, layer_w_index, layers_after, site_resolution
from editing.logan import (
    ContentEdit,
    LoganEdit,
    Paste,
    StyleRegion,
    Transform,
    as_mask,
    capture_source,
    dilate,
    estimate_layout,
    render,
)
from editing.manipulate import log_wandb, sample_ws, save_grid, save_html
from editing.metrics import masked_mse
from editing.scene_masks import box_masks, class_ids, object_masks

log = logging.getLogger(__name__)

OPERATIONS = ("remove", "move", "insert", "restyle", "clearout", "refurnish")
Parser = Callable[[torch.Tensor], torch.Tensor]


def content_layer(G: torch.nn.Module, layer: str | None) -> str:
    """The content site; None = conv1 of the block at 1/8 of the output size (32² for a 256² model)."""
    if layer is None:
        res = max(4, int(G.synthesis.img_resolution) // 8)
        layer = f"b{res}.conv1"
    return check_site(G, layer)


def style_layers(G: torch.nn.Module, layers: list | None) -> list[str]:
    """Style layers; None = every block from 1/4 of the output size up (64² and up for a 256² model)."""
    if layers is None:
        R = int(G.synthesis.img_resolution)
        return [f"b{r}" for r in G.synthesis.block_resolutions if r >= max(4, R // 4)]
    return [str(v) for v in layers]


class LoganRunner:
    """Builds and renders the configured operations on ``num_samples`` target samples."""

    def __init__(self, G: torch.nn.Module, cfg: Mapping, parser: Parser | None = None, device: str = "cpu"):
        self.G, self.cfg, self.parser, self.device = G, dict(cfg), parser, device
        self.R = int(G.synthesis.img_resolution)
        content, style, masks = dict(cfg["content"]), dict(cfg["style"]), dict(cfg["masks"])
        self.site = content_layer(G, content.get("layer"))
        self.cell = self.R // site_resolution(G, self.site)
        self.content = content
        self.sampling = tuple(float(v) for v in content.get("sampling") or (1.0, 1.0))
        self.style_layers = style_layers(G, style.get("layers"))
        self.style_strength = float(style.get("strength", 1.0))
        table = dict(masks.get("class_ids") or {})
        if not table and parser is not None:
            table = dict(getattr(parser, "class_ids", {}))
        self.class_table = table
        layout_names = list(masks.get("layout_classes") or [])
        self.layout_ids = class_ids(layout_names, table) if (table and layout_names) else []
        self.priority = [str(v) for v in cfg.get("priority") or []]
        self.base = int(cfg.get("box_base", 256))
        self.noise_mode = cfg.get("noise_mode", "const")
        self.mask_resize, self.threshold = cfg.get("mask_resize", "area"), float(cfg.get("mask_threshold", 0.5))
        self._samples: dict[tuple[int, int], dict] = {}

    # ---------------------------------------------------------------------------------------- samples
    def sample(self, seed: int, num: int, target: bool = False) -> dict:
        """``{ws, image, labels}`` of ``num`` samples drawn with ``seed`` (cached); parsers that only know the
        target samples (user label maps) leave other samples unlabelled.
        """
        key = (int(seed), int(num))
        if key not in self._samples:
            c = self.cfg
            ws = sample_ws(self.G, num, seed, c["truncation_psi"], c.get("truncation_layers"), self.device)
            image = render(self.G, ws, None, self.noise_mode)
            parse = self.parser is not None and (target or not getattr(self.parser, "targets_only", False))
            labels = self.parser(image) if parse else None
            self._samples[key] = {"ws": ws, "image": image, "labels": labels, "seed": int(seed)}
        return self._samples[key]

    def source(self, item: Mapping) -> dict:
        """A one-sample source holding the requested object: seeds ``source_seed``, +1, ... (``source_search``)."""
        seed = int(item.get("source_seed", 0))
        search = max(1, int(item.get("source_search", self.cfg.get("source_search", 1))))
        for s in range(seed, seed + search):
            src = self.sample(s, 1)
            mask = self.object_mask(item.get("object") or {}, src)
            if mask.any():
                if "features" not in src:
                    src.update(capture_source(self.G, src["ws"], self.site, self.noise_mode))
                return {**src, "mask": mask}
        raise ValueError(
            f"logan operation: object {dict(item.get('object') or {})} not found in source seeds {seed}..."
            f"{seed + search - 1} (raise source_search or pick another source_seed)"
        )

    # ------------------------------------------------------------------------------------------ masks
    def object_mask(self, spec: Mapping, scene: dict) -> torch.Tensor:
        """``[N, 1, R, R]`` mask of ``object: {class | box, component}`` in ``scene``."""
        n = scene["ws"].shape[0]
        if spec.get("box") is not None:
            return box_masks(list(spec["box"]), n, self.R, self.base).to(self.device)
        if spec.get("class") is None:
            raise ValueError(f"logan object {dict(spec)}: expected 'class' (with a parser) or 'box'")
        if scene["labels"] is None:
            raise ValueError(
                f"logan object class {spec['class']!r} needs a label map: set logan.masks.parser "
                "(palette | label_maps | checkpoint) or select the object by 'box'"
            )
        ids = class_ids(spec["class"], self.class_table)
        return object_masks(scene["labels"], ids, spec.get("component", "largest")).to(self.device)

    def _cells(self, value) -> int:
        return int(self.content.get("dilate", 1) if value is None else value)

    def hole(self, obj: torch.Tensor, scene: dict, dilate_cells: int | None = None) -> torch.Tensor:
        """The removed region: the object dilated by whole content cells; with ``protect_objects`` the dilation
        never takes pixels of another object (layout and unlabelled pixels only).
        """
        hole = dilate(obj, self._cells(dilate_cells) * self.cell)
        if self.content.get("protect_objects", True) and scene["labels"] is not None and self.layout_ids:
            lab = scene["labels"][:, None]
            layout = torch.isin(lab, torch.tensor(self.layout_ids, device=lab.device))
            hole &= ~(~layout & (lab >= 0) & ~obj)
        return hole

    def layout(self, scene: dict, hole: torch.Tensor) -> torch.Tensor | None:
        if scene["labels"] is None or not self.layout_ids:
            return None
        return estimate_layout(scene["labels"], self.layout_ids, hole, self.sampling)

    def class_priority(self, name) -> float:
        """Index in ``logan.priority`` (low → high); unlisted layout classes below, unlisted objects above."""
        if isinstance(name, list | tuple):
            return max(self.class_priority(v) for v in name)
        if str(name) in self.priority:
            return float(self.priority.index(str(name)))
        layout_names = {k for k, v in self.class_table.items() if v in self.layout_ids}
        return -1.0 if str(name) in layout_names else float(len(self.priority))

    def paste_priority(self, item: Mapping) -> float:
        p = item.get("priority", self.cfg.get("paste_priority", "top"))
        if p == "top":
            return math.inf
        if p == "class":
            cls = (item.get("object") or {}).get("class")
            if cls is None:
                raise ValueError(f"logan priority 'class' needs object.class, got object {item.get('object')}")
            return self.class_priority(cls)
        return float(p)

    def occluders(self, scene: dict, exclude: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
        """The target's objects that stay in place, each with its class priority."""
        if scene["labels"] is None:
            return []
        out = []
        for name, cid in self.class_table.items():
            if cid in self.layout_ids:
                continue
            m = (scene["labels"][:, None] == cid) & ~exclude
            if m.any():
                out.append((m, self.class_priority(name)))
        return out

    def transform(self, item: Mapping) -> Transform:
        s = self.R / self.base
        dy, dx = (float(v) * s for v in (item.get("shift") or (0, 0)))
        center = item.get("center")
        return Transform(
            shift=(dy, dx),
            angle=float(item.get("angle", 0.0)),
            center=None if center is None else (float(center[0]) * s, float(center[1]) * s),
        )

    def style_ws(self, seed: int, n: int) -> torch.Tensor:
        return self.sample(int(seed), 1)["ws"].expand(n, -1, -1)

    # ----------------------------------------------------------------------------------------- edits
    def _content(self, **kwargs) -> ContentEdit:
        return ContentEdit(
            site=self.site,
            fill=self.content.get("fill", "nearest"),
            sampling=self.sampling,
            blend_skip=bool(self.content.get("blend_skip", True)),
            mask_resize=self.mask_resize,
            threshold=self.threshold,
            **kwargs,
        )

    def _paste(self, item: Mapping, target: dict) -> tuple[Paste, torch.Tensor]:
        """A paste from another sample, and that sample's w+ (for ``content.source_style``)."""
        src = self.source(item)
        paste = Paste(
            mask=src["mask"],
            features=src["features"],
            skip=src["skip"],
            transform=self.transform(item),
            priority=self.paste_priority(item),
        )
        return paste, src["ws"]

    def _source_styles(self, edit: LoganEdit, sources: list[torch.Tensor], n: int) -> None:
        """With ``content.source_style`` every layer after the content site renders a pasted object with its
        source's styles (an inserted object keeps its appearance); added before any restyle of the object.
        """
        if not self.content.get("source_style", True):
            return
        layers = layers_after(self.G, self.site)
        for ws, mask in zip(sources, edit.content.resolved_masks()):
            edit.styles.append(StyleRegion(mask=mask, ws=ws.expand(n, -1, -1), layers=layers))

    def _clearout(self, op: Mapping, target: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        if target["labels"] is None or not self.layout_ids:
            raise ValueError(
                f"logan {op.get('op')}: clearing a room needs a label map and logan.masks.layout_classes "
                "(set logan.masks.parser)"
            )
        lt = torch.tensor(self.layout_ids, device=target["labels"].device)
        furniture = ~torch.isin(target["labels"][:, None], lt) & (target["labels"][:, None] >= 0)
        hole = dilate(furniture, self._cells(op.get("dilate")) * self.cell)
        return hole, self.layout(target, hole)

    def build(self, op: Mapping, target: dict) -> LoganEdit:
        kind = op.get("op")
        if kind not in OPERATIONS:
            raise ValueError(f"logan operation {op.get('name', kind)!r}: op={kind!r}, expected one of {OPERATIONS}")
        n = target["ws"].shape[0]
        edit = LoganEdit(mask_resize=self.mask_resize, threshold=self.threshold)
        if kind == "remove":
            obj = self.object_mask(op.get("object") or {}, target)
            hole = self.hole(obj, target, op.get("dilate"))
            edit.content = self._content(hole=hole, layout=self.layout(target, hole))
        elif kind == "move":
            obj = self.object_mask(op.get("object") or {}, target)
            hole = self.hole(obj, target, op.get("dilate"))
            paste = Paste(mask=obj, transform=self.transform(op), priority=self.paste_priority(op))
            occ = self.occluders(target, obj) if math.isfinite(paste.priority) else []
            edit.content = self._content(hole=hole, layout=self.layout(target, hole), pastes=[paste], occluders=occ)
        elif kind == "insert":
            paste, ws = self._paste(op, target)
            occ = self.occluders(target, torch.zeros_like(target["image"][:, :1], dtype=torch.bool))
            edit.content = self._content(pastes=[paste], occluders=occ if math.isfinite(paste.priority) else [])
            self._source_styles(edit, [ws], n)
        elif kind == "restyle":
            obj = self.object_mask(op.get("object") or {}, target)
            edit.styles.append(self._style(op, obj, n))
        else:  # clearout / refurnish
            hole, layout = self._clearout(op, target)
            items = [self._paste(item, target) for item in (op.get("items") or [])] if kind == "refurnish" else []
            edit.content = self._content(hole=hole, layout=layout, pastes=[p for p, _ in items])
            self._source_styles(edit, [ws for _, ws in items], n)
            placed = edit.content.resolved_masks()
            for item, mask in zip(op.get("items") or [], placed):
                if item.get("style_seed") is not None:
                    edit.styles.append(self._style(item, mask, n))
            if op.get("room_style_seed") is not None:
                room = torch.ones_like(hole)
                for mask in placed:
                    room &= ~mask
                edit.styles.append(self._style({"style_seed": op["room_style_seed"]}, room, n))
        return edit

    def _style(self, item: Mapping, mask: torch.Tensor, n: int) -> StyleRegion:
        if item.get("style_seed") is None:
            raise ValueError(f"logan restyle: expected style_seed in {dict(item)}")
        layers = item.get("layers") or self.style_layers
        return StyleRegion(
            mask=as_mask(mask),
            ws=self.style_ws(int(item["style_seed"]), n),
            layers=[str(v) for v in layers],
            strength=float(item.get("strength", self.style_strength)),
        )


def _overlay(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Images with the mask tinted red (values in [-1, 1])."""
    red = torch.tensor([1.0, -1.0, -1.0], device=images.device).reshape(1, 3, 1, 1)
    m = as_mask(mask).to(images.device).expand(images.shape[0], 1, *images.shape[-2:])
    return torch.where(m, 0.5 * images[:, :3] + 0.5 * red, images[:, :3])


def run_logan(
    G: torch.nn.Module,
    cfg: Mapping,
    out_dir: str | Path,
    parser: Parser | None = None,
    device: str = "cpu",
    title: str = "LoGAN edits",
) -> dict:
    """Render every operation on the target samples; write grids, HTML and metrics; log to W&B."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = LoganRunner(G, cfg, parser, device)
    ops = list(cfg.get("operations") or [])
    if not ops:
        raise ValueError("logan.operations is empty: expected at least one operation")
    target = runner.sample(int(cfg["seed"]), int(cfg["num_samples"]), target=True)
    before = target["image"]
    columns, images, overlays, metrics = ["before"], [before.cpu()], [before.cpu()], {}
    for i, op in enumerate(ops):
        name = str(op.get("name") or f"{op.get('op')}_{i}")
        edit = runner.build(op, target)
        after = render(G, target["ws"], edit, runner.noise_mode)
        region = edit.changed_region().expand(before.shape[0], 1, runner.R, runner.R)
        margin = edit.margin(G)
        outside = ~dilate(region, margin)
        mse_in, mse_out = [], []
        for k in range(before.shape[0]):
            if outside[k, 0].all() or not outside[k, 0].any():
                continue
            a, b = masked_mse(before[k : k + 1].cpu(), after[k : k + 1].cpu(), (~outside[k, 0]).cpu())
            mse_in.append(float(a))
            mse_out.append(float(b))
        found = int(region.reshape(region.shape[0], -1).any(dim=1).sum())
        changed = int((after != before).reshape(after.shape[0], -1).any(dim=1).sum())
        metrics[name] = {
            "op": op.get("op"),
            "samples_with_region": found,
            "samples_changed": changed,
            "margin_px": margin,
            "mse_in": float(np.mean(mse_in)) if mse_in else None,
            "mse_out": float(np.mean(mse_out)) if mse_out else None,
            "max_abs_out": float((after - before).abs().masked_select(outside.to(after.device)).max())
            if outside.any()
            else 0.0,
        }
        if changed < before.shape[0]:
            log.warning(
                "logan %s: object found in %d and image changed in %d of %d samples (an object thinner than a "
                "content cell vanishes at the content site)",
                name,
                found,
                changed,
                before.shape[0],
            )
        columns.append(name)
        images.append(after.cpu())
        overlays.append(_overlay(before, region).cpu())
    grid = torch.stack(images, dim=1)
    masks = torch.stack(overlays, dim=1)
    size = cfg.get("html_size")
    grids = {
        "logan_grid": save_grid(grid, out_dir / "grid.png", size),
        "logan_masks": save_grid(masks, out_dir / "masks.png", size),
    }
    info = {
        "content layer": runner.site,
        "style layers": runner.style_layers,
        "layer w+ index": {k: v for k, v in layer_w_index(G).items() if k.startswith(runner.site.split(".")[0])},
        "seed": cfg["seed"],
        "truncation_psi": cfg["truncation_psi"],
    }
    html = save_html({"edits": grid, "changed regions": masks}, columns, out_dir / "index.html", title, size, info)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    flat = {f"{n}/{k}": v for n, m in metrics.items() for k, v in m.items() if isinstance(v, int | float)}
    log_wandb(grids, {}, flat)
    return {"grids": grids, "html": html, "metrics": metrics, "columns": columns}
