"""Evaluate a generator under explicit protocols; the core of the training callback and ``evaluate.py``.

DDP: when ``torch.distributed`` is initialised every rank must call ``evaluate_generator`` (``compute()``
syncs). Reals are sharded exactly (rank ``r`` takes items ``r, r+W, ...``: no padding, no duplicates); fakes
are made in blocks of ``batch_size`` with z (and noise, labels) seeded by ``(protocol.seed, block index)``,
so the fake set is the same for every world size and every evaluation. TF32 is off during metrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from metrics.cache import cache_file, cache_key, load_stats, save_stats
from metrics.detectors import detector_info
from metrics.feature_metric import FeatureMetric
from metrics.fid import FID
from metrics.kid import KID
from metrics.pr import PrecisionRecall
from metrics.protocol import MetricProtocol
from networks.image_output import to_uint8

log = logging.getLogger(__name__)


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if _dist()[1] > 1:
        torch.distributed.barrier()


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """TF32 off for metrics, as NVIDIA/Hammer; previous flags restored."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def build_metric(protocol: MetricProtocol, detector: nn.Module) -> FeatureMetric:
    """The torchmetrics Metric of a protocol."""
    if protocol.metric == "fid":
        return FID(detector)
    if protocol.metric == "kid":
        return KID(detector, protocol.kid_subsets, protocol.kid_subset_size, seed=protocol.seed)
    return PrecisionRecall(detector, k=protocol.pr_k)


def fake_batches(
    G: nn.Module, protocol: MetricProtocol, batch_size: int, device: torch.device, labels: Callable | None
) -> Iterator[torch.Tensor]:
    """This rank's share of ``protocol.n_fake`` uint8 fakes, block ``j`` seeded by ``(seed, j)``."""
    rank, world = _dist()
    c_dim = int(getattr(G, "c_dim", 0))
    if c_dim > 0 and labels is None:
        raise ValueError(f"generator has c_dim={c_dim} but the reference dataset has no labels to sample")
    n_blocks = -(-protocol.n_fake // batch_size)
    for j in range(rank, n_blocks, world):
        n = min(batch_size, protocol.n_fake - j * batch_size)
        gen = torch.Generator().manual_seed(protocol.seed * 1_000_003 + j)
        z = torch.randn([n, G.z_dim], generator=gen).to(device)
        c = (
            labels(torch.randint(1 << 62, [n], generator=gen)).to(device)
            if c_dim
            else torch.zeros([n, 0], device=device)
        )
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(torch.randint(1 << 62, [1], generator=gen)))
            img = G(z, c, truncation_psi=protocol.truncation_psi, noise_mode=protocol.noise_mode)
        yield to_uint8(img, quantize="nvidia")


def real_batches(dataset, n_real: int | None, batch_size: int, num_workers: int) -> Iterator[torch.Tensor]:
    """This rank's exact shard of the first ``n_real`` (or all) reference images."""
    rank, world = _dist()
    n = len(dataset) if n_real is None else min(n_real, len(dataset))
    loader = DataLoader(Subset(dataset, list(range(rank, n, world))), batch_size=batch_size, num_workers=num_workers)
    for img, _c in loader:
        yield img


def _empty_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero contribution for ranks > 0 (sum states -> zeros, feature lists -> [0, d])."""
    return {k: v[:0] if k.endswith("features") else np.zeros_like(v) for k, v in state.items()}


def prepare_reals(
    metric: FeatureMetric,
    protocol: MetricProtocol,
    dataset,
    cache_dir: str | Path | None,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> dict[str, Any]:
    """Fill the real side from the hashed cache (rank 0 only) or from the dataset; returns reference info."""
    rank, _world = _dist()
    det = detector_info(metric.detector)
    key = cache_key(dataset.identity(), protocol, det)
    path = cache_file(cache_dir, dataset.name, protocol, key) if cache_dir is not None else None
    state = load_stats(path, key) if path is not None else None
    empty = torch.zeros([0, metric.num_features], dtype=torch.float64, device=device)
    if state is not None:
        metric.load_real_state(state if rank == 0 else _empty_state(state))
        log.info("%s: real statistics from cache %s", protocol.name, path)
    else:
        t0 = time.time()
        metric.update_features(empty, real=True)
        for img in real_batches(dataset, protocol.n_real, batch_size, num_workers):
            metric.update(img.to(device), real=True)
        if path is not None:
            with metric.sync_context(should_sync=_dist()[1] > 1):
                full = metric.real_state()
            if rank == 0:
                save_stats(path, key, full)
            _barrier()
        log.info("%s: real statistics of %s in %.1fs", protocol.name, dataset.name, time.time() - t0)
    n_avail = len(dataset)
    n_used = n_avail if protocol.n_real is None else min(protocol.n_real, n_avail)
    return {
        "reference_name": dataset.name,
        "reference_images": n_used,
        "reference_key": key,
        "cache_file": str(path),
    }


@torch.no_grad()
def evaluate_generator(
    G: nn.Module,
    protocols: list[MetricProtocol],
    reference: Callable[[MetricProtocol], Any],
    detector: Callable[[str], nn.Module],
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    metrics: dict[str, FeatureMetric] | None = None,
    extra_record: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate ``G`` (already the EMA copy if wanted) on every protocol.

    ``reference(protocol)`` returns the reference Dataset, ``detector(name)`` the feature module; ``metrics``
    (protocol name -> Metric) keeps real statistics across calls. Returns one dict per protocol:
    ``{"name", "results": {key: float}, "protocol": record}``.
    """
    device = next(G.parameters()).device
    metrics = {} if metrics is None else metrics
    out = []
    with no_tf32():
        for proto in protocols:
            t0 = time.time()
            metric = metrics.get(proto.name)
            if metric is None:
                metric = build_metric(proto, detector(proto.detector)).to(device)
                dataset = reference(proto)
                metric.reference_info = prepare_reals(
                    metric, proto, dataset, cache_dir, batch_size, num_workers, device
                )
                metric.label_fn = _label_sampler(dataset)
                metrics[proto.name] = metric
            metric.reset()
            metric.update_features(torch.zeros([0, metric.num_features], device=device), real=False)
            for img in fake_batches(G, proto, batch_size, device, metric.label_fn):
                metric.update(img, real=False)
            value = metric.compute()
            results = (
                {f"{proto.name}_precision": float(value[0]), f"{proto.name}_recall": float(value[1])}
                if proto.metric == "pr"
                else {proto.name: float(value)}
            )
            record = proto.record(**detector_info(metric.detector), **metric.reference_info, **(extra_record or {}))
            record["seconds"] = round(time.time() - t0, 2)
            out.append({"name": proto.name, "results": results, "protocol": record})
            log.info("%s %s", proto.name, results)
    return out


def _label_sampler(dataset) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Labels drawn from the dataset (NVIDIA: random dataset labels for conditional fakes)."""
    if not getattr(dataset, "has_labels", False):
        return None
    return lambda draws: torch.from_numpy(np.stack([dataset.get_label(int(i) % len(dataset)) for i in draws]))


def append_jsonl(path: str | Path, result: dict[str, Any], **extra: Any) -> None:
    """One line per number (NVIDIA's ``metric-<name>.jsonl``) with its protocol record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({**result, **extra, "timestamp": time.time()}, default=str) + "\n")
