"""LoGAN operators on a tiny random StyleGAN2 (32x32, 16 channels; arXiv 2105.08222 content modulation, style
modulation, priority mask). Masks are aligned to the cells of the content site, so the expected footprints are
exact. Tolerance outside the changed region: 1e-6 (measured: exactly 0 on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from editing.features import layer_w_index, receptive_margin, synthesis_sites, synthesize
from editing.logan import (
    ContentEdit,
    LoganEdit,
    Paste,
    StyleRegion,
    Transform,
    capture_source,
    dilate,
    estimate_layout,
    fill_holes,
    render,
    resolve_priority,
    translate,
    warp,
)
from editing.scene_masks import CheckpointParser, LabelMapParser, PaletteParser, object_masks
from tests.editing.toys import tiny_stylegan2

TOL = 1e-6
SITE = "b16.conv1"  # 16x16 cells of 2x2 pixels


@pytest.fixture(scope="module")
def G():
    return tiny_stylegan2(res=32)


@pytest.fixture(scope="module")
def ws(G):
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0))
    return G.mapping(z, None).detach()


@pytest.fixture(scope="module")
def ws_other(G):
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(1))
    return G.mapping(z, None).detach()


def box(top: int, left: int, bottom: int, right: int, size: int = 32, n: int = 1) -> torch.Tensor:
    m = torch.zeros(n, 1, size, size, dtype=torch.bool)
    m[..., top:bottom, left:right] = True
    return m


def test_sites_and_w_index_follow_the_synthesis_layout(G):
    sites = list(synthesis_sites(G))
    assert sites[:3] == ["b4.conv1", "b4.torgb", "b4"] and sites[-1] == "b32"
    index = layer_w_index(G)
    assert index["b8.conv0"] == 1 and index["b8.conv1"] == 2 and index["b8.torgb"] == 3 and index["b4.torgb"] == 1
    assert max(index.values()) == G.num_ws - 1
    assert receptive_margin(G, "b32.conv1") == 0 and receptive_margin(G, "b32.conv0") == 1
    assert receptive_margin(G, SITE) == 3  # b16.conv1: b32 up-sampling conv ±2 px, conv1 ±1 px, RGB skip ±1 px
    with pytest.raises(ValueError, match="b64.conv1"):
        synthesize(G, torch.zeros(1, G.num_ws, G.w_dim), capture=["b64.conv1"])


def test_identity_operations_reproduce_the_image_exactly(G, ws):
    before = G.synthesis(ws, noise_mode="const")
    m = box(8, 8, 20, 24)
    assert torch.equal(render(G, ws), before)
    moves = ContentEdit(SITE, pastes=[Paste(mask=m), Paste(mask=box(0, 0, 16, 16), priority=2.0)])
    assert torch.equal(render(G, ws, LoganEdit(content=moves)), before)
    src = capture_source(G, ws, SITE)
    insert = ContentEdit(SITE, pastes=[Paste(mask=m, features=src["features"], skip=src["skip"])])
    assert torch.equal(render(G, ws, LoganEdit(content=insert)), before)
    block = ContentEdit("b16", pastes=[Paste(mask=m)])
    assert torch.equal(render(G, ws, LoganEdit(content=block)), before)
    styles = [StyleRegion(mask=m, ws=ws, layers=["b8", "b16", "b32"])]
    assert torch.equal(render(G, ws, LoganEdit(styles=styles)), before)


def test_removal_leaves_pixels_outside_the_dilated_mask_unchanged(G, ws):
    before = render(G, ws)
    hole = box(10, 8, 20, 20)  # cells 5..9 x 4..9
    for fill in ("nearest", "mean"):
        edit = LoganEdit(content=ContentEdit(SITE, hole=hole, fill=fill))
        after = render(G, ws, edit)
        margin = edit.margin(G)
        assert margin == receptive_margin(G, SITE) + 2
        near = dilate(hole, margin).expand_as(after[:, :1]).expand_as(after)
        diff = (after - before).abs()
        assert diff[~near].max() <= TOL
        assert diff[hole.expand_as(after)].mean() > 1e-2
        assert diff[near & ~hole.expand_as(after)].max() > 1e-4  # the change does spread beyond the hole


def test_fill_uses_features_of_the_layout_class_behind_the_hole():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)  # wall = 0 above, floor = 1 below, bed = 3 in the middle
    labels[:, 4:] = 1
    labels[:, 2:7, 2:6] = 3
    hole = (labels == 3)[:, None]
    layout = estimate_layout(labels, [0, 1], hole)
    assert (layout[0, 0, 2:4, 2:6] == 0).all() and (layout[0, 0, 5:7, 2:6] == 1).all()
    x = torch.stack([labels[0].float() * 10, -labels[0].float()])[None]  # features encode the class
    filled = fill_holes(x, hole, layout, "nearest")
    assert torch.equal(filled[0, 0][labels[0] != 3], x[0, 0][labels[0] != 3])
    assert (filled[0, 0, 2:4, 2:6] == 0).all() and (filled[0, 0, 5:7, 2:6] == 10).all()
    assert torch.equal(fill_holes(x, hole, layout, "mean")[0, 1, 5:7, 2:6], torch.full((2, 4), -1.0))


def test_shift_by_k_cells_equals_a_roll_of_the_features(G, ws):
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    for dy, dx in ((3, -2), (-5, 7), (0, 4)):
        rolled = torch.roll(x, (dy, dx), dims=(-2, -1))
        moved = translate(x, dy, dx)
        rows = slice(max(dy, 0), 16 + min(dy, 0))
        cols = slice(max(dx, 0), 16 + min(dx, 0))
        assert torch.equal(moved[..., rows, cols], rolled[..., rows, cols])
        assert moved.abs().sum() < x.abs().sum()  # what leaves the frame is dropped, not wrapped
        assert torch.equal(warp(x, Transform(shift=(2.0 * dy, 2.0 * dx)), 32), moved)  # 2 px per cell at 16/32
    # through the generator: the edited content features equal the rolled ones inside the moved mask
    k = (3, 4)
    m = box(6, 6, 14, 16)
    edit = ContentEdit(SITE, hole=m, pastes=[Paste(mask=m, transform=Transform(shift=(2.0 * k[0], 2.0 * k[1])))])
    _, orig = synthesize(G, ws, capture=[SITE])
    _, cap = synthesize(G, ws, edits=edit.callbacks(G), capture=[SITE])
    inside = box(3 + k[0], 3 + k[1], 7 + k[0], 8 + k[1], size=16).expand_as(orig[SITE])
    assert torch.equal(cap[SITE][inside], torch.roll(orig[SITE], k, dims=(-2, -1))[inside])
    untouched = ~(box(3, 3, 7, 8, size=16) | box(3 + k[0], 3 + k[1], 7 + k[0], 8 + k[1], size=16))
    assert torch.equal(cap[SITE][untouched.expand_as(orig[SITE])], orig[SITE][untouched.expand_as(orig[SITE])])


def test_rotation_turns_counter_clockwise_about_the_centre():
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    y = warp(x, Transform(angle=90.0, center=(16.0, 16.0)), 32)
    torch.testing.assert_close(y, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    assert torch.equal(warp(x, Transform(), 32), x)


def test_priority_order_on_overlapping_masks():
    a, b, c = box(0, 0, 20, 20, n=2), box(10, 10, 30, 30, n=2), box(5, 15, 25, 25, n=2)
    ra, rb, rc = resolve_priority([a, b, c], [1.0, 3.0, 2.0])
    assert not (ra & rb).any() and not (ra & rc).any() and not (rb & rc).any()
    assert torch.equal(ra | rb | rc, a | b | c)
    assert torch.equal(rb, b) and torch.equal(rc, c & ~b) and torch.equal(ra, a & ~b & ~c)
    first, second = resolve_priority([a, b], [1.0, 1.0])  # a tie: the later entry is in front
    assert torch.equal(second, b) and torch.equal(first, a & ~b)
    # pasted features: every cell shows the highest-priority source covering it; a higher occluder hides pastes
    target = torch.zeros(2, 3, 32, 32)
    pastes = [Paste(mask=m, features=torch.full((1, 3, 32, 32), float(v)), priority=p) for m, v, p in
              ((a, 1, 1.0), (b, 3, 3.0), (c, 2, 2.0))]  # fmt: skip
    out = ContentEdit("b32.conv1", pastes=pastes).apply(target, 32)
    expected = torch.where(b, 3.0, torch.where(c, 2.0, torch.where(a, 1.0, 0.0))).expand_as(out)
    assert torch.equal(out, expected)
    occluded = ContentEdit("b32.conv1", pastes=pastes, occluders=[(box(0, 0, 8, 32, n=2), 2.5)]).apply(target, 32)
    hidden = box(0, 0, 8, 32, n=2) & ~b
    assert (occluded[hidden.expand_as(out)] == 0).all() and torch.equal(occluded[~hidden.expand_as(out)],
                                                                       expected[~hidden.expand_as(out)])  # fmt: skip


def test_style_modulation_changes_only_the_masked_region_beyond_the_margin(G, ws, ws_other):
    before = render(G, ws)
    m = box(8, 12, 20, 28)
    for layers in (["b32"], ["b16.conv1", "b32"]):
        edit = LoganEdit(styles=[StyleRegion(mask=m, ws=ws_other, layers=layers)])
        after = render(G, ws, edit)
        diff = (after - before).abs()
        near = dilate(m, edit.margin(G)).expand_as(after)
        assert diff[~near].max() <= TOL
        assert diff[m.expand_as(after)].mean() > 1e-2
    half = LoganEdit(styles=[StyleRegion(mask=m, ws=ws_other, layers=["b32"], strength=0.0)])
    assert torch.equal(render(G, ws, half), before)


def test_an_inserted_object_with_its_source_styles_keeps_the_source_pixels_inside(G, ws, ws_other):
    from editing.features import layers_after

    m = box(4, 4, 28, 28)
    src = capture_source(G, ws_other, SITE)
    edit = LoganEdit(
        content=ContentEdit(SITE, pastes=[Paste(mask=m, features=src["features"], skip=src["skip"])]),
        styles=[StyleRegion(mask=m, ws=ws_other, layers=layers_after(G, SITE))],
    )
    after = render(G, ws, edit)
    inner = ~dilate(~m, edit.margin(G)).expand_as(after)  # the mask eroded by the margin
    assert inner.any()
    torch.testing.assert_close(after[inner], src["image"][inner], atol=TOL, rtol=0)
    assert (after - render(G, ws)).abs()[inner].mean() > 1e-2


def test_noise_must_be_deterministic(G, ws):
    with pytest.raises(ValueError, match="noise_mode"):
        render(G, ws, None, noise_mode="random")


def test_object_masks_and_label_map_parser(tmp_path):
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[0, 2:5, 2:5] = 3  # small bed
    labels[0, 8:14, 6:14] = 3  # large bed
    largest = object_masks(labels, [3])
    assert largest[0].sum() == 48 and largest[1].sum() == 0
    assert object_masks(labels, [3], 1)[0].sum() == 9 and object_masks(labels, [3], "all")[0].sum() == 57
    np.save(tmp_path / "a.npy", labels[0].numpy())
    from PIL import Image

    Image.fromarray(labels[1].numpy().astype(np.uint8)).save(tmp_path / "b.png")
    parser = LabelMapParser([str(tmp_path / "a.npy"), str(tmp_path / "b.png")])
    parsed = parser(torch.zeros(2, 3, 32, 32))
    assert parsed.shape == (2, 32, 32) and (parsed[0, 16:28, 12:28] == 3).all() and (parsed[1] == 0).all()
    with pytest.raises(ValueError, match="2 files for 3 target samples"):
        parser(torch.zeros(3, 3, 32, 32))


def test_checkpoint_parser_loads_plain_weights_only(tmp_path):
    net = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0]))
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "seg.pt")
    parser = CheckpointParser(torch.nn.Conv2d(3, 4, 1), tmp_path / "seg.pt", input_size=16, strip_prefix="model.")
    labels = parser(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert labels.shape == (2, 32, 32) and (labels == 2).all()
    torch.save({"state_dict": net.state_dict(), "extra": Transform()}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="weights_only"):
        CheckpointParser(torch.nn.Conv2d(3, 4, 1), tmp_path / "code.pt")
    with pytest.raises(ValueError, match="do not fit"):
        CheckpointParser(torch.nn.Conv2d(3, 5, 1), tmp_path / "seg.pt", strip_prefix="model.")


def test_palette_parser_recovers_the_labels_of_procedural_rooms():
    from datamodules.embedded_indoor import render_room

    scene = render_room(np.random.default_rng(5), 32)
    img = torch.from_numpy(scene.rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
    parser = PaletteParser()
    assert torch.equal(parser(img)[0], torch.from_numpy(scene.labels))
    assert parser.class_ids["bed"] == 3 and parser.class_ids["wall"] == 0
