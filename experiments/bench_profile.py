"""Time per training phase and top ops by self CPU time, from a ``torch.profiler`` trace of a few steps.

Used on both sides of ``experiments/bench_train.py --profile``: the suite's step and the original's
(``experiments/original_step.py``, which runs under the original's own interpreter), so this module needs torch
and the standard library only. Phases are the ``record_function`` ranges named ``Gmain``, ``Greg``, ``Dmain``,
``Dreg`` (the labels of NVlabs/stylegan2-ada-pytorch ``training/training_loop.py``); a range labelled twice
(nested ranges of one name) is counted once.
"""

from __future__ import annotations

from collections import defaultdict

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")
OUTSIDE = "other"  # work outside every phase range (G_ema update, ADA, data, the training loop)


def _union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def _phase_of(evt) -> str:
    node = evt.cpu_parent
    while node is not None:
        if node.name in PHASES:
            return node.name
        node = node.cpu_parent
    return OUTSIDE


def summarize(prof, steps: int, wall_s: float, top: int = 25) -> dict:
    """Per-step milliseconds of each phase and of the ``top`` ops by self CPU time (also split by phase).

    ``prof``: a finished ``torch.profiler.profile`` over ``steps`` training steps taking ``wall_s`` seconds.
    Returns plain types (JSON): ``{"steps", "wall_ms", "phases": {name: ms}, "ops": [[name, ms, calls,
    {phase: ms}], ...], "ops_ms"}``; ``ops_ms`` is the self time of every op (the rest of the wall time is
    Python and profiler overhead).
    """
    events = prof.events()
    ranges: dict[str, list[tuple[float, float]]] = defaultdict(list)
    self_us: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    by_phase: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for evt in events:
        if evt.name in PHASES:
            ranges[evt.name].append((evt.time_range.start, evt.time_range.end))
            continue
        if evt.name.startswith("ProfilerStep"):
            continue
        us = evt.self_cpu_time_total
        self_us[evt.name] += us
        calls[evt.name] += 1
        by_phase[evt.name][_phase_of(evt)] += us
    per = 1e-3 / steps
    ranked = sorted(self_us, key=self_us.get, reverse=True)[:top]
    return {
        "steps": steps,
        "wall_ms": 1e3 * wall_s / steps,
        "phases": {p: _union_us(ranges[p]) * per for p in PHASES if p in ranges},
        "ops": [
            [name, self_us[name] * per, calls[name] / steps, {k: v * per for k, v in by_phase[name].items()}]
            for name in ranked
        ],
        "ops_ms": sum(self_us.values()) * per,
    }


def format_profiles(profiles: dict[str, dict], top: int = 25) -> str:
    """Side-by-side text of :func:`summarize` results, e.g. ``{"original": ..., "suite": ...}``."""
    names = list(profiles)
    lines = ["time per amortised step (profiled run; the profiler adds overhead to every op):"]
    head = f"  {'phase':10s}" + "".join(f"{n:>14s}" for n in names)
    lines.append(head + ("   ratio" if len(names) == 2 else ""))
    rows = [*PHASES, "wall", "in ops"]
    for row in rows:
        vals = []
        for n in names:
            p = profiles[n]
            vals.append(p["wall_ms"] if row == "wall" else p["ops_ms"] if row == "in ops" else p["phases"].get(row))
        line = f"  {row:10s}" + "".join(f"{'-':>14s}" if v is None else f"{v:11.1f} ms" for v in vals)
        if len(names) == 2 and None not in vals and vals[1] > 0:
            line += f"  {vals[0] / vals[1]:6.2f}x"
        lines.append(line)
    for n in names:
        p = profiles[n]
        lines.append(f"\ntop ops by self CPU time, {n} (ms per step, calls per step, ms per phase):")
        for name, ms, ncalls, phases in p["ops"][:top]:
            split = " ".join(f"{k} {v:.0f}" for k, v in sorted(phases.items(), key=lambda kv: -kv[1]) if v >= 0.5)
            lines.append(f"  {ms:9.1f} ms {ncalls:7.1f}x  {name[:60]:60s} {split}")
    return "\n".join(lines)
