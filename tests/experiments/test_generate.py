"""experiments/convert.py + experiments/generate.py end to end on a fixture snapshot, through main(argv).
Budget: < 15 s on 2 CPU cores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from experiments import convert, generate
from tests.golden import STYLEGAN2_ADA, needs_stylegan2_ada

FIXTURES = STYLEGAN2_ADA
pytestmark = needs_stylegan2_ada


def test_parse_range():
    assert generate.parse_range("0-3,5") == [0, 1, 2, 3, 5]
    assert generate.parse_range("7") == [7]
    with pytest.raises(Exception, match="expected ranges"):
        generate.parse_range("1-x")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The small snapshot converted by ``convert.py SRC OUT``."""
    out = tmp_path_factory.mktemp("conv") / "small.pt"
    assert convert.main([str(FIXTURES / "stylegan2_small_snapshot.pkl"), str(out)]) == 0
    return out


def test_convert_writes_plain_network_file(converted):
    raw = torch.load(converted, weights_only=True)
    assert sorted(raw["networks"]) == ["D", "G", "G_ema"]
    assert raw["meta"]["source_format"] == "nvlabs-pickle"
    assert raw["meta"]["converted_from"].endswith("stylegan2_small_snapshot.pkl")


def test_generate_pngs_grid_and_array(converted, tmp_path):
    out = tmp_path / "out"
    rc = generate.main(
        [
            "--network",
            str(converted),
            "--seeds",
            "0-2,5",
            "--trunc",
            "0.7",
            "--outdir",
            str(out),
            "--save-array",
            "--batch",
            "3",
        ]
    )
    assert rc == 0
    names = ["seed0000.png", "seed0001.png", "seed0002.png", "seed0005.png"]
    assert sorted(p.name for p in out.glob("seed*.png")) == names
    arr = np.load(out / "images.npy")
    assert arr.dtype == np.float32 and arr.shape == (4, 3, 32, 32)
    png = np.asarray(Image.open(out / "seed0005.png"))
    expected = np.clip(arr[3].transpose(1, 2, 0) * 127.5 + 128, 0, 255).astype(np.uint8)
    assert np.array_equal(png, expected)
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == (64, 64, 3)
    assert np.array_equal(grid[32:, 32:], expected)
    # Same seeds straight from the NVlabs pickle (converted on the fly) give the same pixels.
    direct = tmp_path / "direct"
    generate.main(
        [
            "--network",
            str(FIXTURES / "stylegan2_small_snapshot.pkl"),
            "--seeds",
            "5",
            "--trunc",
            "0.7",
            "--outdir",
            str(direct),
        ]
    )
    assert np.array_equal(np.asarray(Image.open(direct / "seed0005.png")), png)


def test_generate_from_z_file_conditional(tmp_path):
    z = np.random.RandomState(0).randn(3, 32).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    net = str(FIXTURES / "stylegan2_cond_snapshot.pkl")
    with pytest.raises(ValueError, match="conditional with 5 classes"):
        generate.main(["--network", net, "--z", str(tmp_path / "z.npy"), "--outdir", str(tmp_path / "o")])
    generate.main(
        [
            "--network",
            net,
            "--z",
            str(tmp_path / "z.npy"),
            "--class",
            "2",
            "--noise-mode",
            "none",
            "--outdir",
            str(tmp_path / "o"),
            "--save-array",
        ]
    )
    arr = np.load(tmp_path / "o" / "images.npy")
    assert arr.shape == (3, 3, 16, 16)
    assert sorted(p.name for p in (tmp_path / "o").glob("z*.png")) == ["z0000.png", "z0001.png", "z0002.png"]


def test_generate_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        generate.main(["--network", str(tmp_path / "missing.pkl"), "--seeds", "0", "--outdir", str(tmp_path)])
    np.save(tmp_path / "bad.npy", np.zeros([2, 5], dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected an array \[N, 64\]"):
        generate.main(
            [
                "--network",
                str(FIXTURES / "stylegan2_small_snapshot.pkl"),
                "--z",
                str(tmp_path / "bad.npy"),
                "--outdir",
                str(tmp_path),
            ]
        )


def test_convert_main_unknown_format(tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("hello")
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        convert.main([str(src), str(tmp_path / "out.pt")])
