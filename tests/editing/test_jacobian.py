"""Jacobians (forward vs reverse mode), streamed Grams and layer-wise edits on a tiny random-init StyleGAN2
(arXiv 2202.09649 / 2106.04488; 16x16, 16 channels, reference ops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from editing.jacobian import GramAccumulator, JacobianEngine, accumulate_grams
from editing.manipulate import edit_images, edit_ws, render, sample_ws
from editing.metrics import MaskedMSE, StageTimer, masked_mse
from editing.regions import box_mask
from editing.resefa import resefa_directions
from tests.editing.toys import tiny_stylegan2


@pytest.fixture(scope="module")
def G():
    return tiny_stylegan2(res=16)


@pytest.mark.parametrize(
    "space,reduce,size,impl",
    [("w", "sum", None, "vmap"), ("wplus", "mean", 8, "batch"), ("z", "none", 32, "vmap")],
)
def test_forward_mode_matches_reverse_mode(G, space, reduce, size, impl):
    engine = JacobianEngine(G, space=space, size=size, reduce=reduce)
    x = engine.latent_from_z(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)))[0].detach()
    J_fwd = engine.forward(x, chunk=16, impl=impl)
    rows = torch.arange(0, J_fwd.shape[0], max(7, J_fwd.shape[0] // 64))
    J_rev = engine.reverse(x, rows=rows)  # the originals' one backward per row
    assert J_fwd.shape == (engine.output_shape(x[None])[0] * (size or 16) ** 2, engine.input_dim)
    assert J_rev.abs().max() > 1e-3
    torch.testing.assert_close(J_fwd[rows], J_rev, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(engine.reverse(x, rows=rows[:40], chunk=8), J_rev[:40], rtol=1e-4, atol=1e-5)


def test_streamed_grams_equal_full_jacobian_grams(G):
    engine = JacobianEngine(G, space="w", size=None, reduce="sum")
    latents = engine.latent_from_z(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1))).detach()
    masks = {"eyes": box_mask((120, 128, 20, 115), size=16), "corner": box_mask((2, 2, 4, 4), 16, 16)}
    fwd = accumulate_grams(engine, latents, masks, mode="forward", chunk=8)
    rev = accumulate_grams(engine, latents, masks, mode="reverse", chunk=32)
    J = engine.forward(latents[1]).double()
    for name, m in masks.items():
        mf = m.reshape(-1)
        A_ref = J[mf].T @ J[mf] / mf.sum()
        B_ref = J[~mf].T @ J[~mf] / (~mf).sum()
        torch.testing.assert_close(fwd.per_sample[name][1][0], A_ref, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(fwd.per_sample[name][1][1], B_ref, rtol=1e-4, atol=1e-7)
        # Reverse mode batches latent copies (another fp32 summation order than forward mode): Grams of entries
        # up to ~1 agree to a few fp32 ulps.
        for (a_f, b_f), (a_r, b_r) in zip(fwd.per_sample[name], rev.per_sample[name]):
            torch.testing.assert_close(a_r, a_f, rtol=1e-4, atol=2e-6)
            torch.testing.assert_close(b_r, b_f, rtol=1e-4, atol=2e-6)
        A_mean, _ = fwd.mean(name)
        torch.testing.assert_close(A_mean, (fwd.per_sample[name][0][0] + fwd.per_sample[name][1][0]) / 2)
    with pytest.raises(ValueError, match="region 'bad'"):
        GramAccumulator({"ok": masks["eyes"], "bad": torch.ones(4, 4, dtype=torch.bool)}, 16)


def test_step_zero_reproduces_image_and_layers_are_respected(G):
    ws = sample_ws(G, 3, seed=7, truncation_psi=0.7, truncation_cutoff=4)
    assert not torch.allclose(ws[:, 0], ws[:, -1])  # truncation on the first 4 layers only
    n = np.random.RandomState(0).randn(G.w_dim)
    n /= np.linalg.norm(n)
    edited = edit_ws(ws, n, layers=[2, 3], alphas=[-2.0, 0.0, 2.0])
    assert torch.equal(edited[:, 1], ws)
    torch.testing.assert_close(edited[:, 2, 2] - ws[:, 2], torch.from_numpy(2 * n).float().expand(3, -1))
    assert torch.equal(edited[:, 2, [0, 1, 4, 5]], ws[:, [0, 1, 4, 5]])
    images = edit_images(G, ws, n, [2, 3], [0.0, 1.0], batch=1)
    assert torch.equal(images[:, 0], render(G, ws, batch=1))  # bit-exact (same batch composition)
    assert (images[:, 1] - images[:, 0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="num_ws=6"):
        edit_ws(ws, n, layers=[7], alphas=[1.0])


def test_resefa_edit_changes_inside_more_than_outside(G):
    """Tiny random-init StyleGAN2: with RGB rows kept (``reduce='none'``) the generalised Rayleigh quotient
    is the
    linearised MSE_in/MSE_out ratio, so the top ReSeFa direction's measured ratio matches its eigenvalue for
    small α,
    stays high at larger α and beats random directions (W-space edit on all layers)."""
    mask = box_mask((5, 10, 6, 6), size=16, base=16)
    engine = JacobianEngine(G, space="w", size=None, reduce="none")
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(5))
    x = engine.latent_from_z(z).detach()
    acc = accumulate_grams(engine, x, {"box": mask})
    timer = StageTimer()
    with timer("factorise"):
        dirs, values = resefa_directions(*acc.mean("box"))
    assert timer.per_direction(1) > 0
    ws = engine.to_ws(x)
    all_layers = list(range(G.num_ws))
    original = render(G, ws)
    small = masked_mse(original, edit_images(G, ws, dirs[0], all_layers, [0.05])[:, 0], mask)
    assert float(small[0] / small[1]) == pytest.approx(values[0], rel=0.1)
    metric = MaskedMSE(mask)
    metric.update(original, edit_images(G, ws, dirs[0], all_layers, [0.3])[:, 0])
    vals = metric.compute()
    ratio = float(vals["mse_in"] / vals["mse_out"])
    assert ratio > 5
    rand = np.random.RandomState(1).randn(10, G.w_dim)
    rand_ratios = []
    for n in rand / np.linalg.norm(rand, axis=1, keepdims=True):
        mi, mo = masked_mse(original, edit_images(G, ws, n, all_layers, [0.3])[:, 0], mask)
        rand_ratios.append(float(mi / mo))
    assert ratio > 2 * max(rand_ratios)
