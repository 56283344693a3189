"""Where the parity tests find the golden outputs of the original implementations.

The golden files (networks, inputs and outputs of NVlabs/stylegan2-ada-pytorch at fixed seeds, written by the
original code) are not part of the repository. ``SUITE_GOLDEN_DIR`` names the folder that holds them; by default
it is ``shared/fixtures`` beside the checkout. Parity tests skip, saying so, when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

GOLDEN_DIR = Path(os.environ.get("SUITE_GOLDEN_DIR", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
STYLEGAN2_ADA = GOLDEN_DIR / "stylegan2_ada"

needs_stylegan2_ada = pytest.mark.skipif(
    not STYLEGAN2_ADA.is_dir(), reason=f"golden outputs not found at {STYLEGAN2_ADA} (set SUITE_GOLDEN_DIR)"
)
