"""Shared helpers of the ops tests (budget for tests/ops: under 2 minutes on 2 CPU cores)."""

import pytest
import torch

from ops import _backend, bias_act, winograd
from tests.golden import STYLEGAN2_ADA

FIXTURE = STYLEGAN2_ADA / "ops_reference.pt"


@pytest.fixture
def use_backend():
    """Set the ops backend for one test and restore the previous state afterwards."""
    saved = dict(_backend._state)
    saved_mode = bias_act.get_linear_clamp_grad()
    saved_conv3x3 = winograd.get_conv3x3()
    yield _backend.set_backend
    _backend._state.update(saved)
    bias_act.set_linear_clamp_grad(saved_mode)
    winograd.set_conv3x3(saved_conv3x3)


@pytest.fixture(scope="session")
def fixture_records():
    if not FIXTURE.is_file():
        pytest.skip(f"golden fixture {FIXTURE} not present (set SUITE_GOLDEN_DIR)")
    return torch.load(FIXTURE, weights_only=True)


def check_fixture_parity(records) -> None:
    """Outputs and gradients of the active backend against ops_reference.pt (NVIDIA's reference path)."""
    from ops.bias_act import bias_act, set_linear_clamp_grad
    from ops.upfirdn2d import upfirdn2d

    set_linear_clamp_grad("mask")  # the fixture's linear+clamp gradient masks (docs/ops.md "API")
    for rec in records:
        x = rec["x"].clone().requires_grad_()
        if rec["op"] == "upfirdn2d":
            y = upfirdn2d(x, rec["f"], **rec["params"])
            (y * rec["grad_out"]).sum().backward()
        else:
            b = rec["b"].clone().requires_grad_()
            y = bias_act(x, b, **rec["params"])
            (y * rec["grad_out"]).sum().backward()
            torch.testing.assert_close(b.grad, rec["grad_b"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(y, rec["y"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x.grad, rec["grad_x"], atol=1e-5, rtol=1e-5)
