"""DepthGAN metrics (arXiv 2202.08553, Sec. 4): FID on RGB, FID on depth, rotation consistency (RotEval).

After VivianSZF/depthgan metrics/fid_metric_rgb.py, metrics/fid_metric_depth.py and metrics/rotation_metric.py:

- FID-depth: the generated / real normalised depth is quantised like an image (NVIDIA's clamp(x * 127.5 + 128))
  and fed to the same detector as one channel repeated to three (the original feeds the float depth repeated
  to three channels to Hammer's Inception) [D: the suite's detectors take uint8].
- RotEval: pairs of samples sharing both codes with independent yaws ~ U(yaw_range); view 1 is warped into
  view 2 with :func:`networks.depth_warp.rotation_warp`; results are sum(mask * |z_sampled - z_rot|) / sum(mask)
  and sum(mask * |rgb2_sampled - rgb1|, over channels) / sum(mask), as the original (RGB error summed over the
  three channels per pixel).
- Every number is reported with its protocol record; ``n_fake`` is pinned there (50K by default: the
  original's training-time metrics are the 50K variants, its test script defaults to 1000 fakes).

Fakes for FID come from ``G(z, c, return_depth=True)`` of a :class:`networks.depthgan.DepthGANGenerator` (yaws
drawn from its ``yaw_range``), z / yaw seeded per block of ``batch_size`` by ``(seed, block)`` as
:func:`metrics.evaluation.fake_batches`, so the fake set does not depend on the world size.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from torchmetrics import Metric

from metrics.detectors import detector_info
from metrics.evaluation import _dist, no_tf32, prepare_reals
from metrics.fid import FID
from metrics.protocol import MetricProtocol
from networks.depth_warp import DEFAULT_FOCAL, DEFAULT_Z_OFFSET, rotation_warp
from networks.image_output import to_uint8

CHANNELS = ("rgb", "depth")


def depth_to_uint8(depth: torch.Tensor) -> torch.Tensor:
    """Normalised depth [N, 1, H, W] (or the depth channel of RGB-D [N, 4, H, W]) -> uint8 [N, 1, H, W]."""
    if depth.ndim != 4 or depth.shape[1] not in (1, 4):
        raise ValueError(f"depth_to_uint8: expected [N, 1, H, W] depth or [N, 4, H, W] RGB-D, got {list(depth.shape)}")
    return to_uint8(depth[:, -1:], quantize="nvidia")


class RGBDView(Dataset):
    """One modality of an RGB-D dataset (items float32 [4, H, W]) as uint8 images for the detectors.

    ``channels='rgb'`` -> [3, H, W], ``'depth'`` -> [1, H, W] (the detectors repeat it to three). ``name`` and
    ``identity()`` carry the modality, so the hashed real-statistics cache keeps the two apart.
    """

    def __init__(self, dataset, channels: str) -> None:
        if channels not in CHANNELS:
            raise ValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
        self.dataset, self.channels = dataset, channels
        self.name = f"{dataset.name}-{channels}"

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, c = self.dataset[idx]
        if x.ndim != 3 or x.shape[0] != 4 or not x.is_floating_point():
            raise ValueError(f"RGBDView: expected float RGB-D items [4, H, W], got {x.dtype} {list(x.shape)}")
        x = x[None, :3] if self.channels == "rgb" else x[None, 3:]
        return to_uint8(x, quantize="nvidia")[0], c

    def identity(self) -> dict[str, Any]:
        return {**self.dataset.identity(), "modality": self.channels, "quantisation": "clamp(x*127.5+128) uint8"}


class DepthFID(FID):
    """FID on depth maps: ``update(depth, real)`` with normalised float depth [N, 1, H, W] or RGB-D [N, 4, H, W]
    (quantised by :func:`depth_to_uint8`), or uint8 [N, 1, H, W] as :class:`RGBDView` serves it."""

    def update(self, depth: torch.Tensor, real: bool) -> None:
        super().update(depth if depth.dtype == torch.uint8 else depth_to_uint8(depth), real)


class RotationConsistency(Metric):
    """RotEval: ``update(rgb1, depth1, yaw1, rgb2, depth2, yaw2)``; ``compute()`` -> {"depth", "rgb"} (float64)."""

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, focal: float = DEFAULT_FOCAL, z_offset: float = DEFAULT_Z_OFFSET, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.focal, self.z_offset = float(focal), float(z_offset)
        for key in ("depth_sum", "rgb_sum", "mask_sum"):
            self.add_state(key, torch.zeros([], dtype=torch.float64), dist_reduce_fx="sum", persistent=False)

    def update(
        self,
        rgb1: torch.Tensor,
        depth1: torch.Tensor,
        yaw1: torch.Tensor,
        rgb2: torch.Tensor,
        depth2: torch.Tensor,
        yaw2: torch.Tensor,
    ) -> None:
        w = rotation_warp(depth1, yaw1, yaw2, depth2, rgb2, focal=self.focal, z_offset=self.z_offset)
        self.depth_sum += ((w.depth - w.z_rot).abs() * w.mask).to(torch.float64).sum()
        self.rgb_sum += ((w.rgb - rgb1).abs() * w.mask).to(torch.float64).sum()
        self.mask_sum += w.mask.to(torch.float64).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        if float(self.mask_sum) == 0:
            raise ValueError("RotationConsistency: no valid (masked-in) pixel was accumulated")
        return {"depth": self.depth_sum / self.mask_sum, "rgb": self.rgb_sum / self.mask_sum}


@dataclass(frozen=True)
class RotEvalProtocol:
    """RotEval protocol: ``n_fake`` generated images (``n_fake / 2`` pairs), warp constants, generator settings."""

    name: str = "roteval50k"
    n_fake: int = 50000
    focal: float = DEFAULT_FOCAL
    z_offset: float = DEFAULT_Z_OFFSET
    truncation_psi: float = 1.0
    noise_mode: str = "none"
    use_ema: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_fake < 2 or self.n_fake % 2:
            raise ValueError(f"RotEval protocol {self.name!r}: n_fake must be even and >= 2, got {self.n_fake}")

    def record(self, **extra: Any) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "metric": "roteval", "pairs": self.n_fake // 2, **extra}


def depthgan_fakes(
    G: nn.Module,
    n_fake: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    pairs: bool = False,
    truncation_psi: float = 1.0,
    noise_mode: str = "none",
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """This rank's blocks of (rgb, depth, yaw) fakes; block j seeded by (seed, j). With ``pairs`` the first and
    second half of every block share their codes (RotEval's pairs) and the yaws are independent."""
    if pairs and batch_size % 2:
        raise ValueError(f"RotEval needs an even batch_size, got {batch_size}")
    rank, world = _dist()
    n_blocks = -(-n_fake // batch_size)
    c_dim = int(getattr(G, "c_dim", 0))
    if c_dim:
        raise ValueError("depthgan_fakes: conditional DepthGAN generators are not supported (c_dim must be 0)")
    for j in range(rank, n_blocks, world):
        n = min(batch_size, n_fake - j * batch_size)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + j)
        z = torch.randn([n // 2 if pairs else n, G.z_dim], generator=gen)
        z = torch.cat([z, z]) if pairs else z
        yaw = G.sample_yaw(n, generator=gen)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(torch.randint(1 << 62, [1], generator=gen)))
            rgb, depth = G(
                z.to(device),
                torch.zeros([n, 0], device=device),
                yaw=yaw.to(device),
                truncation_psi=truncation_psi,
                noise_mode=noise_mode,
                return_depth=True,
            )
        yield rgb, depth, yaw.to(device)


@torch.no_grad()
def evaluate_depthgan(
    G: nn.Module,
    reference,
    detector: Callable[[str], nn.Module],
    fid_rgb: MetricProtocol | None = None,
    fid_depth: MetricProtocol | None = None,
    roteval: RotEvalProtocol | None = None,
    cache_dir=None,
    batch_size: int = 32,
    num_workers: int = 0,
    extra_record: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """FID-RGB, FID-depth and RotEval of a DepthGAN generator (already the EMA copy if wanted); every rank calls it.

    ``reference`` is the RGB-D reference dataset (float32 [4, H, W] items, e.g. ``dm.reference_dataset('full')``).
    Returns ``[{"name", "results": {key: float}, "protocol": record}]`` like :func:`evaluate_generator`.
    """
    device = next(G.parameters()).device
    was_training = G.training
    G.eval()
    out = []
    common = {"yaw_range": list(getattr(G, "yaw_range", [])), **(extra_record or {})}
    try:
        with no_tf32():
            for channels, proto in (("rgb", fid_rgb), ("depth", fid_depth)):
                if proto is None:
                    continue
                t0 = time.time()
                metric = (FID if channels == "rgb" else DepthFID)(detector(proto.detector)).to(device)
                info = prepare_reals(
                    metric, proto, RGBDView(reference, channels), cache_dir, batch_size, num_workers, device
                )
                metric.update_features(torch.zeros([0, metric.num_features], device=device), real=False)
                for rgb, depth, _yaw in depthgan_fakes(
                    G, proto.n_fake, batch_size, proto.seed, device, False, proto.truncation_psi, proto.noise_mode
                ):
                    metric.update(to_uint8(rgb, quantize="nvidia") if channels == "rgb" else depth, real=False)
                record = proto.record(**detector_info(metric.detector), **info, modality=channels, **common)
                record["seconds"] = round(time.time() - t0, 2)
                out.append({"name": proto.name, "results": {proto.name: float(metric.compute())}, "protocol": record})
            if roteval is not None:
                t0 = time.time()
                metric = RotationConsistency(roteval.focal, roteval.z_offset).to(device)
                for rgb, depth, yaw in depthgan_fakes(
                    G,
                    roteval.n_fake,
                    batch_size,
                    roteval.seed,
                    device,
                    True,
                    roteval.truncation_psi,
                    roteval.noise_mode,
                ):
                    m = rgb.shape[0] // 2
                    metric.update(rgb[:m], depth[:m], yaw[:m], rgb[m:], depth[m:], yaw[m:])
                value = metric.compute()
                record = roteval.record(**common, seconds=round(time.time() - t0, 2))
                results = {f"{roteval.name}_depth": float(value["depth"]), f"{roteval.name}_rgb": float(value["rgb"])}
                out.append({"name": roteval.name, "results": results, "protocol": record})
    finally:
        G.train(was_training)
    return out
