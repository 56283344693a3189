"""Content-hashed cache of real-image statistics (docs/metrics.md "Real-statistics cache").

The key hashes the dataset identity (reader kind, path, file list with sizes/mtimes or the zip's CRC table,
subset, resolution, x-flip, preprocessing), the detector (file sha256) and the protocol fields that change
the real statistics. A stale cache cannot be reused: any change gives another file name; the key is also
stored in the file and checked on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from metrics.protocol import MetricProtocol


def cache_key(dataset_identity: dict[str, Any], protocol: MetricProtocol, detector: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything the real statistics depend on."""
    payload = {"dataset": dataset_identity, "protocol": protocol.real_fields(), "detector": detector, "v": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cache_file(cache_dir: str | os.PathLike, dataset_name: str, protocol: MetricProtocol, key: str) -> Path:
    """``<cache_dir>/<dataset>-<detector>-<metric>-<key16>.npz``."""
    return Path(cache_dir) / f"{dataset_name}-{protocol.detector}-{protocol.metric}-{key[:16]}.npz"


def load_stats(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """Cached state or None if absent; a file whose stored key differs is an error."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        stored = str(data["__key__"])
        if stored != key:
            raise ValueError(f"metric cache {path}: stored key {stored[:16]} != expected {key[:16]}; delete it")
        return {k: data[k] for k in data.files if k != "__key__"}


def save_stats(path: Path, key: str, state: dict[str, np.ndarray]) -> None:
    """Atomic write (tmp + rename) so concurrent jobs never read a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.npz")
    np.savez(tmp, __key__=np.array(key), **state)
    os.replace(tmp, path)
