"""StyleGAN2-ADA training presets (NVlabs stylegan2-ada-pytorch ``train.py --cfg``); the `auto` formulas, in one place.

Registered as the OmegaConf resolver ``sg2_auto`` so ``conf/experiment/stylegan2_ada_auto.yaml`` can write
``batch_size: ${sg2_auto:batch,${data.resolution},${trainer.devices}}``.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def auto_preset(resolution: int, gpus: int) -> dict[str, float]:
    """The `--cfg=auto` row of train.py: every value as a function of resolution and GPU count."""
    gpus = max(int(gpus), 1)
    res = int(resolution)
    batch = max(min(gpus * min(4096 // res, 32), 64), gpus)
    return {
        "batch": batch,
        "mbstd": min(batch // gpus, 4),
        "channel_base": int((1 if res >= 512 else 0.5) * 32768),
        "lr": 0.002 if res >= 1024 else 0.0025,
        "gamma": 0.0002 * (res**2) / batch,
        "ema_kimg": batch * 10 / 32,
        "ema_rampup": 0.05,
        "map": 2,
    }


def _resolve(key: str, resolution, gpus):
    if str(gpus) in ("-1", "auto"):
        import torch

        gpus = torch.cuda.device_count()
    gpus = max(int(gpus), 1)
    preset = auto_preset(int(resolution), int(gpus))
    if key not in preset:
        raise KeyError(f"sg2_auto: unknown key {key!r}; expected one of {sorted(preset)}")
    return preset[key]


def register_resolvers() -> None:
    """Idempotent: safe to call from every entry point and test."""
    if not OmegaConf.has_resolver("sg2_auto"):
        OmegaConf.register_new_resolver("sg2_auto", _resolve)
