"""Caching allocator for large CPU tensors (docs/ops.md "CPU allocator"): config ``ops.cpu_allocator`` [D].

``caching`` replaces torch's CPU allocator with the compiled one of ``ops/csrc/cpu_allocator.cpp``. Requests of at
least :data:`MIN_BYTES` get anonymous mappings (2 MiB huge-page granules from 4 MiB on) that are kept when freed and
reused best fit, split and coalesced; smaller requests go to torch's default allocator. A training step allocates
the same large shapes every iteration, so after the first one nearly every large request is served without page
faults whatever the glibc settings, and no small allocation settles inside a freed large block (the heap
fragmentation that raises the peak memory of glibc's allocator, docs/performance.md). The mapped bytes stay within
the peak of the live bytes plus ``slack_mb``: the least recently freed ranges are unmapped first.
``default`` keeps torch's allocator (glibc malloc), as the original.

The choice is process-wide. ``experiments/train.py`` applies the config through :func:`ops.configure`, which also
sets ``SUITE_OPS_CPU_ALLOCATOR`` / ``SUITE_OPS_CPU_ALLOCATOR_SLACK_MB``; ``import ops`` applies those in DDP workers.
Blocks allocated while ``caching`` was on stay valid after switching back to ``default`` (they are unmapped when
freed).
"""

from __future__ import annotations

import os

import torch

from ops import _backend

MODES = ("caching", "default")
MIN_BYTES = 2**20
ENV_VAR = "SUITE_OPS_CPU_ALLOCATOR"
SLACK_ENV_VAR = "SUITE_OPS_CPU_ALLOCATOR_SLACK_MB"
STATS = (
    "enabled",
    "min_bytes",
    "slack_bytes",
    "live_bytes",
    "peak_live_bytes",
    "cached_bytes",
    "mapped_bytes",
    "peak_mapped_bytes",
    "hits",
    "misses",
    "unmapped_ranges",
)

_state = {"mode": "default"}


def set_cpu_allocator(mode: str, slack_mb: int = 64, min_bytes: int = MIN_BYTES) -> None:
    """Select torch's CPU allocator for this process: ``caching`` (needs the compiled extension) or ``default``.
    ``min_bytes``: the smallest request the cache serves (tests lower it to route nearly every tensor through it)."""
    if mode not in MODES:
        raise ValueError(f"ops.cpu_allocator must be one of {MODES}, got {mode!r}")
    if isinstance(slack_mb, bool) or not isinstance(slack_mb, int) or slack_mb < 0:
        raise ValueError(f"ops.cpu_allocator_slack_mb must be a non-negative integer, got {slack_mb!r}")
    if mode == "caching" and not _backend.extension_available():
        raise RuntimeError(
            "ops.cpu_allocator=caching needs the compiled extension ops._C "
            f"({_backend.extension_error()}); build it (docs/ops.md) or set ops.cpu_allocator=default"
        )
    if _backend.extension_available():
        torch.ops.suite_ops.cpu_allocator_configure(mode == "caching", min_bytes, slack_mb * 2**20)
    _state["mode"] = mode


def get_cpu_allocator() -> str:
    """The active choice (``caching`` or ``default``)."""
    return _state["mode"]


def cpu_allocator_stats(reset_peaks: bool = False) -> dict[str, int]:
    """Counters of the caching allocator (bytes, and numbers of requests): live, cached (freed, kept mapped) and
    mapped (live + cached) bytes with their peaks, cache hits and misses (new mappings), unmapped ranges.
    ``reset_peaks`` starts the peaks again from the current values. All zero when the extension is missing."""
    if not _backend.extension_available():
        return dict.fromkeys(STATS, 0)
    return dict(zip(STATS, torch.ops.suite_ops.cpu_allocator_stats(reset_peaks), strict=True))


def cpu_allocator_summary() -> str:
    """One line on the caching allocator's use so far (logged at the end of a training run)."""
    s = cpu_allocator_stats()
    return (
        f"CPU allocator {get_cpu_allocator()}: large tensors peaked at {s['peak_live_bytes'] / 2**20:.0f} MiB live, "
        f"{s['peak_mapped_bytes'] / 2**20:.0f} MiB mapped (slack {s['slack_bytes'] / 2**20:.0f} MiB); "
        f"{s['hits']} hits, {s['misses']} misses, {s['unmapped_ranges']} ranges unmapped"
    )


def apply_environment() -> None:
    """Apply ``SUITE_OPS_CPU_ALLOCATOR`` (and its slack) when set: how spawned DDP workers inherit the choice."""
    mode = os.environ.get(ENV_VAR)
    if mode is None:
        return
    slack = os.environ.get(SLACK_ENV_VAR, "64")
    if not slack.isdigit():
        raise ValueError(f"{SLACK_ENV_VAR} must be a non-negative integer (MiB), got {slack!r}")
    set_cpu_allocator(mode, int(slack))
