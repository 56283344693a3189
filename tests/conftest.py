"""Shared test set-up: offline W&B, the reference ops backend unless a test chooses, Hydra resolvers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

from lightning_modules.presets import register_resolvers  # noqa: E402

register_resolvers()
