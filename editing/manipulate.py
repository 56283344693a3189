"""Layer-wise linear edits and their visualisation (zhujiapeng/resefa ``manipulate.py``, zhujiapeng/LowRankGAN
``manipulate.py``).

``w+ = mapping(z)`` (truncated on the first ``truncation_cutoff`` layers), then ``w+_ℓ ← w+_ℓ + α·n`` on the
chosen layers only. Outputs: a PNG grid (rows = samples, columns = α), a self-contained HTML page, and a short
video sweeping α (mp4 through PyAV, or GIF through pillow); logged to W&B when a run is active.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from networks.image_output import save_image_grid, to_hwc, to_uint8

log = logging.getLogger(__name__)


def sample_z(G: torch.nn.Module, num: int, seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """``num`` latent codes from ``np.random.RandomState(seed)`` (the originals' sampling)."""
    z = np.random.RandomState(seed).randn(num, int(G.z_dim))
    return torch.from_numpy(z).float().to(device)


def sample_ws(
    G: torch.nn.Module,
    num: int,
    seed: int,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """``[num, num_ws, w_dim]`` w+ codes, truncated towards ``w_avg`` on the first ``truncation_cutoff``
    layers.
    """
    z = sample_z(G, num, seed, device)
    c_dim = int(getattr(G, "c_dim", 0) or 0)
    c = torch.zeros(num, c_dim, device=device) if c_dim > 0 else None
    with torch.no_grad():
        return G.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)


def edit_ws(
    ws: torch.Tensor, direction: np.ndarray | torch.Tensor, layers: Sequence[int], alphas: Sequence[float]
) -> torch.Tensor:
    """``[N, K, num_ws, w_dim]``: ``ws`` with ``α_k·n`` added on ``layers`` (both originals edit W+ on chosen
    layers only)."""
    num_ws, w_dim = ws.shape[1], ws.shape[2]
    n = torch.as_tensor(np.asarray(direction), dtype=ws.dtype, device=ws.device).reshape(-1)
    if n.numel() != w_dim:
        raise ValueError(f"direction has {n.numel()} entries, expected w_dim={w_dim}")
    bad = [ell for ell in layers if not 0 <= int(ell) < num_ws]
    if bad:
        raise ValueError(f"edit.layers {bad} out of range: the generator has num_ws={num_ws} (valid 0..{num_ws - 1})")
    layer_mask = torch.zeros(num_ws, 1, dtype=ws.dtype, device=ws.device)
    layer_mask[list(int(ell) for ell in layers)] = 1.0
    a = torch.as_tensor(list(alphas), dtype=ws.dtype, device=ws.device)
    return ws[:, None] + a[None, :, None, None] * layer_mask[None, None] * n[None, None, None]


@torch.no_grad()
def render(G: torch.nn.Module, ws: torch.Tensor, noise_mode: str = "const", batch: int = 4) -> torch.Tensor:
    """Synthesise ``ws [..., num_ws, w_dim]`` in batches; images keep the leading shape, values in G's
    range.
    """
    lead = ws.shape[:-2]
    flat = ws.reshape(-1, *ws.shape[-2:])
    imgs = [G.synthesis(flat[i : i + batch], noise_mode=noise_mode) for i in range(0, flat.shape[0], batch)]
    out = torch.cat(imgs)
    return out.reshape(*lead, *out.shape[1:])


def edit_images(
    G: torch.nn.Module,
    ws: torch.Tensor,
    direction: np.ndarray | torch.Tensor,
    layers: Sequence[int],
    alphas: Sequence[float],
    noise_mode: str = "const",
    batch: int = 4,
) -> torch.Tensor:
    """``[N, K, C, H, W]`` edited images for every sample and step."""
    return render(G, edit_ws(ws, direction, layers, alphas), noise_mode, batch)


def display_array(images: torch.Tensor, size: int | None = None) -> np.ndarray:
    """``[..., C, H, W]`` in [-1, 1] -> ``[..., H, W, 3]`` uint8 (grayscale repeated), resized to ``size``."""
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).float()
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = to_hwc(to_uint8(x[:, :3]))
    return x.reshape(*lead, *x.shape[1:])


def save_grid(images: torch.Tensor, path: str | Path, size: int | None = None) -> Path:
    """``[N, K, C, H, W]`` -> one PNG grid (rows samples, columns steps)."""
    arr = torch.from_numpy(display_array(images, size)).movedim(-1, -3)
    return save_image_grid(arr.flatten(0, 1), path, tuple(images.shape[:2]))


def _png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def save_html(
    edits: dict[str, torch.Tensor],
    alphas: Sequence[float | str],
    path: str | Path,
    title: str = "Latent edits",
    size: int | None = 256,
    info: dict | None = None,
) -> Path:
    """Self-contained HTML page: one table per direction, rows = samples, columns = α (images embedded as
    PNG); a string column header is shown as given (e.g. LoGAN's operation names).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>td{padding:2px;text-align:center;font:12px sans-serif}img{display:block}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if info:
        parts.append(
            "<ul>" + "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in info.items())
        )
        parts.append("</ul>")
    for name, images in edits.items():
        arr = display_array(images, size)
        parts.append(f"<h2>{html.escape(name)}</h2><table><tr><th>sample</th>")
        parts.extend(f"<th>{html.escape(a) if isinstance(a, str) else f'&alpha; = {a:+.2f}'}</th>" for a in alphas)
        parts.append("</tr>")
        for i in range(arr.shape[0]):
            cells = "".join(
                f"<td><img src='data:image/png;base64,{_png_b64(arr[i, k])}'></td>" for k in range(arr.shape[1])
            )
            parts.append(f"<tr><td>{i}</td>{cells}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def video_frames(images: torch.Tensor, size: int | None = None) -> list[np.ndarray]:
    """Frames sweeping α forth and back; each frame tiles the samples side by side (even sides for H.264)."""
    arr = display_array(images, size)  # [N, K, H, W, 3]
    n, k, h, w, c = arr.shape
    tiles = arr.transpose(1, 2, 0, 3, 4).reshape(k, h, n * w, c)
    tiles = tiles[:, : h - h % 2, : (n * w) - (n * w) % 2]
    order = list(range(k)) + list(range(k - 2, 0, -1))
    return [np.ascontiguousarray(tiles[i]) for i in order]


def save_video(images: torch.Tensor, path: str | Path, fps: int = 8, size: int | None = None) -> Path:
    """mp4 (PyAV, H.264 if available else MPEG-4) or GIF (pillow), chosen by the file suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = video_frames(images, size)
    if path.suffix == ".gif":
        pil = [Image.fromarray(f) for f in frames]
        pil[0].save(path, save_all=True, append_images=pil[1:], duration=int(1000 / fps), loop=0)
        return path
    if path.suffix != ".mp4":
        raise ValueError(f"edit.video path {path}: expected a .mp4 or .gif suffix")
    import av

    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=fps)
        except (av.FFmpegError, ValueError):
            stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def log_wandb(images: dict[str, Path], videos: dict[str, Path], metrics: dict | None = None) -> bool:
    """Log grids, videos and scalar metrics to the active W&B run; returns False when no run is active."""
    try:
        import wandb
    except ImportError:
        return False
    if wandb.run is None:
        return False
    payload: dict = {f"edit/{k}": wandb.Image(str(v)) for k, v in images.items()}
    payload.update({f"edit/{k}": wandb.Video(str(v), format=v.suffix[1:]) for k, v in videos.items()})
    payload.update({f"edit/{k}": v for k, v in (metrics or {}).items() if isinstance(v, int | float)})
    wandb.log(payload)
    return True
