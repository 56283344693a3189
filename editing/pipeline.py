"""End-to-end editing pipeline used by ``experiments/edit.py`` (docs/editing.md).

``compute_directions``: sample z (seed) → Jacobian per sample (forward mode by default) → region Grams →
per-image factorisation (ReSeFa eigenvectors or LowRankGAN projected directions) → ``.npy`` files named like
the originals. ``run_edits``: truncated w+ samples → layer-wise edits → PNG grids, HTML, video, masked MSE,
W&B.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from editing.jacobian import JacobianEngine, accumulate_grams
from editing.lowrankgan import lowrank_directions
from editing.manipulate import edit_images, log_wandb, sample_ws, save_grid, save_html, save_video
from editing.metrics import MaskedMSE, StageTimer
from editing.resefa import resefa_directions

log = logging.getLogger(__name__)

METHODS = ("resefa", "lowrankgan")


def direction_path(out_dir: Path, region: str, image: int, method: str, projected: bool = False) -> Path:
    """``directions/{region}/image_XX_region_{region}_name_{method}[_projected].npy`` (the originals'
    naming).
    """
    suffix = "_projected" if projected else ""
    return out_dir / "directions" / region / f"image_{image:02d}_region_{region}_name_{method}{suffix}.npy"


def compute_directions(
    G: torch.nn.Module,
    masks: Mapping[str, torch.Tensor],
    out_dir: str | Path,
    method: str = "resefa",
    jacobian: Mapping | None = None,
    resefa: Mapping | None = None,
    lowrank: Mapping | None = None,
    device: str = "cpu",
) -> dict:
    """Directions for every region and Jacobian sample; returns paths, ranks/eigenvalues and timings."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    jac = dict(jacobian or {})
    out_dir = Path(out_dir)
    timer = StageTimer()
    engine = JacobianEngine(
        G,
        space=jac.get("space", "w"),
        size=jac.get("size"),
        reduce=jac.get("reduce", "sum" if method == "resefa" else "mean"),
        resize=jac.get("resize", "nearest"),
        noise_mode=jac.get("noise_mode", "const"),
        truncation_psi=jac.get("truncation_psi", 1.0),
    )
    num = int(jac.get("num_samples", 5))
    z = torch.from_numpy(np.random.RandomState(int(jac.get("seed", 4))).randn(num, int(G.z_dim))).float().to(device)
    with torch.no_grad():
        latents = engine.latent_from_z(z)
    with timer("jacobian"):
        acc = accumulate_grams(
            engine,
            latents,
            masks,
            mode=jac.get("mode", "forward"),
            chunk=int(jac.get("chunk", 32)),
            impl=jac.get("impl", "vmap"),
        )
    (out_dir / "jacobians").mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "jacobians" / "latent_codes.npy", latents.cpu().numpy())
    summary: dict = {"method": method, "space": engine.space, "num_samples": num, "regions": {}}
    for region in masks:
        grams = acc.per_sample[region]
        if jac.get("save_grams", False):
            np.savez(
                out_dir / "jacobians" / f"grams_{region}.npz",
                A=torch.stack([a for a, _ in grams]).numpy(),
                B=torch.stack([b for _, b in grams]).numpy(),
            )
        entries = []
        for i, (A, B) in enumerate(grams):
            path = direction_path(out_dir, region, i, method)
            path.parent.mkdir(parents=True, exist_ok=True)
            with timer("factorise"):
                if method == "resefa":
                    r = dict(resefa or {})
                    dirs, values = resefa_directions(
                        A,
                        B,
                        r.get("solver", "eigh"),
                        bool(r.get("full_rank", False)),
                        float(r.get("tau", 1e-3)),
                    )
                    np.save(path, dirs.astype(np.float32))
                    entries.append({"path": str(path), "eigenvalues_top5": values[:5].tolist()})
                else:
                    lr = dict(lowrank or {})
                    res = lowrank_directions(
                        A,
                        B,
                        lambda_inv=lr.get("lambda_inv", 60),
                        mu_norm=lr.get("mu_norm", "induced"),
                        max_iter=int(lr.get("max_iter", 10000)),
                        tol=float(lr.get("tol", 1e-7)),
                        num_relax=int(lr.get("num_relax", 0)),
                        device=lr.get("device"),
                    )
                    np.save(path, res.raw)
                    proj = direction_path(out_dir, region, i, method, projected=True)
                    np.save(proj, res.projected)
                    entries.append(
                        {
                            "path": str(path),
                            "projected_path": str(proj),
                            "rank_fore": res.rank_fore,
                            "rank_back": res.rank_back,
                            "pcp_iterations": list(res.iterations),
                        }
                    )
        summary["regions"][region] = entries
    num_sets = num * len(masks)
    summary["seconds"] = dict(timer.seconds)
    summary["seconds_per_direction_set"] = timer.per_direction(num_sets)
    (out_dir / "directions").mkdir(parents=True, exist_ok=True)
    (out_dir / "directions" / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("directions: %s", json.dumps(summary["seconds"]))
    return summary


def load_directions(path: str | Path, start: int = 0, end: int | None = 1) -> np.ndarray:
    """Rows ``start:end`` of a direction file (``[D]`` or ``[K, D]``), as ``[k, D]`` float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"direction file {path} not found (expected a .npy of shape [D] or [K, D])")
    arr = np.load(path)
    arr = arr[None] if arr.ndim == 1 else arr
    if arr.ndim != 2:
        raise ValueError(f"direction file {path}: expected shape [D] or [K, D], got {arr.shape}")
    rows = arr[start:end]
    if rows.shape[0] == 0:
        raise ValueError(f"direction file {path}: rows {start}:{end} are empty (file has {arr.shape[0]} rows)")
    return rows.astype(np.float32)


def run_edits(
    G: torch.nn.Module,
    directions: np.ndarray,
    out_dir: str | Path,
    layers: Sequence[int],
    alphas: Sequence[float],
    num_samples: int = 10,
    seed: int = 0,
    truncation_psi: float = 1.0,
    truncation_layers: int | None = None,
    noise_mode: str = "const",
    batch: int = 4,
    html_size: int | None = 256,
    video: str | None = "mp4",
    fps: int = 8,
    mask: torch.Tensor | None = None,
    device: str = "cpu",
    title: str = "Latent edits",
) -> dict:
    """Render every direction over samples × α; write grids, HTML, video and masked-MSE curves; log to W&B."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ws = sample_ws(G, num_samples, seed, truncation_psi, truncation_layers, device)
    alphas = [float(a) for a in alphas]
    edits: dict[str, torch.Tensor] = {}
    grids: dict[str, Path] = {}
    videos: dict[str, Path] = {}
    metrics: dict = {}
    for k, n in enumerate(directions):
        name = f"direction_{k:02d}"
        images = edit_images(G, ws, n, layers, alphas, noise_mode, batch).cpu()
        edits[name] = images
        grids[name] = save_grid(images, out_dir / f"grid_{name}.png", html_size)
        if video:
            videos[name] = save_video(images, out_dir / f"{name}.{video}", fps, html_size)
        if mask is not None:
            original = edit_images(G, ws, n, layers, [0.0], noise_mode, batch)[:, 0].cpu()
            curve = []
            for j, a in enumerate(alphas):
                metric = MaskedMSE(mask)
                metric.update(original, images[:, j])
                vals = metric.compute()
                curve.append({"alpha": a, "mse_in": float(vals["mse_in"]), "mse_out": float(vals["mse_out"])})
            metrics[name] = curve
    info = {"layers": list(layers), "truncation_psi": truncation_psi, "truncation_layers": truncation_layers}
    save_html(edits, alphas, out_dir / "index.html", title, html_size, info)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    flat = {
        f"{name}/{key}@{c['alpha']:+g}": c[key]
        for name, curve in metrics.items()
        for c in curve
        for key in ("mse_in", "mse_out")
    }
    log_wandb(grids, videos, flat)
    return {"grids": grids, "videos": videos, "html": out_dir / "index.html", "metrics": metrics}
