"""Tests of datamodules/rgbd.py (RGB-D pairs from a zip or folder). Budget: under 10 s."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

import datamodules.side_files as side_files
from datamodules.rgbd import (
    RGBDDataModule,
    RGBDDataset,
    encode_depth_png,
    encode_depth_uint16,
    normalize_depth,
    split_pairs,
)


def _rgb(seed: int, size=(8, 8), fmt: str = "png") -> tuple[np.ndarray, bytes]:
    arr = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format=fmt)
    return arr, buf.getvalue()


def _depth(seed: int, size=(8, 8)) -> tuple[np.ndarray, bytes]:
    codes = np.random.default_rng(100 + seed).integers(0, 60001, size, dtype=np.uint16)
    return codes, encode_depth_png(codes)


def _png8(size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(np.zeros(size, np.uint8)).save(buf, format="png")
    return buf.getvalue()


def _write_zip(path: Path, files: dict[str, bytes], meta=None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        if meta is not None:
            zf.writestr("dataset.json", json.dumps(meta))
    return path


def _expected(rgb: np.ndarray, codes: np.ndarray) -> torch.Tensor:
    out = np.concatenate([rgb.astype(np.float32) / 127.5 - 1, normalize_depth(codes)[..., None]], axis=-1)
    return torch.from_numpy(out).permute(2, 0, 1)


def test_zip_pairs_normalises_and_skips_and_counts(tmp_path):
    files, arrays, pairs = {}, {}, []
    for i in range(5):
        rgb, rgb_bytes = _rgb(i)
        codes, depth_bytes = _depth(i)
        files[f"rgb/{i:03d}.png"], files[f"depth/{i:03d}.png"] = rgb_bytes, depth_bytes
        arrays[i] = (rgb, codes)
        pairs.append([f"rgb/{i:03d}.png", f"depth/{i:03d}.png"])
    files["rgb/001.png"] = b"corrupt"  # undecodable RGB
    files["depth/002.png"] = _png8()  # 8-bit depth
    files["depth/003.png"] = _depth(3, (4, 4))[1]  # size differs from its RGB
    pairs.append(["rgb/009.png", "depth/009.png"])  # listed, absent: unpaired
    path = _write_zip(tmp_path / "bedroom.zip", files, {"pairs": pairs, "depth": {"rule": "minmax"}})
    ds = RGBDDataset(path, split="all")
    assert len(ds) == 5 and ds.resolution == 8 and ds.num_channels == 4
    assert ds.skips.count == 1  # the unpaired entry, counted at construction
    items = [ds[i][0] for i in range(5)]
    # + corrupt RGB (1), 8-bit depth (2), size mismatch (3), each replaced by the next pair: 4 distinct files;
    # item 1 meets all three bad pairs, item 2 two and item 3 one: 7 skip events
    assert ds.skips.count == 4 and ds.skips.events == 1 + 3 + 2 + 1
    for i in (0, 4):
        torch.testing.assert_close(items[i], _expected(*arrays[i]), rtol=0, atol=1e-6)
    for i in (1, 2, 3):
        torch.testing.assert_close(items[i], items[4])
    assert ds.depth_record == {"rule": "minmax"}
    assert items[0].dtype == torch.float32 and ds[0][1].shape == (0,)


def test_folder_layout_and_original_lists_pair_by_name(tmp_path):
    root = tmp_path / "kitchen"
    (root / "rgb" / "a").mkdir(parents=True)
    (root / "depth" / "a").mkdir(parents=True)
    arrays = {}
    for i in (0, 1, 3):
        rgb, rgb_bytes = _rgb(i, fmt="png")
        (root / "rgb" / "a" / f"{i}.png").write_bytes(rgb_bytes)
        arrays[i] = rgb
    for i in (0, 2, 3):
        codes, data = _depth(i)
        (root / "depth" / "a" / f"{i}.png").write_bytes(data)
        arrays[i] = (arrays.get(i), codes)
    ds = RGBDDataset(root, split="all")
    assert ds.raw_names == ["rgb/a/0.png", "rgb/a/3.png"] and ds.skips.count == 2  # rgb 1 and depth 2 unpaired
    torch.testing.assert_close(ds[1][0], _expected(*arrays[3]), rtol=0, atol=1e-6)
    # the original's rgb_paths / depth_paths lists: paired by name, so the missing depth 1 shifts nothing
    meta = {"rgb_paths": [f"rgb/a/{i}.png" for i in (0, 1, 3)], "depth_paths": [f"depth/a/{i}.png" for i in (0, 3)]}
    (root / "dataset.json").write_text(json.dumps(meta))
    listed = RGBDDataset(root, split="all")
    assert listed.raw_names == ["rgb/a/0.png", "rgb/a/3.png"] and listed.skips.count == 1
    torch.testing.assert_close(listed[1][0], ds[1][0])


def _simple_zip(tmp_path: Path, n: int, size=(8, 8)) -> Path:
    files, pairs = {}, []
    for i in range(n):
        files[f"rgb/{i:03d}.jpg"] = _rgb(i, size, fmt="jpeg")[1]
        files[f"depth/{i:03d}.png"] = _depth(i, size)[1]
        pairs.append([f"rgb/{i:03d}.jpg", f"depth/{i:03d}.png"])
    return _write_zip(tmp_path / "d.zip", files, {"pairs": pairs})


def test_split_file_written_once_and_reused(tmp_path, monkeypatch):
    path = _simple_zip(tmp_path, 10)
    train = RGBDDataset(path, split="train", val_fraction=0.2)
    split_file = tmp_path / "d.zip.split_val0.2.json"
    data = json.loads(split_file.read_text())
    assert data["val"] == ["rgb/008.jpg", "rgb/009.jpg"] == RGBDDataset(path, split="val", val_fraction=0.2).raw_names
    assert train.raw_names == data["train"] and len(train) == 8
    data["val"], data["train"] = data["train"][:2], data["train"][2:] + data["val"]  # a hand-edited split wins
    split_file.write_text(json.dumps(data))
    assert RGBDDataset(path, split="val", val_fraction=0.2).raw_names == data["val"]
    with pytest.raises(ValueError, match="val_fraction=0.2"):
        RGBDDataset(path, split="val", val_fraction=0.1, split_file=split_file)
    assert split_pairs([f"{i}" for i in range(200)], 0.01)[1] == ["98", "99"]  # sorted as strings: last 1 %
    # read-only data folder: the split goes to the cache folder, else an error names the key to set
    monkeypatch.setattr(side_files, "writable", lambda folder: Path(folder).resolve() != tmp_path.resolve())
    cached = RGBDDataset(path, split="train", val_fraction=0.5, cache_dir=tmp_path / "cache")
    assert cached.split_file.parent == tmp_path / "cache" / "side_files" and cached.split_file.is_file()
    with pytest.raises(PermissionError, match="data.split_file"):
        RGBDDataset(path, split="train", val_fraction=0.3)


def test_crop_resize_and_xflip_move_rgb_and_depth_together(tmp_path):
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[:, 8:] = 255  # right half white
    codes = np.zeros((12, 16), np.uint16)
    codes[:, 8:] = 60000  # right half far
    buf = io.BytesIO()
    PIL.Image.fromarray(rgb).save(buf, format="png")
    path = _write_zip(
        tmp_path / "c.zip",
        {"rgb/0.png": buf.getvalue(), "depth/0.png": encode_depth_png(codes)},
        {"pairs": [["rgb/0.png", "depth/0.png"]]},
    )
    ds = RGBDDataset(path, resolution=6, split="all", xflip=True, resize_filter="box", depth_resize_filter="box")
    x, flipped = ds[0][0], ds[1][0]
    assert x.shape == (4, 6, 6)
    assert float(x[0, :, 0].max()) == -1 and float(x[0, :, -1].min()) == 1  # centre crop keeps both halves
    assert float(x[3, :, 0].max()) == -1 and float(x[3, :, -1].min()) == 1
    torch.testing.assert_close(flipped, x.flip(-1))


def test_datamodule_batches_and_reference_split(tmp_path):
    path = _simple_zip(tmp_path, 6)
    dm = RGBDDataModule(str(path), batch_size=2, num_workers=0, pin_memory=False, val_fraction=0.34, num_channels=4)
    dm.prepare_data()
    assert (tmp_path / "d.zip.split_val0.34.json").is_file()
    dm.setup("fit")
    x, c = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 4, 8, 8) and x.dtype == torch.float32 and c.shape == (2, 0)
    ref = dm.reference_dataset("full")
    assert ref.raw_names == ["rgb/004.jpg", "rgb/005.jpg"] and len(dm.train_dataset) == 4


def test_depth_encoding_rules():
    depth = np.array([[1.0, 2.0], [3.0, 5.0]])
    assert encode_depth_uint16(depth, "minmax").tolist() == [[0, 15000], [30000, 60000]]
    np.testing.assert_array_equal(normalize_depth(encode_depth_uint16(depth, "minmax")), [[-1, -0.5], [0, 1]])
    assert encode_depth_uint16(depth, "fixed", (2.0, 4.0)).tolist() == [[0, 0], [30000, 60000]]
    assert encode_depth_uint16(np.ones((2, 2)), "minmax").tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="non-finite"):
        encode_depth_uint16(np.array([np.nan]))


@pytest.mark.parametrize(
    "name",
    [
        "embedded_indoor",
        "embedded_indoor_rgbd",
        "lsun_bedroom256_rgbd",
        "lsun_bedroom128_rgbd",
        "lsun_kitchen256_rgbd",
        "lsun_kitchen128_rgbd",
    ],
)
def test_data_configs_compose_and_instantiate(name):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={name}"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    dm = instantiate(data)
    assert dm.batch_size == data["batch_size"] and data["num_channels"] == (3 if name == "embedded_indoor" else 4)
    if "lsun" in name:
        assert data["resolution"] == int(name.split("_")[1][-3:]) and name.split("_")[1][:-3] in data["path"]
