"""Explicit metric protocols (docs/metrics.md): every number is logged with its protocol record.

Named presets live in ``conf/metrics/<preset>.yaml`` under ``protocols:`` (the single source of truth);
``load_preset(name)`` reads them for ``experiments/evaluate.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "metrics"
METRICS = ("fid", "kid", "pr")
REFERENCES = ("full", "train_subset", "custom")


@dataclass(frozen=True)
class MetricProtocol:
    """One metric protocol. ``n_real=None``: every image of the reference set (the ``_full`` protocols)."""

    name: str
    metric: str
    n_fake: int
    n_real: int | None = None
    reference: str = "full"
    reference_path: str | None = None
    detector: str = "nvidia_inception"
    resize: str = "detector_native"
    truncation_psi: float = 1.0
    noise_mode: str = "random"
    use_ema: bool = True
    seed: int = 0
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_k: int = 3

    def __post_init__(self) -> None:
        where = f"metric protocol {self.name!r}"
        if self.metric not in METRICS:
            raise ValueError(f"{where}: metric must be one of {METRICS}, got {self.metric!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"{where}: reference must be one of {REFERENCES}, got {self.reference!r}")
        if (self.reference == "custom") != (self.reference_path is not None):
            raise ValueError(f"{where}: reference_path is required for, and only for, reference: custom")
        if self.resize != "detector_native":
            raise ValueError(f"{where}: resize must be 'detector_native' (resize inside the detector)")
        if self.n_fake < 2 or (self.n_real is not None and self.n_real < 2):
            raise ValueError(f"{where}: n_fake and n_real must be >= 2 (n_real null = all)")
        if self.noise_mode not in ("random", "const", "none"):
            raise ValueError(f"{where}: noise_mode must be random|const|none, got {self.noise_mode!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricProtocol:
        """Build from a config dict; unknown keys are an error (typos fail early)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise KeyError(f"metric protocol {d.get('name')!r}: unknown keys {sorted(unknown)}; known {sorted(known)}")
        return cls(**d)

    def real_fields(self) -> dict[str, Any]:
        """Fields that change the real-image statistics (part of the cache key)."""
        return {
            "metric_kind": "moments" if self.metric == "fid" else "features",
            "n_real": self.n_real,
            "reference": self.reference,
            "reference_path": self.reference_path,
            "detector": self.detector,
            "resize": self.resize,
            "quantisation": "uint8",
        }

    def record(self, **extra: Any) -> dict[str, Any]:
        """The protocol record logged next to each number."""
        return {**dataclasses.asdict(self), "input_quantisation": "uint8 = clamp(x*127.5+128)", **extra}


def load_preset(preset: str, conf_dir: str | Path = CONF_DIR) -> list[MetricProtocol]:
    """Protocols of ``conf/metrics/<preset>.yaml`` (its ``protocols:`` list)."""
    from omegaconf import OmegaConf

    path = Path(conf_dir) / f"{preset}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in Path(conf_dir).glob("*.yaml"))
        raise FileNotFoundError(f"metric preset {preset!r}: no {path}; available: {names}")
    items = OmegaConf.to_container(OmegaConf.load(path).get("protocols") or [], resolve=False)
    return [MetricProtocol.from_dict(dict(i)) for i in items]
