"""Tests of metrics/depthgan.py (FID-depth, RotEval, the DepthGAN evaluation). Budget: under 20 s."""

from __future__ import annotations

import pytest
import torch

from datamodules.embedded_indoor import EmbeddedIndoorDataset
from metrics.depthgan import (
    DepthFID,
    RGBDView,
    RotationConsistency,
    RotEvalProtocol,
    depth_to_uint8,
    evaluate_depthgan,
)
from metrics.detectors import RandomCNNFeatures
from metrics.protocol import MetricProtocol
from networks.depth_warp import rotation_warp
from networks.depthgan import DepthGANGenerator


def _views(seed: int, n: int = 4, res: int = 16):
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.rand(n, 3, res, res, generator=gen) * 2 - 1
    depth = torch.rand(n, 1, res, res, generator=gen) * 2 - 1
    yaw = (torch.rand(n, generator=gen) - 0.5) * 0.5
    return rgb, depth, yaw


def test_roteval_is_zero_for_identical_views_and_accumulates_like_one_batch():
    rgb, depth, yaw = _views(0)
    m = RotationConsistency()
    m.update(rgb, depth, yaw, rgb, depth, yaw)
    value = m.compute()
    assert float(value["depth"]) < 1e-6 and float(value["rgb"]) < 1e-6
    rgb2, depth2, yaw2 = _views(1)
    w = rotation_warp(depth, yaw, yaw2, depth2, rgb2)
    expected_depth = float(((w.depth - w.z_rot).abs() * w.mask).sum() / w.mask.sum())
    expected_rgb = float(((w.rgb - rgb).abs() * w.mask).sum() / w.mask.sum())
    split = RotationConsistency()
    for s in (slice(0, 1), slice(1, 4)):
        split.update(rgb[s], depth[s], yaw[s], rgb2[s], depth2[s], yaw2[s])
    out = split.compute()
    assert float(out["depth"]) == pytest.approx(expected_depth, rel=1e-6) and expected_depth > 0
    assert float(out["rgb"]) == pytest.approx(expected_rgb, rel=1e-6) and expected_rgb > 0


def test_depth_fid_quantises_like_images_and_separates_sets():
    det = RandomCNNFeatures(num_features=16)
    _, depth, _ = _views(2, n=24)
    _, other, _ = _views(3, n=24)
    assert depth_to_uint8(torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)).flatten().tolist() == [0, 128, 255]
    same, diff = DepthFID(det), DepthFID(det)
    same.update(depth, real=True)
    same.update(depth_to_uint8(depth), real=False)  # uint8 input is taken as is
    diff.update(depth, real=True)
    diff.update((other * 0.3 + 0.5).clamp(-1, 1), real=False)
    assert abs(float(same.compute())) < 1e-6 and float(diff.compute()) > 1e-3


def test_rgbd_view_keeps_modalities_apart():
    ds = EmbeddedIndoorDataset(resolution=16, num_images=3, modality="rgbd")
    rgb, depth = RGBDView(ds, "rgb"), RGBDView(ds, "depth")
    x = ds[1][0]
    assert torch.equal(rgb[1][0], torch.from_numpy(ds.scene(1).rgb).permute(2, 0, 1))  # exact round trip
    assert depth[1][0].shape == (1, 16, 16) and torch.equal(depth[1][0], depth_to_uint8(x[None])[0])
    assert rgb.identity() != depth.identity() and rgb.name != depth.name


def test_evaluate_depthgan_records_pinned_counts_and_is_deterministic(tmp_path):
    torch.manual_seed(0)
    G = DepthGANGenerator(
        z_dim_depth=8,
        z_dim_rgb=8,
        w_dim=16,
        img_resolution=16,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=128, channel_max=16),
    )
    ds = EmbeddedIndoorDataset(resolution=16, num_images=12, modality="rgbd")
    det = RandomCNNFeatures(num_features=8)
    kw = dict(reference="full", detector="random-cnn", noise_mode="none")
    fid_rgb = MetricProtocol(name="fid_rgb8", metric="fid", n_fake=8, **kw)
    fid_depth = MetricProtocol(name="fid_depth8", metric="fid", n_fake=8, **kw)
    rot = RotEvalProtocol(name="roteval8", n_fake=8)
    first = evaluate_depthgan(G, ds, lambda name: det, fid_rgb, fid_depth, rot, cache_dir=tmp_path, batch_size=8)
    assert [r["name"] for r in first] == ["fid_rgb8", "fid_depth8", "roteval8"]
    assert first[0]["protocol"]["n_fake"] == 8 and first[0]["protocol"]["modality"] == "rgb"
    assert first[1]["protocol"]["modality"] == "depth" and first[1]["protocol"]["reference_images"] == 12
    assert first[2]["protocol"]["n_fake"] == 8 and first[2]["protocol"]["pairs"] == 4
    assert first[0]["protocol"]["cache_file"] != first[1]["protocol"]["cache_file"]
    assert len(list(tmp_path.glob("*.npz"))) == 2
    values = [v for r in first[1:] for v in r["results"].values()]
    assert all(v > 0 for v in values)
    # reals from the cache, fakes re-seeded: identical numbers
    second = evaluate_depthgan(G, ds, lambda name: det, None, fid_depth, rot, cache_dir=tmp_path, batch_size=8)
    assert [v for r in second for v in r["results"].values()] == pytest.approx(values, rel=1e-9)
    with pytest.raises(ValueError, match="even"):
        RotEvalProtocol(n_fake=7)
