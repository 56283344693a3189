"""Video data (datamodules/video*.py): splits with held-out validation videos, UCF-101 / Kinetics readers on tiny PyAV
videos, skip-and-count of corrupt files, frame-consistent augmentation with FixMatch's RandAugment, multi-view crops and
the 1 x 1 test loader. Budget: ~25 s on 2 CPU cores."""

import json

import numpy as np
import pytest
import torch

from datamodules.video import (
    SemiSupervisedVideoDataModule,
    VideoClipDataset,
    VideoRecord,
    holdout_partition,
    kinetics_file_name,
    labeled_partition,
    load_or_write_partition,
    read_kinetics,
    read_ucf101,
    source_group,
)
from datamodules.video_augment import ClipAugment, multi_view_crops
from datamodules.video_io import read_clips, sample_clip_indices, write_video

T_FRAMES = 12


def _frames(label: int, seed: int, t: int = T_FRAMES, h: int = 24, w: int = 32) -> np.ndarray:
    """Frame i has a grey level 20·i in its left half (readable after compression) and class-coloured right half."""
    rng = np.random.default_rng(seed)
    video = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        video[i, :, : w // 2] = 20 * i
        video[i, :, w // 2 :] = rng.integers(0, 256, 3) if label else 255
    return video


def _frame_ids(clip: np.ndarray) -> np.ndarray:
    """Recover the frame index coded by ``_frames`` from decoded (T, H, W, 3) frames."""
    h, w = clip.shape[1:3]
    return np.round(clip[:, h // 4 : -h // 4, 2 : w // 2 - 4].mean(axis=(1, 2, 3)) / 20).astype(int)


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    classes = ["Walking", "JumpRope"]
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Walking\r\n2 JumpRope\r\n")
    train, test = [], []
    for c, name in enumerate(classes):
        for g in range(1, 5):
            rel = f"{name}/v_{name}_g{g:02d}_c01.avi"
            write_video(str(root / "UCF-101" / rel), _frames(c, g), fps=10)
            (test if g == 1 else train).append((rel, c))
    listed_missing = "Walking/v_Walking_g09_c01.avi 1"
    (lists / "trainlist01.txt").write_text("\n".join(f"{r} {c + 1}" for r, c in train) + f"\n{listed_missing}\n")
    (lists / "testlist01.txt").write_text("\n".join(r for r, _ in test) + "\n")
    return root


def test_sample_clip_indices_random_uniform_and_loop():
    rng = np.random.default_rng(0)
    idx = sample_clip_indices(100, 8, 4, "random", rng=rng)
    assert idx.shape == (1, 8) and (np.diff(idx[0]) == 4).all() and idx.max() < 100
    uni = sample_clip_indices(100, 8, 4, "uniform", num_clips=3)
    assert uni[0, 0] == 0 and uni[-1, -1] == 99 and (np.diff(uni[:, 0]) > 0).all()
    assert sample_clip_indices(5, 4, 2, "uniform")[0].tolist() == [0, 2, 4, 1]  # short video loops


def test_partition_is_class_balanced_and_reproducible(tmp_path):
    labels = np.repeat(np.arange(5), [30, 40, 50, 60, 20])  # 200 videos
    lab, unlab = labeled_partition(labels, 10.0, seed=3)
    counts = np.bincount(labels[lab], minlength=5)
    assert (counts == 4).all()  # round(200 * 10 % / 5 classes) per class
    assert len(np.intersect1d(lab, unlab)) == 0 and len(lab) + len(unlab) == 200
    lab2, _ = labeled_partition(labels, 10.0, seed=3)
    np.testing.assert_array_equal(lab, lab2)
    assert not np.array_equal(lab, labeled_partition(labels, 10.0, seed=4)[0])
    assert (np.bincount(labels[labeled_partition(labels, 1.0, 0)[0]]) == 1).all()  # at least one per class

    records = [VideoRecord(f"/x/{i}.avi", f"v/{i}.avi", int(y)) for i, y in enumerate(labels)]
    split = tmp_path / "split.json"
    lab_w, _, val_w = load_or_write_partition(records, 10.0, 3, split)
    assert len(val_w) == 0
    saved = json.loads(split.read_text())
    assert saved["labeled"] == [f"v/{i}.avi" for i in lab_w] and saved["seed"] == 3
    saved["labeled"] = saved["labeled"][1:] + ["v/0.avi"] if 0 not in lab_w else saved["labeled"]
    split.write_text(json.dumps(saved))  # an edited file is reused as written, not redrawn
    lab_r, _, _ = load_or_write_partition(records, 10.0, 3, split)
    assert sorted(records[i].name for i in lab_r) == sorted(saved["labeled"])
    with pytest.raises(ValueError, match="percent=10.0 seed=3"):
        load_or_write_partition(records, 1.0, 3, split)


def test_ucf101_reader_and_clip_decoding(ucf_root):
    records, classes = read_ucf101(ucf_root, split=1, train=True)
    assert classes == ["Walking", "JumpRope"]
    assert sorted((r.name, r.label) for r in records)[0] == ("UCF-101/JumpRope/v_JumpRope_g02_c01.avi", 1)
    assert len(records) == 6  # the listed but missing video is skipped
    test_records, _ = read_ucf101(ucf_root, split=1, train=False)
    assert {r.label for r in test_records} == {0, 1} and len(test_records) == 2
    clips = read_clips(records[0].path, frames=4, stride=3, size=(24, 32), mode="uniform", num_clips=2)
    assert clips.shape == (2, 4, 24, 32, 3) and clips.dtype == np.uint8
    assert _frame_ids(clips[0]).tolist() == [0, 3, 6, 9] and _frame_ids(clips[1]).tolist() == [2, 5, 8, 11]
    # decoded frames are resized to cover the requested size (aspect kept) and centre-cropped
    assert read_clips(records[0].path, 2, 1, (12, 12))[0].shape == (2, 12, 12, 3)


def test_kinetics_reader_official_layout(tmp_path):
    rows = [("riding a bike", "abc123", 10, 20), ("yoga", "xyz_9", 0, 10), ("yoga", "gone00", 5, 15)]
    (tmp_path / "annotations").mkdir()
    with open(tmp_path / "annotations" / "train.csv", "w") as f:
        f.write("label,youtube_id,time_start,time_end,split,is_cc\n")
        f.writelines(f'"{lab}",{yt},{s},{e},train,0\n' for lab, yt, s, e in rows)
    assert kinetics_file_name("abc123", 10, 20) == "abc123_000010_000020.mp4"
    write_video(str(tmp_path / "train" / "riding_a_bike" / "abc123_000010_000020.mp4"), _frames(0, 0))
    write_video(str(tmp_path / "train" / "yoga" / "xyz_9_000000_000010.mp4"), _frames(1, 1))
    records, classes = read_kinetics(tmp_path, "annotations/train.csv", "train")
    assert classes == ["riding a bike", "yoga"]
    assert [(r.name, r.label) for r in records] == [
        ("train/riding_a_bike/abc123_000010_000020.mp4", 0),
        ("train/yoga/xyz_9_000000_000010.mp4", 1),
    ]
    assert _frame_ids(read_clips(records[1].path, 3, 2, (24, 32), "uniform")[0]).tolist() == [3, 5, 7]


def test_corrupt_video_is_skipped_and_counted(ucf_root, tmp_path):
    records, _ = read_ucf101(ucf_root)
    bad = tmp_path / "v_Broken_g01_c01.avi"
    bad.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    ds = VideoClipDataset([VideoRecord(str(bad), "bad.avi", 0), *records], frames=4, stride=2, size=(24, 32))
    item = ds[0]
    assert item["index"] == 1 and item["video"].shape == (3, 4, 24, 32)
    assert ds.skips.count == 1
    ds[0]
    assert ds.skips.count == 1 and ds.skips.events == 2  # files, not events


def _clip_batch(b=4, t=5, h=20, w=28, same_frames=True):
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 1, h, w, generator=g)
    clips = base.expand(b, 3, t, h, w).clone() if same_frames else torch.rand(b, 3, t, h, w, generator=g)
    return clips


def test_strong_augmentation_same_on_all_frames_and_different_between_clips():
    aug = ClipAugment(16, ra_num_ops=3, ra_magnitude=10, cutout_size=0.4)
    clips = _clip_batch()  # 4 identical clips whose frames are identical
    for fn in (aug.weak, aug.strong):
        out = fn(clips, torch.Generator().manual_seed(1))
        assert out.shape == (4, 3, 5, 16, 16)
        torch.testing.assert_close(out, out[:, :, :1].expand_as(out))  # every frame of a clip equal
        diffs = [(out[i] - out[j]).abs().mean() for i in range(4) for j in range(i + 1, 4)]
        assert min(diffs) > 1e-3  # independent parameters per clip
    again = aug.strong(clips, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, aug.strong(clips, torch.Generator().manual_seed(1)))  # seeded stream


def test_strong_augmentation_moves_with_the_content():
    """A frame-consistent transform applied to a moving clip equals the transform of each frame alone."""
    aug = ClipAugment(16, ra_num_ops=2, cutout_size=0.3)
    clips = _clip_batch(b=2, same_frames=False)
    out = aug.strong(clips, torch.Generator().manual_seed(5))
    for i in range(clips.shape[2]):
        single = aug.strong(clips[:, :, i : i + 1], torch.Generator().manual_seed(5))
        torch.testing.assert_close(out[:, :, i : i + 1], single, atol=1e-5, rtol=1e-5)


def test_multi_view_crops():
    clips = torch.arange(2 * 3 * 2 * 4 * 12, dtype=torch.float32).reshape(2, 1, 3, 2, 4, 12)
    views = multi_view_crops(clips.expand(2, 2, 3, 2, 4, 12), crops=3, out_size=4)
    assert views.shape == (2, 6, 3, 2, 4, 4)
    torch.testing.assert_close(views[:, 0], clips[:, 0, ..., :4])  # left square
    torch.testing.assert_close(views[:, 1], clips[:, 0, ..., 4:8])
    torch.testing.assert_close(views[:, 2], clips[:, 0, ..., 8:])


def test_datamodule_batches_weak_and_strong_views_of_the_same_frames(ucf_root, tmp_path):
    dm = SemiSupervisedVideoDataModule(
        dataset="ucf101", root=str(ucf_root), labeled_percent=33, split_dir=str(tmp_path), batch_size=2, mu=1,
        num_workers=0, frames=4, stride=2, load_size=24, crop_size=16, val_clips=2, val_crops=3, cutout_size=0.0,
        ra_num_ops=1, crop_scale=(1.0, 1.0), num_classes=2, test_clips=2, test_crops=3, eval_batch_size=2,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    assert dm.split_file.name == "ucf101_split1_33pct_seed0_val1.json"
    assert dm.split_file.is_file() and len(dm.labeled_idx) == 2 and dm.steps_per_epoch == 1
    # full-frame crop, no colour op: the frame index coded in the left half stays readable in both views
    dm.augment = ClipAugment(
        16, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), hflip=False, ops=("identity",), cutout_size=0.0
    )
    loaders = dm.train_dataloader()
    raw = {k: next(iter(v)) for k, v in loaders.items()}
    batch = dm.on_after_batch_transfer(raw, 0)
    assert batch["x"].shape == (2, 3, 4, 16, 16) and batch["u_weak"].shape == batch["u_strong"].shape
    assert set(batch) == {"x", "y", "u_weak", "u_strong", "u_y"}

    def ids(v):
        grey = (v[:, :, :, 4:-4, 1:6] * 0.225 + 0.45).mean(dim=(1, 3, 4))
        return torch.round(grey * 255 / 20).long()

    assert torch.equal(ids(batch["u_weak"]), ids(batch["u_strong"]))
    assert (ids(batch["u_weak"]).diff(dim=1) == 2).all()  # stride 2, same sampled frames in both views
    val = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert val["x"].shape[1:] == (6, 3, 4, 16, 16)


def test_validation_is_held_out_of_the_training_list_and_test_has_two_protocols(ucf_root, tmp_path):
    """Model selection never sees the test list: one whole group per class of trainlist01 is the validation set
    (written to the split file, disjoint from labeled and unlabeled); the test list is read at test_clips x
    test_crops views and, as loader 1, at one centre view. val_source=test restores the old behaviour."""
    kw = dict(dataset="ucf101", root=str(ucf_root), labeled_percent=33, split_dir=str(tmp_path), batch_size=2, mu=1,
              num_workers=0, frames=4, stride=2, load_size=24, crop_size=16, test_clips=3, test_crops=3,
              eval_batch_size=2, num_classes=2)  # fmt: skip
    dm = SemiSupervisedVideoDataModule(**kw)
    dm.prepare_data()
    dm.setup("fit")
    train_names = [r.name for r in dm.train_records]
    val_names = {train_names[i] for i in dm.val_idx}
    assert len(val_names) == 2 and {source_group(n) for n in val_names} <= {"g2", "g3", "g4"}
    assert not val_names & {train_names[i] for i in np.concatenate([dm.labeled_idx, dm.unlabeled_idx])}
    assert sorted(json.loads(dm.split_file.read_text())["val"]) == sorted(val_names)
    assert {r.name for r in dm._datasets["val"].records} == val_names
    test_names = {r.name for r in read_ucf101(ucf_root, train=False)[0]}
    assert not val_names & test_names

    class _Testing:
        testing = True

    dm.setup("test")
    dm.trainer = _Testing()
    loaders = dm.test_dataloader()
    assert len(loaders) == 2 and all({r.name for r in ld.dataset.records} == test_names for ld in loaders)
    multi = dm.on_after_batch_transfer(next(iter(loaders[0])), 0)
    single = dm.on_after_batch_transfer(next(iter(loaders[1])), 1)
    assert multi["x"].shape[1:3] == (9, 3) and single["x"].shape[1:3] == (1, 3)

    old = SemiSupervisedVideoDataModule(**kw, val_source="test")
    old.setup("fit")
    assert len(old.val_idx) == 0 and {r.name for r in old._datasets["val"].records} == test_names
    assert old.split_file.name == "ucf101_split1_33pct_seed0.json"
    with pytest.raises(ValueError, match="val_source"):
        SemiSupervisedVideoDataModule(**kw, val_source="train")


def test_holdout_partition_takes_whole_groups_per_class_and_is_seeded(tmp_path):
    records = [VideoRecord(f"/x/{c}/{g}/{k}", f"UCF-101/C{c}/v_C{c}_g{g:02d}_c{k:02d}.avi", c)
               for c in range(3) for g in range(8, 13) for k in range(1, 4)]  # fmt: skip
    val = holdout_partition(records, 2, seed=0)
    for c in range(3):
        groups = {source_group(records[i].name) for i in val if records[i].label == c}
        assert len(groups) == 2  # two whole groups (3 clips each) per class
    assert len(val) == 3 * 2 * 3
    np.testing.assert_array_equal(val, holdout_partition(records, 2, seed=0))
    assert not np.array_equal(val, holdout_partition(records, 2, seed=1))
    assert len(holdout_partition(records, 9, seed=0)) == 3 * 4 * 3  # every class keeps one group for training
    # the labeled share counts the whole training list; it is drawn from what is not held out
    lab, unlab, val_f = load_or_write_partition(records, 20.0, 0, tmp_path / "s.json", val_per_class=2)
    np.testing.assert_array_equal(val_f, val)
    assert len(lab) == 3 * 3 and not set(lab) & set(val) and not set(unlab) & set(val)  # round(45 * 20 % / 3)
    assert len(lab) + len(unlab) + len(val) == len(records)
    with pytest.raises(ValueError, match="val_per_class=2"):
        load_or_write_partition(records, 20.0, 0, tmp_path / "s.json", val_per_class=1)
    kinetics = [VideoRecord(f"/k/{i}.mp4", f"train/c/{i:05d}_000000_000010.mp4", i % 2) for i in range(10)]
    assert len(holdout_partition(kinetics, 2, seed=0)) == 4  # no groups: single videos


def test_randaugment_applies_each_drawn_op_with_probability_half():
    """FixMatch's RandAugment (google-research/fixmatch libml/augment.py L198) applies each drawn op w.p. 0.5: one
    translate op changes about half of the clips; ra_apply_prob=1 changes all, 0 leaves the weak view."""
    clips = torch.rand(400, 3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    kw = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False, ra_num_ops=1, ops=("translate_x",), cutout_size=0.0)

    def changed(aug):
        weak = aug.weak(clips, torch.Generator().manual_seed(7))
        strong = aug.strong(clips, torch.Generator().manual_seed(7))  # same crop draws first
        return (strong - weak).abs().flatten(1).amax(1) > 1e-6

    default = ClipAugment(6, **kw)
    assert default.ra_apply_prob == 0.5
    assert 0.4 < changed(default).float().mean() < 0.6
    assert changed(ClipAugment(6, ra_apply_prob=1.0, **kw)).float().mean() > 0.97
    assert not changed(ClipAugment(6, ra_apply_prob=0.0, **kw)).any()
    with pytest.raises(ValueError, match="ra_apply_prob"):
        ClipAugment(6, ra_apply_prob=1.5)
