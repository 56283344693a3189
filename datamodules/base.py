"""Shared data pieces: global->per-rank batch, infinite rank-sharded sampler, skip-and-count of bad samples.

API (CONTRIBUTING "Shared pieces"):

- ``per_rank_batch_size(global_batch, world_size)``: the one place the global batch is divided.
- ``InfiniteSampler(dataset_len, rank, world_size, shuffle, seed)``: endless, seeded, rank-sharded index
  stream with ``state_dict()/load_state_dict()`` (the global position) so a resumed run continues exactly.
- ``SkipCounter``: counts and logs undecodable samples across DataLoader workers.
- ``ImageDataset``: the common Dataset behaviour (x-flip doubling, seeded subsets, labels, skip-and-replace).
- ``GANDataModule``: the LightningDataModule base used by ``embedded.py`` and ``images.py``; it yields
  ``(img uint8 [N,C,H,W], c float32 [N,c_dim])`` batches and saves the sampler position in checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)


def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    """Divide the global batch over the ranks; raise unless it divides exactly."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if global_batch < 1:
        raise ValueError(f"data.batch_size (global batch) must be >= 1, got {global_batch}")
    if global_batch % world_size != 0:
        raise ValueError(
            f"data.batch_size={global_batch} is the GLOBAL batch and must be divisible by the world size "
            f"{world_size}; choose a multiple of {world_size}"
        )
    return global_batch // world_size


class InfiniteSampler(DistributedSampler):
    """Endless, seeded, rank-sharded sampler for GAN training.

    The global stream is a concatenation of passes; pass ``e`` is ``randperm(dataset_len)`` drawn from a
    generator seeded with ``(seed, e)`` (identity order when ``shuffle=False``). Rank ``r`` of ``W`` yields
    global positions ``r, r+W, r+2W, ...`` starting at ``position`` (the number of samples consumed by all
    ranks together, i.e. ``seen_img``). The stream therefore does not depend on the world size, one pass
    covers the dataset exactly once over all ranks, and resuming only needs the position.

    Subclasses ``DistributedSampler`` so that Lightning does not wrap it in its own distributed sampler.
    Suite choice [D]: NVIDIA's sliding-window reshuffle (window 0.5) is replaced by a fresh permutation per
    pass, whose state is just the position.
    """

    def __init__(
        self,
        dataset_len: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        position: int = 0,
    ) -> None:
        if dataset_len < 1:
            raise ValueError(f"InfiniteSampler needs a non-empty dataset, got dataset_len={dataset_len}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.dataset_len = int(dataset_len)
        self.rank = int(rank)
        self.num_replicas = int(world_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.position = int(position)
        self.epoch = 0

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.dataset_len)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.dataset_len, generator=gen)

    def __iter__(self) -> Iterator[int]:
        pos = self.position + self.rank
        cached_epoch, order = -1, None
        while True:
            epoch, i = divmod(pos, self.dataset_len)
            if epoch != cached_epoch:
                cached_epoch, order = epoch, self._order(epoch)
            yield int(order[i])
            pos += self.num_replicas

    def __len__(self) -> int:
        raise TypeError("InfiniteSampler is infinite; stop training by steps/kimg, not by epochs")

    def set_epoch(self, epoch: int) -> None:
        """No-op hook kept for Lightning: passes are derived from the position."""
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """Resumable state: the global position (samples consumed by all ranks) and the seed."""
        return {"position": self.position, "seed": self.seed, "dataset_len": self.dataset_len}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the position; the dataset length and seed must match the saved run."""
        for key in ("seed", "dataset_len"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"InfiniteSampler state has {key}={state[key]}, this sampler has {getattr(self, key)}; "
                    "the data config changed since the checkpoint was written"
                )
        self.position = int(state["position"])


class SkipCounter:
    """Counts undecodable samples across DataLoader worker processes (shared memory).

    ``count`` is the number of distinct files skipped by all processes of this counter: a file met again (next
    epoch, another worker) counts once; ``events`` counts every skip. Files are told apart by a 64-bit hash in a
    shared table of ``slots`` entries; past that many distinct files each further skip counts as new. Each skip
    is logged with the file name and reason (once per file per process).
    """

    slots = 4096

    def __init__(self, what: str = "dataset") -> None:
        self.what = what
        self._value = multiprocessing.Value("q", 0)
        self._events = multiprocessing.RawValue("q", 0)  # guarded by _value's lock
        self._table = multiprocessing.RawArray("Q", self.slots)
        self._logged: set[str] = set()

    def _insert(self, name: str) -> bool:
        """Add ``name``'s hash to the shared table (caller holds the lock); True when it was not there."""
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") or 1
        n = len(self._table)
        for i in range(n):
            slot = (key + i) % n
            if self._table[slot] == key:
                return False
            if self._table[slot] == 0:
                self._table[slot] = key
                return True
        return True

    def skip(self, name: str, reason: str) -> None:
        """Record one skip of the file ``name``."""
        with self._value.get_lock():
            self._events.value += 1
            if self._insert(name):
                self._value.value += 1
            total = self._value.value
        if name not in self._logged:
            self._logged.add(name)
            log.warning("%s: skipped %r (%s); %d files skipped so far", self.what, name, reason, total)

    @property
    def count(self) -> int:
        """Distinct files skipped."""
        return int(self._value.value)

    @property
    def events(self) -> int:
        """Skips, a file met twice counting twice."""
        return int(self._events.value)


def select_subset(num_items: int, max_images: int | None, seed: int) -> np.ndarray:
    """NVIDIA's subset rule (training/dataset.py): RandomState(seed).shuffle of the indices, keep the first N, sort."""
    idx = np.arange(num_items, dtype=np.int64)
    if max_images is None or max_images >= num_items:
        return idx
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1 or null, got {max_images}")
    np.random.RandomState(seed).shuffle(idx)
    return np.sort(idx[:max_images])


def load_or_write_subset(
    names: Sequence[str], max_images: int | None, seed: int, subset_file: str | os.PathLike | None
) -> np.ndarray:
    """Indices of the ``max_images`` subset; reused from ``subset_file`` if it exists, else written there.

    The file lists file names (not indices), so a subset is the same images on every machine.
    """
    if max_images is None or max_images >= len(names):
        return np.arange(len(names), dtype=np.int64)
    if subset_file is not None and Path(subset_file).is_file():
        with open(subset_file) as f:
            data = json.load(f)
        chosen = data.get("names") if isinstance(data, dict) else None
        if not isinstance(chosen, list) or len(chosen) != max_images:
            raise ValueError(
                f"subset file {subset_file}: expected {{'names': [...]}} with {max_images} entries "
                f"(max_images), got {len(chosen) if isinstance(chosen, list) else type(chosen).__name__}"
            )
        pos = {n: i for i, n in enumerate(names)}
        missing = [n for n in chosen if n not in pos]
        if missing:
            raise FileNotFoundError(
                f"subset file {subset_file} names {len(missing)} images absent from the dataset, e.g. "
                f"{missing[:3]}; delete it to draw a new subset"
            )
        log.info("reusing subset file %s (%d images)", subset_file, len(chosen))
        return np.sort(np.array([pos[n] for n in chosen], dtype=np.int64))
    idx = select_subset(len(names), max_images, seed)
    if subset_file is not None:
        Path(subset_file).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{subset_file}.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump({"max_images": max_images, "seed": seed, "names": [names[i] for i in idx]}, f, indent=0)
        os.replace(tmp, subset_file)
        log.info("wrote subset file %s (%d of %d images, seed %d)", subset_file, len(idx), len(names), seed)
    return idx


def labels_to_matrix(labels: Sequence[Any], where: str) -> np.ndarray:
    """As NVIDIA's dataset.json: integer labels -> one-hot of size max+1; float lists -> vectors of one length."""
    if len(labels) == 0:
        return np.zeros([0, 0], dtype=np.float32)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        ints = np.asarray(labels, dtype=np.int64)
        if ints.min() < 0:
            raise ValueError(f"{where}: integer class labels must be >= 0, got {int(ints.min())}")
        out = np.zeros([len(ints), int(ints.max()) + 1], dtype=np.float32)
        out[np.arange(len(ints)), ints] = 1
        return out
    lengths = {len(v) if isinstance(v, (list, tuple)) else -1 for v in labels}
    if -1 in lengths or len(lengths) != 1:
        raise ValueError(
            f"{where}: labels must be all integers or all float lists of one length; found lengths "
            f"{sorted(x for x in lengths if x >= 0)}{' and non-list values' if -1 in lengths else ''}"
        )
    return np.asarray(labels, dtype=np.float32)


class ImageDataset(Dataset):
    """Common image Dataset: raw items ``0..R-1`` -> subset -> x-flip doubling; returns (uint8 CHW, float c).

    Subclasses implement ``_load_raw(raw_idx) -> np.ndarray`` (HWC uint8) and may raise on bad samples;
    such samples are counted by ``skips`` and replaced by the next index so batches stay full.
    """

    max_replacements = 100

    def __init__(
        self,
        name: str,
        raw_names: Sequence[str],
        raw_labels: np.ndarray | None,
        resolution: int,
        num_channels: int,
        xflip: bool = False,
        max_images: int | None = None,
        seed: int = 0,
        subset_file: str | os.PathLike | None = None,
    ) -> None:
        self.name = name
        self.raw_names = list(raw_names)
        self.resolution = int(resolution)
        self.num_channels = int(num_channels)
        self.xflip = bool(xflip)
        self.max_images = max_images
        self.seed = int(seed)
        self._raw_labels = raw_labels
        sub = load_or_write_subset(self.raw_names, max_images, seed, subset_file)
        self._raw_idx = np.concatenate([sub, sub]) if xflip else sub
        self._flip = np.concatenate([np.zeros(len(sub), bool), np.ones(len(sub), bool)]) if xflip else None
        self.skips = SkipCounter(name)

    @property
    def label_dim(self) -> int:
        return 0 if self._raw_labels is None else int(self._raw_labels.shape[1])

    @property
    def has_labels(self) -> bool:
        return self._raw_labels is not None

    def __len__(self) -> int:
        return len(self._raw_idx)

    def _load_raw(self, raw_idx: int) -> np.ndarray:
        raise NotImplementedError

    def get_label(self, idx: int) -> np.ndarray:
        """Label vector of item ``idx`` without decoding the image."""
        if self._raw_labels is None:
            return np.zeros([0], dtype=np.float32)
        return self._raw_labels[self._raw_idx[idx]]

    def image_names(self) -> list[str]:
        """Raw file names of the items (x-flipped duplicates included)."""
        return [self.raw_names[i] for i in self._raw_idx]

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        for attempt in range(self.max_replacements + 1):
            j = (idx + attempt) % len(self)
            raw = int(self._raw_idx[j])
            try:
                img = self._load_raw(raw)
            except Exception as e:  # any decode failure is skipped and counted
                self.skips.skip(self.raw_names[raw], f"{type(e).__name__}: {e}")
                continue
            if self._flip is not None and self._flip[j]:
                img = img[:, ::-1]
            chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
            return chw, torch.from_numpy(self.get_label(j).astype(np.float32))
        raise RuntimeError(
            f"{self.name}: {self.max_replacements + 1} consecutive samples from index {idx} failed to load "
            f"({self.skips.count} skipped in total); the dataset looks broken"
        )

    def identity(self) -> dict[str, Any]:
        """What defines the content served (for metric caches); subclasses add the source identity."""
        return {
            "name": self.name,
            "resolution": self.resolution,
            "num_channels": self.num_channels,
            "xflip": self.xflip,
            "max_images": self.max_images,
            "subset_seed": self.seed if self.max_images is not None else None,
            "num_items": len(self),
        }


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class GANDataModule(pl.LightningDataModule):
    """Base DataModule: per-rank batch, ``InfiniteSampler`` training loader, sampler position in checkpoints.

    Subclasses implement ``build_dataset(full: bool)``: ``full=True`` is the whole dataset without subset or
    x-flip (the ``_full`` metric reference), ``full=False`` the training set as configured.
    ``label_dim`` / ``num_channels`` may be declared in the data config (the model config interpolates them);
    they are checked against the dataset when it is built.
    """

    def __init__(
        self,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        pin_memory: bool = False,
        label_dim: int | None = None,
        num_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.pin_memory = bool(pin_memory)
        self.per_rank_batch: int | None = None
        self.sampler: InfiniteSampler | None = None
        self._train: ImageDataset | None = None
        self._resume_position = 0
        self._declared = {"label_dim": label_dim, "num_channels": num_channels}

    def build_dataset(self, full: bool) -> ImageDataset:
        raise NotImplementedError

    @property
    def train_dataset(self) -> ImageDataset:
        if self._train is None:
            ds = self.build_dataset(full=False)
            for key, want in self._declared.items():
                if want is not None and getattr(ds, key) != want:
                    raise ValueError(
                        f"data.{key}={want} in the data config, but dataset {ds.name} has {getattr(ds, key)}"
                    )
            self._train = ds
        return self._train

    def reference_dataset(self, reference: str) -> ImageDataset:
        """Metric reference set: ``full`` (all images, no x-flip) or ``train_subset`` (as trained)."""
        if reference == "full":
            return self.build_dataset(full=True)
        if reference == "train_subset":
            return self.train_dataset
        raise ValueError(f"reference must be 'full' or 'train_subset', got {reference!r}")

    @property
    def label_dim(self) -> int:
        return self.train_dataset.label_dim

    @property
    def resolution(self) -> int:
        return self.train_dataset.resolution

    @property
    def num_channels(self) -> int:
        return self.train_dataset.num_channels

    @property
    def skipped(self) -> int:
        """Number of undecodable samples skipped (and replaced) so far."""
        return self.train_dataset.skips.count

    def setup(self, stage: str | None = None) -> None:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else _world()
        self.per_rank_batch = per_rank_batch_size(self.batch_size, world)
        self._rank, self._world_size = rank, world
        _ = self.train_dataset

    def train_dataloader(self) -> DataLoader:
        if self.per_rank_batch is None:
            self.setup("fit")
        self.sampler = InfiniteSampler(
            len(self.train_dataset),
            rank=self._rank,
            world_size=self._world_size,
            shuffle=self.shuffle,
            seed=self.seed,
            position=self._resume_position,
        )
        return DataLoader(
            self.train_dataset,
            batch_size=self.per_rank_batch,
            sampler=self.sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            prefetch_factor=2 if self.num_workers > 0 else None,
            # Own generator: creating the iterator must not draw from the global RNG, or a resumed run's
            # random streams would shift by one draw relative to an uninterrupted run.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _consumed(self) -> int:
        """Global samples consumed so far: the module's host-side ``progress.seen_img`` if it has one (GANs), else
        batches x global batch. Both counters are restored from the checkpoint on resume, so they count the run.
        """
        if self.trainer is None:
            return self._resume_position
        progress = getattr(self.trainer.lightning_module, "progress", None)
        if progress is not None:
            return progress.seen_img
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.total.processed) * self.batch_size

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": {
                "position": self._consumed(),
                "seed": self.seed,
                "dataset_len": len(self.train_dataset),
            }
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        st = state_dict.get("sampler")
        if st is None:
            raise KeyError("datamodule checkpoint state lacks 'sampler' (expected {'sampler': {'position': ...}})")
        InfiniteSampler(len(self.train_dataset), seed=self.seed).load_state_dict(st)
        self._resume_position = int(st["position"])
