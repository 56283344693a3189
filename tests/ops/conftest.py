"""Shared helpers of the ops tests (budget for tests/ops: under 2 minutes on 2 CPU cores)."""

import pytest
import torch

from ops import _backend, bias_act

FIXTURE = "/work/shared/fixtures/stylegan2_ada/ops_reference.pt"


@pytest.fixture
def use_backend():
    """Set the ops backend for one test and restore the previous state afterwards."""
    saved = dict(_backend._state)
    saved_mode = bias_act.get_linear_clamp_grad()
    yield _backend.set_backend
    _backend._state.update(saved)
    bias_act.set_linear_clamp_grad(saved_mode)


@pytest.fixture(scope="session")
def fixture_records():
    import os

    if not os.path.exists(FIXTURE):
        pytest.skip(f"golden fixture {FIXTURE} not present")
    return torch.load(FIXTURE, weights_only=False)
