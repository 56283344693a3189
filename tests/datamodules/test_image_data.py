"""Tests of datamodules/{base,images,embedded}.py and experiments/prepare_data.py. Budget: under 45 s."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import lmdb
import numpy as np
import PIL.Image
import pytest
import torch

from datamodules.base import InfiniteSampler, SkipCounter, per_rank_batch_size, select_subset
from datamodules.embedded import EmbeddedImageDataModule
from datamodules.images import ImageDataModule, ImageFolderDataset
from experiments.prepare_data import convert


def _png(seed: int, size: int = 16, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buf = io.BytesIO()
    PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buf, format="png")
    return buf.getvalue()


def _zip(path: Path, n: int, labels=None, size: int = 16) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            zf.writestr(f"{i // 1000:05d}/img{i:08d}.png", _png(i, size))
        if labels is not None:
            zf.writestr("dataset.json", json.dumps({"labels": labels}))
    return path


def _names(n: int) -> list[str]:
    return [f"{i // 1000:05d}/img{i:08d}.png" for i in range(n)]


def test_per_rank_batch_size():
    assert per_rank_batch_size(32, 4) == 8
    with pytest.raises(ValueError, match="divisible by the world size 3"):
        per_rank_batch_size(32, 3)


def test_zip_reader_unconditional_and_labels(tmp_path):
    path = _zip(tmp_path / "d.zip", 6, labels=[[n, i % 3] for i, n in enumerate(_names(6))])
    ds = ImageFolderDataset(path, use_labels=True)
    img, c = ds[4]
    assert img.dtype == torch.uint8 and img.shape == (3, 16, 16)
    assert c.tolist() == [0.0, 1.0, 0.0] and ds.label_dim == 3
    raw = np.array(PIL.Image.open(io.BytesIO(_png(4))))
    assert torch.equal(img, torch.from_numpy(raw).permute(2, 0, 1))
    assert ImageFolderDataset(path).label_dim == 0


def test_zip_without_dataset_json_and_labels_requested(tmp_path):
    path = _zip(tmp_path / "d.zip", 3)
    assert len(ImageFolderDataset(path)) == 3
    with pytest.raises(FileNotFoundError, match="no dataset.json"):
        ImageFolderDataset(path, use_labels=True)


def test_bad_labels_are_clear_errors(tmp_path):
    missing = _zip(tmp_path / "m.zip", 3, labels=[[n, 0] for n in _names(2)])
    with pytest.raises(KeyError, match="1 images have no label"):
        ImageFolderDataset(missing, use_labels=True)
    ragged = _zip(tmp_path / "r.zip", 2, labels=[[_names(2)[0], [0.5, 1.0]], [_names(2)[1], [0.5]]])
    with pytest.raises(ValueError, match="one length"):
        ImageFolderDataset(ragged, use_labels=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope.zip")


def test_lmdb_reader_with_center_crop(tmp_path):
    env = lmdb.open(str(tmp_path / "lsun"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(4):
            buf = io.BytesIO()
            PIL.Image.new("RGB", (24, 16), (i * 50, 0, 0)).save(buf, format="webp", lossless=True)
            txn.put(f"key{i:03d}".encode(), buf.getvalue())
    env.close()
    ds = ImageFolderDataset(tmp_path / "lsun", resolution=8, transform="center-crop", resize_filter="box")
    img, _ = ds[2]
    assert len(ds) == 4 and img.shape == (3, 8, 8)
    assert int(img[0].min()) == int(img[0].max()) == 100


def test_folder_with_corrupt_file_skipped_and_counted(tmp_path):
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(_png(i))
    (tmp_path / "2.png").write_bytes(b"not an image")
    ds = ImageFolderDataset(tmp_path)
    items = [ds[i][0] for i in range(len(ds))]
    assert ds.skips.count == 1
    assert torch.equal(items[2], items[3])  # replaced by the next image: batches stay full


def test_skip_counter_counts_across_worker_processes(tmp_path):
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(_png(i) if i % 2 == 0 else b"corrupt")
    ds = ImageFolderDataset(tmp_path, resolution=16)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    batches = list(loader)
    assert sum(b[0].shape[0] for b in batches) == 6 and ds.skips.count == 3
    assert isinstance(ds.skips, SkipCounter)


def test_xflip_doubles(tmp_path):
    ds = ImageFolderDataset(_zip(tmp_path / "d.zip", 3), xflip=True)
    assert len(ds) == 6
    assert torch.equal(ds[4][0], ds[1][0].flip(-1))


def test_subset_reproducible_file_written_and_reused(tmp_path):
    path = _zip(tmp_path / "d.zip", 20)
    a = ImageFolderDataset(path, max_images=5, seed=3)
    sub = tmp_path / "d.zip.subset5_seed3.json"
    assert sub.is_file()
    chosen = json.loads(sub.read_text())["names"]
    assert a.image_names() == chosen == [_names(20)[i] for i in select_subset(20, 5, 3)]
    assert ImageFolderDataset(path, max_images=5, seed=3).image_names() == chosen
    # a hand-edited subset file wins over the seed: it is reused, not redrawn
    sub.write_text(json.dumps({"names": _names(20)[:5]}))
    assert ImageFolderDataset(path, max_images=5, seed=3).image_names() == _names(20)[:5]


@pytest.mark.parametrize("world", [1, 3, 4])
def test_infinite_sampler_shards_cover_dataset_once_per_pass(world):
    n = 10
    streams = [iter(InfiniteSampler(n, rank=r, world_size=world, seed=1)) for r in range(world)]
    taken = []
    while len(taken) < n:  # interleave ranks in global-position order
        for s in streams:
            if len(taken) < n:
                taken.append(next(s))
    assert sorted(taken) == list(range(n))
    with pytest.raises(TypeError):
        len(InfiniteSampler(n))


def test_infinite_sampler_resume_continues_exactly():
    full = InfiniteSampler(7, rank=1, world_size=2, seed=5)
    it = iter(full)
    ref = [next(it) for _ in range(12)]
    resumed = InfiniteSampler(7, rank=1, world_size=2, seed=5)
    resumed.load_state_dict({"position": 10, "seed": 5, "dataset_len": 7})
    it2 = iter(resumed)
    assert [next(it2) for _ in range(7)] == ref[5:]
    with pytest.raises(ValueError, match="seed"):
        resumed.load_state_dict({"position": 0, "seed": 6, "dataset_len": 7})


@pytest.mark.parametrize("name,channels,label_dim", [("faces", 3, 0), ("digits", 1, 10)])
def test_embedded_datamodule_batches(name, channels, label_dim):
    dm = EmbeddedImageDataModule(name=name, batch_size=8, use_labels=name == "digits", label_dim=label_dim)
    dm.setup("fit")
    img, c = next(iter(dm.train_dataloader()))
    assert img.dtype == torch.uint8 and img.shape == (8, channels, 32, 32)
    assert c.dtype == torch.float32 and c.shape == (8, label_dim)
    assert (dm.resolution, dm.num_channels, dm.label_dim) == (32, channels, label_dim)
    assert len(dm.reference_dataset("full")) == (100 if name == "faces" else 1797)


def test_datamodule_checks_declared_label_dim_and_saves_position(tmp_path):
    with pytest.raises(ValueError, match="data.label_dim=3"):
        EmbeddedImageDataModule(name="faces", batch_size=4, label_dim=3).setup("fit")
    dm = ImageDataModule(str(_zip(tmp_path / "d.zip", 5)), batch_size=4, num_workers=0, pin_memory=False)
    dm.load_state_dict({"sampler": {"position": 8, "seed": 0, "dataset_len": 5}})
    dm.setup("fit")
    assert dm.train_dataloader().sampler.position == 8


def test_prepare_data_rerun_identical_and_counts_skips(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        PIL.Image.fromarray(np.full((20, 30, 3), i * 40, np.uint8)).save(src / f"{i}.jpg")
    (src / "bad.png").write_bytes(b"broken")
    counts = convert(str(src), str(tmp_path / "a.zip"), 8, transform="center-crop", progress=False)
    assert counts["written"] == 5 and counts["undecodable (UnidentifiedImageError)"] == 1
    convert(str(src), str(tmp_path / "b.zip"), 8, transform="center-crop", progress=False)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    ds = ImageFolderDataset(tmp_path / "a.zip")
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.namelist()[0] == "00000/img00000000.png" and json.loads(zf.read("dataset.json")) == {"labels": None}
    assert len(ds) == 5 and ds.resolution == 8
