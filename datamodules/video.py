"""Kinetics-400 / UCF-101 readers, labeled/unlabeled partitions and the semi-supervised video DataModule.

Partitions and views of the semi-supervised protocol of CMPL (arXiv 2112.09690: 1 % / 10 % labeled), weak and
strong views of the same sampled frames (FixMatch, arXiv 2001.07685 Sec. 2), multi-view testing.

Layouts read as distributed:
- UCF-101: ``<root>/<video_dir>/<Class>/v_<Class>_gXX_cYY.avi`` and ``<root>/<list_dir>/{classInd.txt,
  trainlist0K.txt, testlist0K.txt}`` (the official ``UCF101TrainTestSplits-RecognitionTask.zip``).
- Kinetics-400: ``<root>/<annotation_dir>/{train,validate}.csv`` with header
  ``label,youtube_id,time_start,time_end,split[,is_cc]`` and trimmed clips
  ``<root>/<split dir>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (label folders with spaces or with
  underscores, or no class folders at all).

Listed files that are missing are skipped, counted and logged at indexing time; videos that fail to decode are
skipped, counted and logged by the Dataset (replaced by the next video so batches stay full).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.base import SkipCounter, per_rank_batch_size
from datamodules.dropping import DecodableLoader
from datamodules.side_files import side_file
from datamodules.video_augment import ClipAugment, multi_view_crops
from datamodules.video_io import read_clips

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoRecord:
    """One video: absolute ``path``, ``name`` relative to the dataset root (the split-file key), class ``label``."""

    path: str
    name: str
    label: int


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected this file of the dataset's official layout")
    with open(path, encoding="utf-8") as f:
        return [ln.strip() for ln in f.read().splitlines() if ln.strip()]


def read_ucf101(
    root: str | os.PathLike,
    split: int = 1,
    train: bool = True,
    video_dir: str = "UCF-101",
    list_dir: str = "ucfTrainTestlist",
    skips: SkipCounter | None = None,
) -> tuple[list[VideoRecord], list[str]]:
    """UCF-101 split ``split`` (1-3): records of trainlist0K (train) or testlist0K, and the class names.

    Labels are 0-based (classInd.txt is 1-based). testlist files carry no label: it is the class folder.
    """
    if split not in (1, 2, 3):
        raise ValueError(f"UCF-101 split must be 1, 2 or 3, got {split}")
    root = Path(root)
    classes = []
    for ln in _read_lines(root / list_dir / "classInd.txt"):
        parts = ln.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{root / list_dir / 'classInd.txt'}: expected '<index> <ClassName>', got {ln!r}")
        if int(parts[0]) != len(classes) + 1:
            raise ValueError(f"{root / list_dir / 'classInd.txt'}: indices must be 1..N in order, got {ln!r}")
        classes.append(parts[1])
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    list_file = root / list_dir / f"{'train' if train else 'test'}list0{split}.txt"
    records = []
    skips = skips if skips is not None else SkipCounter(f"ucf101 {list_file.name}")
    for ln in _read_lines(list_file):
        parts = ln.replace("\\", "/").split()
        rel = parts[0]
        folder = rel.split("/")[0]
        if folder.lower() not in lookup:
            raise ValueError(f"{list_file}: class folder {folder!r} of {rel!r} is not in classInd.txt")
        label = lookup[folder.lower()]
        if len(parts) > 1 and int(parts[1]) - 1 != label:
            raise ValueError(f"{list_file}: {rel!r} has label {parts[1]} but its folder is class {label + 1}")
        path = root / video_dir / rel
        if not path.is_file():
            skips.skip(str(path), "listed in the split file but missing")
            continue
        records.append(VideoRecord(str(path), f"{video_dir}/{rel}", label))
    if not records:
        raise FileNotFoundError(f"{list_file}: none of the listed videos exists under {root / video_dir}")
    return records, classes


KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def kinetics_file_name(youtube_id: str, start: float, end: float, ext: str = ".mp4") -> str:
    """Official trimmed-clip name ``<youtube_id>_<start:06d>_<end:06d>.mp4``."""
    return f"{youtube_id}_{int(round(float(start))):06d}_{int(round(float(end))):06d}{ext}"


def read_kinetics(
    root: str | os.PathLike,
    annotation: str,
    video_dir: str,
    classes: Sequence[str] | None = None,
    skips: SkipCounter | None = None,
) -> tuple[list[VideoRecord], list[str]]:
    """Kinetics-400 records of one annotation CSV (relative to ``root``) whose clips are under ``video_dir``.

    ``classes`` fixes the label order (pass the training set's); default: sorted labels of this CSV.
    """
    root = Path(root)
    csv_path = root / annotation
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: expected the Kinetics annotation CSV ({','.join(KINETICS_COLUMNS)})")
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or any(c not in rows[0] for c in KINETICS_COLUMNS):
        raise ValueError(f"{csv_path}: expected the columns {KINETICS_COLUMNS}, got {list(rows[0]) if rows else []}")
    if classes is None:
        classes = sorted({r["label"] for r in rows})
    lookup = {c: i for i, c in enumerate(classes)}
    skips = skips if skips is not None else SkipCounter(f"kinetics {csv_path.name}")
    records = []
    for r in rows:
        if r["label"] not in lookup:
            raise ValueError(f"{csv_path}: label {r['label']!r} is not among the {len(classes)} training classes")
        name = kinetics_file_name(r["youtube_id"], r["time_start"], r["time_end"])
        candidates = [f"{video_dir}/{r['label']}/{name}", f"{video_dir}/{r['label'].replace(' ', '_')}/{name}",
                      f"{video_dir}/{name}"]  # fmt: skip
        rel = next((c for c in candidates if (root / c).is_file()), None)
        if rel is None:
            skips.skip(str(root / candidates[0]), "listed in the annotation CSV but missing")
            continue
        records.append(VideoRecord(str(root / rel), rel, lookup[r["label"]]))
    if not records:
        raise FileNotFoundError(f"{csv_path}: none of the annotated clips exists under {root / video_dir}")
    return records, list(classes)


def labeled_partition(
    labels: Sequence[int], percent: float, seed: int, exclude: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced labeled subset (suite choice [X]): per class max(1, round(N·p/100 / C)) videos.

    N counts the whole training list, so p % keeps its meaning when ``exclude`` (held-out validation indices)
    removes videos from both the labeled and the unlabeled part. Returns sorted (labeled, unlabeled) indices.
    Deterministic in ``seed``: class c draws from ``default_rng([seed, c])``, so a class's choice does not depend
    on the other classes.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"labeled percent must be in (0, 100], got {percent}")
    labels = np.asarray(labels, dtype=np.int64)
    excluded = np.zeros(len(labels), dtype=bool)
    excluded[np.asarray(exclude, dtype=np.int64)] = True
    by_class = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[int(y)].append(i)
    per_class = max(1, int(round(len(labels) * percent / 100 / len(by_class))))
    chosen = []
    for c in sorted(by_class):
        idx = np.asarray([i for i in by_class[c] if not excluded[i]], dtype=np.int64)
        perm = np.random.default_rng([seed, c]).permutation(len(idx))
        chosen.append(idx[perm[: min(per_class, len(idx))]])
    lab = np.sort(np.concatenate(chosen))
    unlab = np.setdiff1d(np.flatnonzero(~excluded), lab)
    return lab, unlab


_UCF_CLIP_NAME = re.compile(r"^v_.+_g(\d+)_c\d+\.\w+$")


def source_group(name: str) -> str:
    """Key of the source video of a clip: UCF-101 clips ``v_<Class>_gXX_cYY`` of one group XX are cut from one
    long video (the official splits never separate a group), so a group is held out whole; other clips stand alone."""
    m = _UCF_CLIP_NAME.match(name.rsplit("/", 1)[-1])
    return f"g{int(m.group(1))}" if m else name


def holdout_partition(records: Sequence[VideoRecord], per_class: int, seed: int) -> np.ndarray:
    """Validation videos held out of the training list (suite choice [D]): per class, ``per_class`` source groups
    (:func:`source_group`) drawn with ``default_rng([seed, c, 1])``; every class keeps at least one group for
    training. Returns sorted indices (empty for ``per_class`` 0)."""
    if per_class < 0:
        raise ValueError(f"data.val_per_class must be >= 0, got {per_class}")
    groups: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(records):
        groups[r.label][source_group(r.name)].append(i)
    held = []
    for c in sorted(groups):
        keys = sorted(groups[c])
        take = min(per_class, len(keys) - 1)
        for j in np.random.default_rng([seed, c, 1]).permutation(len(keys))[:take]:
            held += groups[c][keys[j]]
    return np.sort(np.asarray(held, dtype=np.int64))


def load_or_write_partition(
    records: Sequence[VideoRecord],
    percent: float,
    seed: int,
    split_file: str | os.PathLike,
    val_per_class: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labeled, unlabeled, validation) indices from ``split_file`` if it exists (reused), else drawn and written.

    Validation videos (``val_per_class`` groups per class, :func:`holdout_partition`) are held out of the training
    list first; the labeled subset is drawn from the rest. The file lists video names (relative paths), so a
    partition means the same videos on every machine.
    """
    split_file = Path(split_file)
    pos = {r.name: i for i, r in enumerate(records)}
    if split_file.is_file():
        with open(split_file) as f:
            data = json.load(f)
        if not isinstance(data, dict) or not isinstance(data.get("labeled"), list):
            raise ValueError(f"split file {split_file}: expected {{'labeled': [...], 'unlabeled': [...]}}")
        drawn = (data.get("percent"), data.get("seed"), data.get("val_per_class", 0))
        if drawn != (percent, seed, val_per_class):
            raise ValueError(
                f"split file {split_file} was drawn with percent={drawn[0]} seed={drawn[1]} val_per_class={drawn[2]}"
                f", the config asks percent={percent} seed={seed} val_per_class={val_per_class}; delete it or point "
                "data.split_dir elsewhere"
            )
        names = {k: data.get(k, []) for k in ("labeled", "val")}
        missing = [n for v in names.values() for n in v if n not in pos]
        if missing:
            raise FileNotFoundError(
                f"split file {split_file} names {len(missing)} labeled/validation videos absent from the dataset, "
                f"e.g. {missing[:3]}"
            )
        lab, val = (np.sort(np.array([pos[n] for n in names[k]], dtype=np.int64)) for k in ("labeled", "val"))
        log.info("reusing split file %s (%d labeled, %d validation videos)", split_file, len(lab), len(val))
        return lab, np.setdiff1d(np.arange(len(records)), np.concatenate([lab, val])), val
    val = holdout_partition(records, val_per_class, seed)
    lab, unlab = labeled_partition([r.label for r in records], percent, seed, exclude=val)
    split_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = split_file.with_name(f"{split_file.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(
            {
                "percent": percent,
                "seed": seed,
                "val_per_class": val_per_class,
                "num_videos": len(records),
                "labeled": [records[i].name for i in lab],
                "unlabeled": [records[i].name for i in unlab],
                "val": [records[i].name for i in val],
            },
            f,
            indent=0,
        )
    os.replace(tmp, split_file)
    log.info("wrote split file %s (%d labeled, %d validation of %d videos, seed %d)", split_file, len(lab), len(val),
             len(records), seed)  # fmt: skip
    return lab, unlab, val


class VideoClipDataset(Dataset):
    """Clips of ``records`` as uint8 tensors (V, C, T, H, W) (V = ``num_clips``) or (C, T, H, W) when V is 1.

    ``sampling='random'``: one random clip per access (training); ``'uniform'``: ``num_clips`` evenly spaced
    clips (evaluation). A video that fails to decode is skipped (counted + logged by ``skips``): in training the
    next one is returned instead; in evaluation it is dropped (``None``, left out by ``datamodules.dropping``), so
    the evaluated set never holds a duplicate.
    """

    max_replacements = 50

    def __init__(
        self,
        records: Sequence[VideoRecord],
        frames: int,
        stride: int,
        size: tuple[int, int],
        sampling: str = "random",
        num_clips: int = 1,
        name: str = "video",
    ):
        self.records = list(records)
        if not self.records:
            raise ValueError(f"{name}: no videos")
        self.frames, self.stride, self.size = int(frames), int(stride), (int(size[0]), int(size[1]))
        self.sampling, self.num_clips = sampling, int(num_clips)
        self.skips = SkipCounter(name)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        for attempt in range(self.max_replacements + 1):
            j = (idx + attempt) % len(self)
            rec = self.records[j]
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
            try:
                clips = read_clips(rec.path, self.frames, self.stride, self.size, self.sampling, self.num_clips, rng)
            except Exception as err:  # any decode failure is skipped and counted
                self.skips.skip(rec.path, f"{type(err).__name__}: {err}")
                if self.sampling == "uniform":  # evaluation: drop it rather than evaluate a neighbour twice
                    return None
                continue
            video = torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 4, 1, 2, 3)
            return {"video": video[0] if self.num_clips == 1 else video, "label": rec.label, "index": j}
        raise RuntimeError(
            f"{self.skips.what}: {self.max_replacements + 1} consecutive videos from index {idx} failed to decode "
            f"({self.skips.count} skipped in total); the dataset looks broken"
        )


class EpochSampler(DistributedSampler):
    """Seeded, rank-sharded sampler of ``num_samples`` global draws per epoch (passes of fresh permutations).

    Fixes the epoch length in steps independently of the dataset size (FixMatch counts epochs in iterations);
    rank r of W takes global positions r, r+W, ... Subclasses DistributedSampler so Lightning does not replace it.
    """

    def __init__(self, dataset_len: int, num_samples: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if dataset_len < 1 or num_samples < world_size:
            raise ValueError(f"EpochSampler: need dataset_len >= 1 and num_samples >= world size, got "
                             f"{dataset_len}, {num_samples}, {world_size}")  # fmt: skip
        self.dataset_len, self.total = int(dataset_len), int(num_samples)
        self.rank, self.num_replicas, self.seed, self.epoch = int(rank), int(world_size), int(seed), 0

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        passes = math.ceil(self.total / self.dataset_len)
        order = torch.cat([torch.randperm(self.dataset_len, generator=gen) for _ in range(passes)])[: self.total]
        return iter(order[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.total, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def _plain(value: Any) -> Any:
    """Hydra's list / dict containers as Python lists / dicts (a checkpoint holding them needs code to load)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


class SemiSupervisedVideoDataModule(pl.LightningDataModule):
    """Labeled + unlabeled clip batches for FixMatch/CMPL and multi-view evaluation.

    Training batches (after ``on_after_batch_transfer``, on the device): ``x`` weak labeled clips, ``y`` labels,
    ``u_weak`` / ``u_strong`` the weak and strong views of the **same** sampled unlabeled frames, ``u_y`` the
    unlabeled ground truth (for pseudo-label accuracy logging only). Evaluation batches: ``x`` (B, V, C, T, s, s)
    with V = clips x crops, ``y``. All clips are float, normalised with ``mean``/``std``.

    Model selection and test are kept apart: with ``val_source='holdout'`` the validation videos are
    ``val_per_class`` source groups per class held out of the training list (seeded by ``split_seed``, written to
    the split file, never trained on, not even unlabeled); ``'test'`` validates on the test list (UCF-101 testlist /
    Kinetics validate.csv) as before. The test loaders are the test list at ``test_clips x test_crops`` views and,
    unless that is already 1x1, at one centre clip and crop (loader 1).

    ``num_classes`` (optional) is checked against the dataset and lets model configs interpolate it.
    ``batch_size`` is the GLOBAL labeled batch; the unlabeled batch is ``mu`` times it. An epoch is
    ``steps_per_epoch`` steps (default: one pass over the unlabeled videos, or the labeled ones when ``mu=0``).
    """

    def __init__(
        self,
        dataset: str = "ucf101",
        root: str = "data/ucf101",
        split: int = 1,
        video_dir: str = "UCF-101",
        list_dir: str = "ucfTrainTestlist",
        annotation_dir: str = "annotations",
        train_csv: str = "train.csv",
        val_csv: str = "validate.csv",
        train_video_dir: str = "train",
        val_video_dir: str = "val",
        labeled_percent: float = 1.0,
        split_seed: int = 0,
        split_dir: str | None = None,
        batch_size: int = 8,
        mu: int = 7,
        steps_per_epoch: int | None = None,
        num_workers: int = 2,
        frames: int = 8,
        stride: int = 8,
        load_size: int = 256,
        load_aspect: float = 4 / 3,
        crop_size: int = 224,
        hflip: bool = True,
        crop_scale: Sequence[float] = (0.35, 1.0),
        ra_num_ops: int = 2,
        ra_magnitude: float = 10.0,
        ra_apply_prob: float = 0.5,
        cutout_size: float = 0.5,
        val_source: str = "holdout",
        val_per_class: int = 1,
        val_clips: int = 1,
        val_crops: int = 1,
        test_clips: int = 10,
        test_crops: int = 3,
        eval_batch_size: int | None = None,
        mean: Sequence[float] = (0.45, 0.45, 0.45),
        std: Sequence[float] = (0.225, 0.225, 0.225),
        seed: int = 0,
        num_classes: int | None = None,
    ):
        super().__init__()
        if dataset not in ("ucf101", "kinetics400"):
            raise ValueError(f"data.dataset must be 'ucf101' or 'kinetics400', got {dataset!r}")
        if mu < 0:
            raise ValueError(f"data.mu (unlabeled ratio) must be >= 0, got {mu}")
        if val_source not in ("holdout", "test"):
            raise ValueError(f"data.val_source must be 'holdout' or 'test', got {val_source!r}")
        if val_source == "holdout" and val_per_class < 1:
            raise ValueError(f"data.val_per_class must be >= 1 with val_source='holdout', got {val_per_class}")
        self.save_hyperparameters()
        for key, value in list(self.hparams.items()):  # checkpoints must load with weights_only=True
            self.hparams[key] = _plain(value)
        self.hp = self.hparams
        self.load_hw = (int(load_size), 2 * int(round(load_size * load_aspect / 2)))
        self.augment = ClipAugment(
            crop_size, tuple(crop_scale), hflip=hflip, ra_num_ops=ra_num_ops, ra_magnitude=ra_magnitude,
            ra_apply_prob=ra_apply_prob, cutout_size=cutout_size,
        )  # fmt: skip
        self.register_mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1)
        self.register_std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1)
        self.index_skips = SkipCounter(f"{dataset} index")
        self.classes: list[str] = []
        self.train_records: list[VideoRecord] = []
        self.labeled_idx = self.unlabeled_idx = self.val_idx = np.zeros(0, dtype=np.int64)
        self.generator = torch.Generator()
        self._datasets: dict[str, VideoClipDataset] = {}
        self._rank, self._world = 0, 1
        self.per_rank_batch: int | None = None

    # ----------------------------------------------------------------------------------------- indexing
    def _records(self, train: bool) -> tuple[list[VideoRecord], list[str]]:
        hp = self.hp
        if hp.dataset == "ucf101":
            return read_ucf101(hp.root, hp.split, train, hp.video_dir, hp.list_dir, self.index_skips)
        if train:
            return read_kinetics(
                hp.root, f"{hp.annotation_dir}/{hp.train_csv}", hp.train_video_dir, None, self.index_skips
            )
        classes = self.classes or self._records(True)[1]
        return read_kinetics(hp.root, f"{hp.annotation_dir}/{hp.val_csv}", hp.val_video_dir, classes, self.index_skips)

    @property
    def val_holdout(self) -> int:
        """Validation groups held out per class (0 when validating on the test list)."""
        return int(self.hp.val_per_class) if self.hp.val_source == "holdout" else 0

    @property
    def split_file(self) -> Path:
        hp = self.hp
        base = Path(hp.split_dir) if hp.split_dir else Path(hp.root) / "splits"
        tag = f"split{hp.split}_" if hp.dataset == "ucf101" else ""
        val = f"_val{self.val_holdout}" if self.val_holdout else ""
        path = base / f"{hp.dataset}_{tag}{hp.labeled_percent:g}pct_seed{hp.split_seed}{val}.json"
        return path if hp.split_dir else side_file(path, None, "data.split_dir")  # read-only root: name the key

    @property
    def num_classes(self) -> int:
        if not self.classes:
            self.classes = self._records(True)[1]
        if self.hp.num_classes is not None and self.hp.num_classes != len(self.classes):
            raise ValueError(f"data.num_classes={self.hp.num_classes} but {self.hp.root} has {len(self.classes)} "
                             "classes")  # fmt: skip
        return len(self.classes)

    @property
    def skipped(self) -> int:
        """Videos skipped so far: missing at indexing + undecodable while loading (all workers)."""
        return self.index_skips.count + sum(d.skips.count for d in self._datasets.values())

    def prepare_data(self) -> None:
        """Draw and write the split file once (rank 0), so every rank reads the same partition."""
        records, _ = self._records(True)
        load_or_write_partition(records, self.hp.labeled_percent, self.hp.split_seed, self.split_file, self.val_holdout)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hp
        if self.trainer is not None:
            self._rank, self._world = self.trainer.global_rank, self.trainer.world_size
        self.per_rank_batch = per_rank_batch_size(hp.batch_size, self._world)
        self.generator.manual_seed(hp.seed * self._world + self._rank)
        if stage in (None, "fit", "validate") and not self.train_records:
            self.train_records, self.classes = self._records(True)
            self.labeled_idx, self.unlabeled_idx, self.val_idx = load_or_write_partition(
                self.train_records, hp.labeled_percent, hp.split_seed, self.split_file, self.val_holdout
            )
        if stage in (None, "fit") and "labeled" not in self._datasets:
            clip = dict(frames=hp.frames, stride=hp.stride, size=self.load_hw, sampling="random")
            self._datasets["labeled"] = VideoClipDataset(
                [self.train_records[i] for i in self.labeled_idx], **clip, name=f"{hp.dataset} labeled"
            )
            if hp.mu > 0:
                if len(self.unlabeled_idx) == 0:
                    raise ValueError(f"{self.split_file}: no unlabeled videos left at {hp.labeled_percent}%")
                self._datasets["unlabeled"] = VideoClipDataset(
                    [self.train_records[i] for i in self.unlabeled_idx], **clip, name=f"{hp.dataset} unlabeled"
                )
        eval_sets = {"fit": ("val",), "validate": ("val",), "test": ("test", "test_1x1")}
        wanted = [k for k in eval_sets.get(stage, ("val", "test", "test_1x1")) if k not in self._datasets]
        if self.val_holdout and "val" in wanted:
            wanted.remove("val")
            self._datasets["val"] = VideoClipDataset(
                [self.train_records[i] for i in self.val_idx], hp.frames, hp.stride, self.load_hw, "uniform",
                hp.val_clips, name=f"{hp.dataset} val (held out of the training list)",
            )  # fmt: skip
        if (hp.test_clips, hp.test_crops) == (1, 1) and "test_1x1" in wanted:
            wanted.remove("test_1x1")
        if wanted:
            records, classes = self._records(False)
            self.classes = self.classes or classes
            clips = {"val": hp.val_clips, "test": hp.test_clips, "test_1x1": 1}
            for key in wanted:
                self._datasets[key] = VideoClipDataset(
                    records, hp.frames, hp.stride, self.load_hw, "uniform", clips[key], name=f"{hp.dataset} {key}"
                )

    # --------------------------------------------------------------------------------------- loaders
    @property
    def steps_per_epoch(self) -> int:
        hp = self.hp
        if hp.steps_per_epoch:
            return int(hp.steps_per_epoch)
        if hp.mu > 0:
            return max(1, len(self.unlabeled_idx) // (hp.mu * hp.batch_size))
        return max(1, len(self.labeled_idx) // hp.batch_size)

    def _loader(self, ds: Dataset, batch: int, sampler=None) -> DataLoader:
        nw = self.hp.num_workers
        return DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=nw, persistent_workers=nw > 0,
                          drop_last=sampler is not None, pin_memory=torch.cuda.is_available())  # fmt: skip

    def train_dataloader(self):
        if self.per_rank_batch is None:
            self.setup("fit")
        hp, steps = self.hp, self.steps_per_epoch
        loaders = {}
        for key, mult in (("labeled", 1), ("unlabeled", hp.mu)):
            if key not in self._datasets:
                continue
            ds = self._datasets[key]
            sampler = EpochSampler(len(ds), steps * hp.batch_size * mult, self._rank, self._world,
                                   hp.seed + (0 if key == "labeled" else 7919))  # fmt: skip
            loaders[key] = self._loader(ds, self.per_rank_batch * mult, sampler)
        return loaders

    def _eval_loader(self, key: str) -> DataLoader:
        if key not in self._datasets:
            self.setup("validate" if key == "val" else "test")
        eb = self.hp.eval_batch_size or self.per_rank_batch
        nw = self.hp.num_workers
        return DecodableLoader(self._datasets[key], batch_size=eb, num_workers=nw, persistent_workers=nw > 0,
                               pin_memory=torch.cuda.is_available())  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """The test protocol (``test_clips x test_crops``) and, as loader 1, one centre clip and crop."""
        main = self._eval_loader("test")
        return [main, self._eval_loader("test_1x1")] if (self.hp.test_clips, self.hp.test_crops) != (1, 1) else main

    # ---------------------------------------------------------------------------------- augmentation
    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.register_mean.to(x.device)) / self.register_std.to(x.device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> dict[str, torch.Tensor]:
        """Augment on the device: weak labeled view; weak + strong views of the same unlabeled frames; or the
        evaluation views (val: ``val_clips`` x ``val_crops``, test: ``test_clips`` x ``test_crops``, test loader 1:
        one clip, one crop)."""
        if isinstance(batch, dict) and "labeled" in batch:
            lab = batch["labeled"]
            out = {"x": self._normalise(self.augment.weak(lab["video"].float() / 255, self.generator)),
                   "y": lab["label"]}  # fmt: skip
            if "unlabeled" in batch:
                u = batch["unlabeled"]["video"].float() / 255
                out["u_weak"] = self._normalise(self.augment.weak(u, self.generator))
                out["u_strong"] = self._normalise(self.augment.strong(u, self.generator))
                out["u_y"] = batch["unlabeled"]["label"]
            return out
        video = batch["video"].float() / 255
        if video.ndim == 5:
            video = video[:, None]
        testing = self.trainer is not None and self.trainer.testing
        crops = (1 if dataloader_idx == 1 else self.hp.test_crops) if testing else self.hp.val_crops
        views = multi_view_crops(video, crops, self.hp.crop_size)
        b, v = views.shape[:2]
        return {"x": self._normalise(views.flatten(0, 1)).unflatten(0, (b, v)), "y": batch["label"]}

    def state_dict(self) -> dict[str, Any]:
        return {"aug_generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "aug_generator" not in state_dict:
            raise KeyError("video datamodule checkpoint state lacks 'aug_generator'")
        self.generator.set_state(state_dict["aug_generator"])
