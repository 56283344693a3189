"""One-shot reference data for GenDA: builtin / file / folder references, augmentation, eval set (~3 s)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.one_shot import OneShotDataModule, augment_batch, load_builtin


def test_builtin_reference_batches_are_copies_of_one_image():
    dm = OneShotDataModule(builtin="astronaut", resolution=32, batch_size=4, grayscale=True, batches_per_epoch=3)
    dm.setup("fit")
    ref = dm.reference_image()
    assert ref.dtype == torch.uint8 and ref.shape == (3, 32, 32)
    assert torch.equal(ref[0], ref[1]) and torch.equal(ref[1], ref[2])  # gray, replicated to 3 channels
    assert dm.hparams["reference_file"] == "skimage.data:astronaut"
    loader = dm.train_dataloader()
    assert len(loader) == 3
    img, c = next(iter(loader))
    assert img.shape == (4, 3, 32, 32) and c.shape == (4, 0)
    assert all(torch.equal(x, ref) for x in img)  # augmentation happens after the transfer, on the device
    face = load_builtin("astronaut")
    assert face.shape == (120, 120, 3)


def test_augment_batch_flips_and_translates_within_the_padding():
    torch.manual_seed(0)
    img = torch.randint(0, 256, [1, 3, 16, 16], dtype=torch.uint8).repeat(16, 1, 1, 1)
    flipped = augment_batch(img, hflip=True, translate=0.0)
    kinds = {"orig" if torch.equal(x, img[0]) else "flip" if torch.equal(x, img[0].flip(2)) else "?" for x in flipped}
    assert kinds == {"orig", "flip"}
    moved = augment_batch(img, hflip=False, translate=0.125)
    pad = 2
    padded = torch.nn.functional.pad(img[:1].float(), [pad] * 4, mode="reflect")[0].to(torch.uint8)
    crops = {(dy, dx): padded[:, dy : dy + 16, dx : dx + 16] for dy in range(5) for dx in range(5)}
    offsets = [next((k for k, v in crops.items() if torch.equal(v, x)), None) for x in moved]
    assert None not in offsets and len(set(offsets)) > 3  # every sample is a reflect-padded shift, not all equal


def test_folder_reference_is_picked_by_seed_and_corrupt_files_are_skipped(tmp_path):
    (tmp_path / "a_broken.png").write_bytes(b"not an image")
    Image.fromarray(np.full([20, 24, 3], 200, np.uint8)).save(tmp_path / "b_good.png")
    seed = next(s for s in range(100) if np.random.RandomState(s).randint(2) == 0)  # starts at the broken file
    dm = OneShotDataModule(path=str(tmp_path), resolution=16, batch_size=2, reference_seed=seed)
    ref = dm.reference_image()
    assert dm.skips.count == 1 and dm.reference_name.endswith("b_good.png")
    assert ref.shape == (3, 16, 16) and int(ref.min()) == 200  # center-cropped and resized
    with pytest.raises(ValueError, match="cannot decode"):
        OneShotDataModule(path=str(tmp_path / "a_broken.png")).reference_image()
    with pytest.raises(FileNotFoundError, match="data.path"):
        OneShotDataModule(path=str(tmp_path / "nope.png")).reference_image()


def test_eval_set_is_the_full_target_folder(tmp_path):
    for i in range(3):
        Image.fromarray(np.full([16, 16, 3], 10 * i, np.uint8)).save(tmp_path / f"{i}.png")
    dm = OneShotDataModule(path=str(tmp_path / "1.png"), eval_path=str(tmp_path), resolution=16)
    full = dm.reference_dataset("full")
    assert len(full) == 3 and full[2][0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="data.eval_path"):
        OneShotDataModule().reference_dataset("full")
