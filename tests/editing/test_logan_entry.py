"""experiments/edit.py method=logan on a tiny StyleGAN2 file: grid, changed-region grid, before/after HTML and
metrics; objects by box (no parser) and by class from user label maps (remove, move, clear out, refurnish)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from networks.checkpoint import save_networks
from tests.editing.toys import tiny_stylegan2

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-6


@pytest.fixture(scope="module")
def network_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "tiny_g32.pt"
    G = tiny_stylegan2(res=32)
    save_networks(path, {"G": G, "G_ema": G})
    return path


def _cfg(network_file, out, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "edit",
            overrides=[
                "edit=demo",
                "method=logan",
                f"network={network_file}",
                f"output_dir={out}",
                f"paths.log_dir={out}",
                "device=cpu",
                "logan.num_samples=2",
                "logan.html_size=32",
                "logan.content.layer=b16.conv1",
                "logan.style.layers=[b32]",
                *overrides,
            ],
        )


def _check_outputs(out: Path, columns: list[str], rows: int) -> dict:
    with Image.open(out / "logan" / "grid.png") as im:
        assert im.size == (len(columns) * 32, rows * 32)
        grid = np.asarray(im).astype(np.int16)
    before = grid[:, :32]
    for k in range(1, len(columns)):  # every operation changes the image
        assert np.abs(grid[:, 32 * k : 32 * (k + 1)] - before).max() > 0, columns[k]
    with Image.open(out / "logan" / "masks.png") as im:
        assert im.size == (len(columns) * 32, rows * 32)
    html = (out / "logan" / "index.html").read_text()
    assert all(f"<th>{c}</th>" in html for c in columns) and html.count("<img") == 2 * len(columns) * rows
    metrics = json.loads((out / "logan" / "metrics.json").read_text())
    assert list(metrics) == columns[1:]
    for name, m in metrics.items():
        assert m["max_abs_out"] <= TOL, name  # nothing changes beyond the changed region + margin
    return metrics


def test_logan_entry_point_with_boxes_writes_grids_html_and_metrics(network_file, tmp_path):
    import experiments.edit as edit

    cfg = _cfg(network_file, tmp_path)
    result = edit.run(cfg)
    columns = ["before", "remove", "shift", "rotate", "insert", "restyle"]
    assert result["logan"]["columns"] == columns
    metrics = _check_outputs(tmp_path, columns, rows=2)
    assert metrics["remove"]["samples_changed"] == 2 and metrics["remove"]["margin_px"] == 5
    assert metrics["restyle"]["mse_in"] > 0
    assert json.loads((tmp_path / "edit_result.json").read_text())["logan"]["columns"] == columns


def test_logan_entry_point_with_label_maps_clears_out_and_refurnishes(network_file, tmp_path):
    import experiments.edit as edit

    maps = []
    for i in range(2):
        lab = np.zeros((32, 32), np.int64)  # wall above, floor below, one bed (class 3) per room
        lab[16:] = 1
        lab[12 + 2 * i : 24, 6 + 4 * i : 20 + 4 * i] = 3
        lab[4:8, 24:28] = 4  # a painting on the wall
        np.save(tmp_path / f"labels_{i}.npy", lab)
        maps.append(str(tmp_path / f"labels_{i}.npy"))
    cfg = _cfg(network_file, tmp_path / "run", "logan.masks.parser=label_maps")
    cfg.logan.masks.label_maps = maps
    cfg.logan.masks.class_ids = {"wall": 0, "floor": 1, "bed": 3, "painting": 4}
    cfg.logan.masks.layout_classes = ["wall", "floor"]
    cfg.logan.priority = ["wall", "floor", "painting", "bed"]
    cfg.logan.operations = [
        {"name": "remove bed", "op": "remove", "object": {"class": "bed"}},
        {"name": "shift bed", "op": "move", "object": {"class": "bed"}, "shift": [-64, 48], "priority": "class"},
        {"name": "restyle bed", "op": "restyle", "object": {"class": "bed"}, "style_seed": 9},
        {"name": "clear out", "op": "clearout"},
        {
            "name": "refurnish",
            "op": "refurnish",
            "items": [{"source_seed": 5, "object": {"box": [176, 128, 96, 96]}, "style_seed": 7}],
            "room_style_seed": 8,
        },
    ]
    result = edit.run(cfg)
    columns = ["before", "remove bed", "shift bed", "restyle bed", "clear out", "refurnish"]
    metrics = _check_outputs(tmp_path / "run", columns, rows=2)
    assert all(m["samples_changed"] == 2 for m in metrics.values())
    assert result["logan"]["metrics"]["clear out"]["mse_in"] > 0
    bad = [{"name": "insert bed", "op": "insert", "source_seed": 1, "object": {"class": "bed"}}]
    cfg.logan.operations = bad  # label maps only know the targets: a source needs a box
    with pytest.raises(ValueError, match="needs a label map"):
        edit.run(cfg)
