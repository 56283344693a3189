"""Careless and odd data: declared channels, 16-bit images, empty conversions, read-only dataset folders,
skip counts of files (not events), evaluation sets without duplicates. Budget: < 15 s on 2 CPU cores."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import datamodules.side_files as side_files
from datamodules.dropping import DecodableLoader
from datamodules.images import ImageDataModule, ImageFolderDataset, decode_image
from datamodules.video import SemiSupervisedVideoDataModule, VideoClipDataset, VideoRecord
from datamodules.video_io import write_video
from experiments.prepare_data import convert

ROOT = Path(__file__).resolve().parents[2]


def _save(path: Path, array: np.ndarray) -> None:
    PIL.Image.fromarray(array).save(path)


def _mixed_folder(root: Path) -> Path:
    """An RGB set whose first file (in sorted order) is grayscale."""
    root.mkdir()
    rng = np.random.default_rng(0)
    _save(root / "0.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    for i in range(1, 4):
        _save(root / f"{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return root


def test_16_bit_grayscale_is_scaled_not_saturated():
    wide = np.array([[0, 257 * 100, 65535, 30000]], dtype=np.uint16)
    buf = io.BytesIO()
    PIL.Image.fromarray(wide).save(buf, format="png")
    assert decode_image(buf.getvalue())[0, :, 0].tolist() == [0, 100, 255, round(30000 / 257)]
    assert decode_image(buf.getvalue(), 3).shape == (1, 4, 3)


def test_declared_channels_decide_not_the_first_image(tmp_path):
    folder = _mixed_folder(tmp_path / "mixed")
    dm = ImageDataModule(str(folder), batch_size=2, num_workers=0, pin_memory=False, num_channels=3)
    dm.setup("fit")
    img, _ = next(iter(dm.train_dataloader()))
    assert dm.num_channels == 3 and img.shape == (2, 3, 8, 8)
    gray = np.asarray(PIL.Image.open(folder / "0.png"))
    assert torch.equal(dm.train_dataset[0][0], torch.from_numpy(np.stack([gray] * 3)))


def test_prepare_data_takes_colour_when_any_image_is_colour(tmp_path):
    folder = _mixed_folder(tmp_path / "mixed")
    convert(str(folder), str(tmp_path / "rgb.zip"), 8, progress=False)
    assert ImageFolderDataset(tmp_path / "rgb.zip").num_channels == 3
    gray_only = tmp_path / "gray"
    gray_only.mkdir()
    _save(gray_only / "a.png", np.zeros((8, 8), np.uint8))
    convert(str(gray_only), str(tmp_path / "gray.zip"), 8, progress=False)
    assert ImageFolderDataset(tmp_path / "gray.zip").num_channels == 1


def test_prepare_data_refuses_to_write_an_empty_dataset(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.png").write_bytes(b"not an image")
    dest = tmp_path / "out.zip"
    with pytest.raises(ValueError, match=r"none of the 3 images could be converted"):
        convert(str(src), str(dest), 8, progress=False)
    assert not dest.exists() and not Path(f"{dest}.partial").exists()
    cmd = [
        sys.executable,
        "experiments/prepare_data.py",
        "--source",
        str(src),
        "--dest",
        str(dest),
        "--resolution",
        "8",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "error:" in proc.stderr and "none of the 3 images" in proc.stderr


@pytest.fixture
def read_only(monkeypatch):
    """Folders registered here behave as a read-only mount (root ignores permission bits, so it is simulated)."""
    locked: list[Path] = []
    real = side_files.writable
    monkeypatch.setattr(
        side_files, "writable", lambda f: not any(Path(f).absolute().is_relative_to(p) for p in locked) and real(f)
    )
    return locked


def test_subset_file_of_read_only_data_goes_to_the_cache_or_names_the_key(tmp_path, read_only):
    data = tmp_path / "mnt"
    data.mkdir()
    for i in range(5):
        _save(data / f"{i}.png", np.full((8, 8, 3), i, np.uint8))
    read_only.append(tmp_path)  # the subset file's place, next to the dataset folder, is read-only
    with pytest.raises(PermissionError, match=r"read-only.*set data\.subset_file="):
        ImageFolderDataset(data, max_images=2)
    cache = tmp_path.parent / f"{tmp_path.name}_cache"
    ds = ImageFolderDataset(data, max_images=2, cache_dir=cache)
    assert len(ds) == 2
    written = list((cache / "side_files").glob("*_mnt.subset2_seed0.json"))
    assert len(written) == 1 and not list(tmp_path.glob("*.json"))
    assert ImageFolderDataset(data, max_images=2, cache_dir=cache).image_names() == ds.image_names()


def test_split_file_under_read_only_video_root_names_the_key(tmp_path, read_only):
    read_only.append(tmp_path)
    dm = SemiSupervisedVideoDataModule(root=str(tmp_path / "ucf"))
    with pytest.raises(PermissionError, match=r"set data\.split_dir="):
        _ = dm.split_file
    dm = SemiSupervisedVideoDataModule(root=str(tmp_path / "ucf"), split_dir=str(tmp_path / "elsewhere"))
    assert dm.split_file.parent == tmp_path / "elsewhere"


def test_skip_count_counts_files_across_epochs_and_workers(tmp_path):
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(b"corrupt" if i % 2 else _png_bytes(i))
    ds = ImageFolderDataset(tmp_path, resolution=8, num_channels=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    for _epoch in range(2):  # fresh worker processes each epoch
        assert sum(len(b[0]) for b in loader) == 6
    assert ds.skips.count == 3 and ds.skips.events == 6


def _png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "png")
    return buf.getvalue()


def test_evaluation_drops_an_undecodable_video_instead_of_duplicating_a_neighbour(tmp_path):
    records = []
    for i in range(3):
        path = tmp_path / f"v{i}.avi"
        write_video(str(path), np.full((6, 16, 16, 3), 40 * i, np.uint8), fps=10)
        records.append(VideoRecord(str(path), path.name, i))
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    records.insert(1, VideoRecord(str(bad), bad.name, 9))
    ds = VideoClipDataset(records, frames=2, stride=1, size=(16, 16), sampling="uniform", name="eval")
    labels = [int(y) for b in DecodableLoader(ds, batch_size=2) for y in b["label"]]
    assert labels == [0, 1, 2]  # each decodable video once, the broken one dropped
    assert ds.skips.count == 1
    lone = VideoClipDataset(records[1:2], frames=2, stride=1, size=(16, 16), sampling="uniform")
    assert list(DecodableLoader(lone, batch_size=1)) == []  # a batch of which nothing is left is skipped
    training = VideoClipDataset(records, frames=2, stride=1, size=(16, 16), sampling="random")
    assert training[1]["index"] == 2  # training still replaces it, so batches stay full
