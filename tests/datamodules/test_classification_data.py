"""Tests of datamodules/classification.py: CIFAR-10 pickles, ImageNet folders, digits.

Budget: under 10 s on 2 CPU cores. Every dataset here is written by the test itself.
"""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.base import SkipCounter
from datamodules.classification import (
    CIFAR_MEAN,
    CIFAR_STD,
    ClassificationDataModule,
    ImageFolderClassification,
    read_cifar10,
)


def _py2_pickle(obj) -> bytes:
    """Protocol 2 as Python 2's cPickle wrote the CIFAR-10 release: str as BINSTRING, numpy.core globals."""
    out = [b"\x80\x02"]

    def string(raw: bytes) -> None:
        out.append(b"T" + len(raw).to_bytes(4, "little") + raw)

    def put(o) -> None:
        if isinstance(o, dict):
            out.append(b"}(")
            for k, v in o.items():
                put(k)
                put(v)
            out.append(b"u")
        elif isinstance(o, list):
            out.append(b"](")
            for v in o:
                put(v)
            out.append(b"e")
        elif isinstance(o, tuple):
            out.append(b"(")
            for v in o:
                put(v)
            out.append(b"t")
        elif isinstance(o, str):
            string(o.encode("latin1"))
        elif isinstance(o, bool):
            out.append(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            out.append(b"J" + o.to_bytes(4, "little", signed=True))
        elif o is None:
            out.append(b"N")
        else:  # a uint8 numpy array: _reconstruct(ndarray, (0,), 'b') + BUILD state
            out.append(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            put((0,))
            string(b"b")
            out.append(b"\x87R")
            out.append(b"(J\x01\x00\x00\x00")
            put(tuple(o.shape))
            out.append(b"cnumpy\ndtype\n")
            string(b"u1")
            out.append(b"K\x00K\x01\x87R")
            put((3, "|", None, None, None, -1, -1, 0))
            out.append(b"b\x89")
            string(o.tobytes())
            out.append(b"tb")

    put(obj)
    return b"".join(out) + b"."


def _dump(path: Path, obj, protocol) -> None:
    path.write_bytes(_py2_pickle(obj) if protocol == "py2" else pickle.dumps(obj, protocol=protocol))


def _write_cifar(root, rows_per_batch=3, bad_label_in_test=True, protocol=4):
    """Tiny CIFAR-10 release: pixel value = (row index + channel * 10) so the layout can be checked."""
    root.mkdir(parents=True, exist_ok=True)
    py2 = protocol == "py2"  # Python 2 strings come back as bytes keys, as in the real release
    meta = {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}
    _dump(root / "batches.meta", meta, protocol)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = np.zeros((rows_per_batch, 3072), np.uint8)
        for r in range(rows_per_batch):
            for c in range(3):
                data[r, c * 1024 : (c + 1) * 1024] = r + 10 * c
            data[r, 5] = 200  # channel 0, pixel (0, 5)
        labels = [r % 10 for r in range(rows_per_batch)]
        if name == "test_batch" and bad_label_in_test:
            labels[1] = 12  # out of range -> skipped and counted
        batch = {"data": data, "labels": labels, "batch_label": name}
        if not py2:
            batch = {k.encode(): v.encode() if isinstance(v, str) else v for k, v in batch.items()}
        _dump(root / name, batch, protocol)


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_cifar10_pickle_reader_layout_and_skips(tmp_path, protocol):
    _write_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    skips = SkipCounter("test")
    x, y, names = read_cifar10(tmp_path, train=True, skips=skips)  # finds the nested folder
    assert x.shape == (15, 32, 32, 3) and x.dtype == np.uint8 and names[3] == "c3"
    assert y.tolist() == [0, 1, 2] * 5
    assert x[1, 0, 0].tolist() == [1, 11, 21]  # CHW planes -> HWC
    assert x[0, 0, 5, 0] == 200 and x[0, 5, 0, 0] == 0  # row-major within a plane
    assert skips.count == 0
    xt, yt, _ = read_cifar10(tmp_path, train=False, skips=skips)
    assert len(xt) == 2 and yt.tolist() == [0, 2] and skips.count == 1


def test_cifar10_errors_name_the_file(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        read_cifar10(tmp_path, True, SkipCounter())
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test_batch"):
        read_cifar10(tmp_path, False, SkipCounter())


class _Payload:
    """Unpickling this creates ``marker``: the stand-in for code a planted file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("planted", ["batches.meta", "data_batch_2"])
def test_cifar10_planted_pickle_is_refused_without_running(tmp_path, planted):
    _write_cifar(tmp_path)
    marker = tmp_path / "ran"
    content = {b"data": _Payload(marker), b"labels": [0]} if planted != "batches.meta" else _Payload(marker)
    (tmp_path / planted).write_bytes(pickle.dumps(content))
    with pytest.raises(ValueError, match=rf"{planted}.*refusing to load global 'io.open'"):
        read_cifar10(tmp_path, True, SkipCounter())
    assert not marker.exists()


def test_cifar10_datamodule_normalises_and_batches(tmp_path):
    _write_cifar(tmp_path, rows_per_batch=4)
    dm = ClassificationDataModule("cifar10", str(tmp_path), batch_size=4, augment=False, num_classes=10)
    dm.setup("fit")
    assert dm.skipped == 1 and dm.num_classes == 10
    batches = list(dm.train_dataloader())  # the whole shuffled epoch: 20 rows in 5 batches of 4
    assert all(x.shape == (4, 3, 32, 32) and y.dtype == torch.int64 for x, y in batches)
    x = torch.cat([x for x, _ in batches])
    assert len(x) == 20
    raw = torch.tensor([0.0, 10.0, 20.0]) / 255  # pixel (1, 1) of row 0, the smallest of the 4 distinct rows
    expected = (raw - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    assert torch.allclose(torch.sort(x[:, :, 1, 1], dim=0).values[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="num_classes=100"):
        ClassificationDataModule("cifar10", str(tmp_path), batch_size=4, num_classes=100).setup("fit")


def _write_folder(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for wnid in ("n01440764", "n01443537"):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 255, (20 + 7 * i, 30, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{wnid}_{i}.JPEG", quality=90)
    (root / "train" / "n01440764" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "train" / "n01440764" / "notes.txt").write_text("ignored: not an image extension")


def test_imagenet_folder_reader_skips_corrupt_image(tmp_path):
    _write_folder(tmp_path)
    tr = ImageFolderClassification(tmp_path, "train", train=True, image_size=16)
    assert tr.classes == ["n01440764", "n01443537"] and len(tr) == 7
    items = [tr[i] for i in range(len(tr))]
    assert all(x.shape == (3, 16, 16) for x, _ in items)
    assert tr.skips.count == 1  # broken.JPEG, replaced by the next file
    assert sorted(label for _, label in items).count(0) == 4  # 3 valid class-0 files, one served twice
    va = ImageFolderClassification(tmp_path, "val", tr.classes, train=False, image_size=16, resize_size=18)
    assert len(va) == 4 and va[0][0].shape == (3, 16, 16) and va[3][1] == 1
    assert torch.equal(va[0][0], va[0][0])  # evaluation transform is deterministic


def test_imagenet_folder_errors(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "val" / "n99999999").mkdir()
    with pytest.raises(ValueError, match="absent from the training classes"):
        ImageFolderClassification(tmp_path, "val", ["n01440764", "n01443537"], train=False)
    with pytest.raises(FileNotFoundError, match="test"):
        ImageFolderClassification(tmp_path, "test")


def test_imagenet_datamodule_counts_skips(tmp_path):
    _write_folder(tmp_path)
    dm = ClassificationDataModule("imagenet", str(tmp_path), batch_size=7, image_size=16, resize_size=18)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (7, 3, 16, 16) and dm.skipped == 1 and dm.num_classes == 2


def test_digits_datamodule_split_and_batches():
    dm = ClassificationDataModule("digits", batch_size=32, image_size=24, val_fraction=0.25, seed=3)
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 1797 and len(dm.val_set) == round(1797 * 0.25)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 3, 24, 24) and -1 <= x.min() and x.max() <= 1 and 0 <= y.min() and y.max() <= 9
    assert torch.equal(x[:, 0], x[:, 2])  # grey digits replicated to RGB
    again = ClassificationDataModule("digits", batch_size=32, image_size=24, val_fraction=0.25, seed=3)
    again.setup("fit")
    assert torch.equal(dm.val_set.labels, again.val_set.labels)  # seeded split


def test_datamodule_config_errors():
    with pytest.raises(ValueError, match="data.dataset"):
        ClassificationDataModule("mnist")
    with pytest.raises(ValueError, match="data_dir is required"):
        ClassificationDataModule("imagenet")
