"""Cameras, rays, sampling and compositing of networks/volume_rendering.py. Budget: ~2 s on 2 CPU cores."""

import math

import pytest
import torch

from networks import volume_rendering as vr


def test_composite_equals_closed_form_on_a_constant_density_ray_and_sums_to_at_most_one():
    sigma, near, far, s = 3.0, 0.8, 1.2, 16
    t = torch.linspace(near, far, s, dtype=torch.float64).expand(2, 5, s)
    w = vr.composite(torch.full_like(t, sigma), t)
    delta = (far - near) / (s - 1)
    alpha = 1 - math.exp(-sigma * delta)
    closed = torch.tensor([alpha * (1 - alpha) ** i for i in range(s - 1)] + [(1 - alpha) ** (s - 1)])
    torch.testing.assert_close(w[0, 0], closed.double(), atol=1e-9, rtol=1e-7)
    # random densities (negative ones clamp to zero) and jittered depths: weights in [0, 1], sum <= 1
    g = torch.Generator().manual_seed(0)
    t = vr.stratified_depths(3, 7, 12, near, far, True, dtype=torch.float64, generator=g)
    w = vr.composite(torch.randn(3, 7, 12, generator=g, dtype=torch.float64) * 5, t)
    assert bool((w >= 0).all()) and bool((w.sum(-1) <= 1 + 1e-9).all())
    assert bool((vr.composite(torch.zeros_like(t), t) == 0).all())


def test_stratified_depths_jitter_within_half_a_bin():
    g = torch.Generator().manual_seed(1)
    base = vr.stratified_depths(2, 50, 12, 0.8, 1.2, False)
    jit = vr.stratified_depths(2, 50, 12, 0.8, 1.2, True, generator=g)
    step = 0.4 / 11
    assert bool(((jit - base).abs() <= step / 2 + 1e-7).all()) and float((jit - base).abs().max()) > step / 4
    assert bool((jit[..., 1:] >= jit[..., :-1]).all())


def test_importance_samples_are_sorted_inside_the_range_and_follow_the_weights():
    g = torch.Generator().manual_seed(2)
    t = vr.stratified_depths(2, 300, 12, 0.8, 1.2, True, generator=g)
    w = torch.zeros(2, 300, 12)
    w[..., 6] = 1.0  # all mass on coarse sample 6: fine samples fall into the bins around it
    fine = vr.importance_depths(t, w, 24, generator=g)
    assert fine.shape == (2, 300, 24) and not fine.requires_grad
    assert bool((fine[..., 1:] >= fine[..., :-1]).all())
    assert bool((fine >= 0.8).all()) and bool((fine <= 1.2).all())
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    inside = (fine >= mids[..., 4:5]) & (fine <= mids[..., 6:7])
    assert float(inside.float().mean()) > 0.99
    flat = vr.importance_depths(t, torch.rand(2, 300, 12, generator=g), 8, generator=g)
    assert bool((flat >= mids[..., :1]).all()) and bool((flat <= mids[..., -1:]).all())


@pytest.mark.parametrize("dist", ["gaussian", "uniform"])
def test_camera_sampler_statistics(dist):
    g = torch.Generator().manual_seed(3)
    n = 40000
    yaw, pitch = vr.sample_camera_angles(n, math.pi / 2, 0.3, math.pi / 2, 0.155, dist, generator=g)
    std_scale = 1.0 if dist == "gaussian" else 1 / math.sqrt(3)  # U(-s, s) has std s / sqrt(3)
    for x, std in ((yaw, 0.3), (pitch, 0.155)):
        assert float(x.mean()) == pytest.approx(math.pi / 2, abs=4 * std / math.sqrt(n))
        assert float(x.std()) == pytest.approx(std * std_scale, rel=0.03)
    wide = vr.sample_camera_angles(n, 0.0, 3.0, math.pi / 2, 3.0, dist, generator=g)[1]
    assert float(wide.min()) >= 0.99e-5 and float(wide.max()) <= math.pi - 0.99e-5  # float32 clamp bounds
    with pytest.raises(ValueError, match="camera dist"):
        vr.sample_camera_angles(2, 0, 1, 0, 1, "hybrid")


def test_cameras_look_at_the_origin_and_rays_round_trip_through_projection():
    yaw = torch.tensor([math.pi / 2, 1.2, 2.0])
    pitch = torch.tensor([math.pi / 2, 1.4, 1.7])
    cam = vr.camera_to_world(yaw, pitch, radius=1.0)
    torch.testing.assert_close(cam[0, :3, 3], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(cam[0, :3, :3], torch.eye(3), atol=1e-6, rtol=0)
    o, d = vr.camera_rays(cam, 9, 12.0)
    centre = d[:, 4 * 9 + 4]  # the middle pixel looks at the origin
    torch.testing.assert_close(centre, torch.nn.functional.normalize(-cam[:, :3, 3], dim=-1), atol=1e-6, rtol=0)
    assert float(d[0, 0, 0]) < 0 < float(d[0, 0, 1])  # row 0, column 0 = top left
    t = torch.rand(3, 81) * 0.4 + 0.8
    ndc, dist, front = vr.project_points(o + d * t.unsqueeze(-1), cam, 12.0)
    lin = torch.linspace(-1, 1, 9)
    torch.testing.assert_close(ndc[..., 0], lin.repeat(9).expand(3, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(ndc[..., 1], (-lin).repeat_interleave(9).expand(3, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(dist, t, atol=1e-5, rtol=0)
    assert bool(front.all())


def test_positional_encoding_layout():
    x = torch.tensor([[0.1, -0.2, 0.3]])
    pe = vr.positional_encoding(x, 3)
    assert pe.shape == (1, 21)
    torch.testing.assert_close(pe[:, :3], x)
    torch.testing.assert_close(pe[:, 3:6], torch.sin(x))
    torch.testing.assert_close(pe[:, 6:9], torch.cos(x))
    torch.testing.assert_close(pe[:, 15:18], torch.sin(4 * x))
