"""experiments/edit.py end to end on a tiny StyleGAN2 file written with networks.checkpoint.save_networks
(zhujiapeng/resefa manipulate.py outputs): direction files, grid PNG, HTML page, video, masked-MSE metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from networks.checkpoint import save_networks
from tests.editing.toys import tiny_stylegan2

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def network_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "tiny_g.pt"
    G = tiny_stylegan2(res=16)
    save_networks(path, {"G": G, "G_ema": G})
    return path


def test_edit_entry_point_writes_grid_html_and_video(network_file, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "edit.py"),
        "edit=demo",
        f"network={network_file}",
        f"output_dir={out}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "edit.video=mp4",
        "jacobian.impl=batch",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = np.load(out / "directions" / "eyes" / "image_00_region_eyes_name_resefa.npy")
    assert dirs.shape == (16, 16) and np.allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-5)
    summary = json.loads((out / "directions" / "summary.json").read_text())
    assert summary["seconds_per_direction_set"] > 0 and len(summary["regions"]["eyes"]) == 2
    edits = out / "edits" / "eyes"
    with Image.open(edits / "grid_direction_00.png") as im:
        assert im.size == (7 * 64, 3 * 64)  # ReSeFa's 7 alphas x the demo's 3 samples at html_size 64
        grid = np.asarray(im)
    assert grid[:, :64].std() > 1  # not blank
    html = (edits / "index.html").read_text()
    assert html.count("<img") == 21 and "&alpha; = +10.00" in html
    import av

    with av.open(str(edits / "direction_00.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 12 and frames[0].width == 3 * 64
    curve = json.loads((edits / "metrics.json").read_text())["direction_00"]
    assert curve[3]["alpha"] == 0.0 and curve[3]["mse_in"] < 1e-10 and curve[-1]["mse_in"] > 1e-4


def test_edit_lowrankgan_in_process_with_gif(network_file, tmp_path):
    import experiments.edit as edit

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "edit",
            overrides=[
                "edit=demo",
                f"network={network_file}",
                f"output_dir={tmp_path}",
                "method=lowrankgan",
                "jacobian.num_samples=1",
                "region.box=[128,128,96,96]",
                "edit.num_samples=2",
                "lowrank.projected=true",
                "paths.log_dir=" + str(tmp_path),
            ],
        )
    assert cfg.jacobian.reduce == "mean" and cfg.edit.truncation_psi == 1.0  # the switch carries the defaults
    result = edit.run(cfg)
    entry = result["directions"]["regions"]["box"][0]
    raw, proj = np.load(entry["path"]), np.load(entry["projected_path"])
    assert raw.shape[0] == entry["rank_fore"] >= 1 and proj.shape == raw.shape
    assert np.allclose(np.linalg.norm(proj, axis=1), 1.0)
    gif = tmp_path / "edits" / "box" / "direction_00.gif"
    with Image.open(gif) as im:
        assert im.n_frames == 12
    assert (tmp_path / "edits" / "box" / "index.html").is_file()


def test_every_edit_preset_composes(network_file):
    presets = sorted(p.stem for p in (ROOT / "conf" / "edit").glob("*.yaml"))
    assert "demo" in presets and "resefa_ffhq_eyes" in presets and "lowrankgan_ffhq_eyes" in presets
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for name in presets:
            cfg = compose("edit", overrides=[f"edit={name}", f"network={network_file}", "output_dir=/tmp/x"])
            assert cfg.preset == name and cfg.method in ("resefa", "lowrankgan", "logan")
            if cfg.method == "logan":
                assert len(cfg.logan.operations) >= 1 and cfg.logan.masks.parser in ("none", "palette", "checkpoint")
            else:
                assert len(cfg.edit.layers) >= 1 and cfg.edit.num_alphas >= 3
