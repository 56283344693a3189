"""Tests of datamodules/embedded_indoor.py (procedural rooms with exact depth). Budget: under 10 s."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from datamodules.embedded_indoor import (
    CLASS_ID,
    INDOOR_CLASSES,
    PALETTE,
    PALETTE_TOLERANCE,
    SHADE_RANGE,
    UNLABELLED,
    EmbeddedIndoorDataModule,
    EmbeddedIndoorDataset,
    render_room,
    segment_by_palette,
)
from datamodules.rgbd import encode_depth_uint16, normalize_depth


def _rays(scene):
    """Room-frame directions (unit camera z) of the pixel centres, from the scene's K and pose."""
    h, w = scene.depth.shape
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    pix = np.stack([jj, ii, np.ones_like(jj)], -1)
    cam = pix @ np.linalg.inv(scene.intrinsics).T
    return cam @ scene.cam_to_world[:3, :3].T, scene.cam_to_world[:3, 3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_floor_depth_equals_the_analytic_plane_depth(seed):
    scene = render_room(np.random.default_rng(seed), 48)
    dirs, centre = _rays(scene)
    floor = scene.labels == CLASS_ID["floor"]
    assert floor.sum() > 50
    analytic = centre[1] / -dirs[..., 1]  # y(t) = c_y + t * d_y = 0 (the floor plane)
    np.testing.assert_allclose(scene.depth[floor], analytic[floor], rtol=1e-6)
    # every depth is the z of a point on the surface it is labelled with: floor points at y = 0, ceiling above
    points = centre + scene.depth[..., None].astype(np.float64) * dirs
    np.testing.assert_allclose(points[floor][:, 1], 0, atol=1e-5)
    assert scene.depth.dtype == np.float32 and scene.depth.min() > 0


def test_scene_fields_are_consistent():
    scene = render_room(np.random.default_rng(5), 32)
    assert scene.rgb.shape == (32, 32, 3) and scene.rgb.dtype == np.uint8
    assert scene.labels.dtype == np.int64 and scene.instances.dtype == np.int64
    furn = scene.instances > 0
    assert furn.any() and (scene.labels[~furn] <= CLASS_ID["ceiling"]).all()
    np.testing.assert_array_equal(scene.labels[furn], scene.instance_classes[scene.instances[furn]])
    assert scene.intrinsics[0, 0] == pytest.approx(260 * 32 / 256) and scene.intrinsics[0, 2] == 16
    # the empty-room counterpart has the same layout wherever no furniture was in front of it
    empty = render_room(np.random.default_rng(5), 32, furnished=False)
    assert (empty.instances == 0).all()
    np.testing.assert_array_equal(empty.rgb[~furn], scene.rgb[~furn])
    assert (empty.depth[furn] > scene.depth[furn]).all()


def test_palette_classes_are_separated_by_more_than_twice_the_tolerance():
    s = np.linspace(*SHADE_RANGE, 81)
    for a, b in itertools.combinations(range(len(INDOOR_CLASSES)), 2):
        pa, pb = PALETTE[a][None] * s[:, None], PALETTE[b][None] * s[:, None]
        gap = np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1)).min()
        assert gap > 2 * PALETTE_TOLERANCE, (INDOOR_CLASSES[a], INDOOR_CLASSES[b], gap)


def test_segment_by_palette_recovers_labels_of_rendered_and_noisy_scenes():
    scenes = [render_room(np.random.default_rng([7, i]), 32) for i in range(4)]
    rgb = np.stack([s.rgb for s in scenes])
    labels = np.stack([s.labels for s in scenes])
    np.testing.assert_array_equal(segment_by_palette(rgb), labels)
    # generator-style input: float [-1, 1] NCHW tensor with noise (a GAN's colour error)
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1
    noisy = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * (12 / 127.5)
    pred = segment_by_palette(noisy)
    assert pred.shape == (4, 32, 32) and pred.dtype == torch.int64
    assert (pred == torch.from_numpy(labels)).float().mean() > 0.995
    black = torch.full((3, 4, 4), -1.0)  # black is far from every shaded palette colour
    assert (segment_by_palette(black) == UNLABELLED).all()
    assert (segment_by_palette(black, tolerance=None) >= 0).all()
    with pytest.raises(ValueError, match="uint8"):
        segment_by_palette(rgb.astype(np.float32))


def test_datasets_are_deterministic_and_rgbd_matches_the_zip_convention():
    a = EmbeddedIndoorDataset(resolution=16, num_images=6, scene_seed=3)
    b = EmbeddedIndoorDataset(resolution=16, num_images=6, scene_seed=3, cache=False)
    img, c = a[4]
    assert img.dtype == torch.uint8 and img.shape == (3, 16, 16) and c.shape == (0,)
    assert torch.equal(img, b[4][0])
    assert torch.equal(img, torch.from_numpy(a.scene(4).rgb).permute(2, 0, 1))
    assert not torch.equal(img, EmbeddedIndoorDataset(resolution=16, num_images=6, scene_seed=4)[4][0])

    d = EmbeddedIndoorDataset(resolution=16, num_images=6, scene_seed=3, modality="rgbd", xflip=True)
    rgbd, _ = d[4]
    scene = d.scene(4)
    assert rgbd.dtype == torch.float32 and rgbd.shape == (4, 16, 16)
    np.testing.assert_array_equal(rgbd[:3].permute(1, 2, 0).numpy(), scene.rgb / np.float32(127.5) - 1)
    np.testing.assert_array_equal(rgbd[3].numpy(), normalize_depth(encode_depth_uint16(scene.depth, "minmax")))
    assert float(rgbd[3].min()) == -1 and float(rgbd[3].max()) == 1
    assert torch.equal(d[4 + 6][0], rgbd.flip(-1))  # x-flip mirrors RGB and depth together


def test_datamodule_rgbd_batches():
    dm = EmbeddedIndoorDataModule(modality="rgbd", resolution=16, num_images=8, batch_size=4, num_channels=4)
    dm.setup("fit")
    x, c = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 4, 16, 16) and c.shape == (4, 0)
    assert len(dm.reference_dataset("full")) == 8 and dm.num_channels == 4
    with pytest.raises(ValueError, match="modality"):
        EmbeddedIndoorDataset(modality="depth")
