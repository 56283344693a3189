"""Metric curves as PNG images, drawn with PIL: what a run's ``metric-<name>.jsonl`` says, at a glance.

``MetricsCallback`` redraws ``metric-<name>.png`` after every evaluation; for another run's file:
``python -c "from metrics.plots import plot_metric_file; plot_metric_file('<run>/metric-<name>.jsonl')"``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 30, 40


def read_curve(path: str | Path, key: str) -> list[tuple[float, float]]:
    """``(kimg, value)`` of ``results[key]`` in a ``metric-<name>.jsonl``, sorted by kimg.

    A resumed run evaluates again the images seen since its checkpoint: a later line for the same kimg replaces the
    earlier one.
    """
    path = Path(path)
    points: dict[float, float] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            points[round(float(record["kimg"]), 6)] = float(record["results"][key])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{path}:{number}: expected a JSON record with 'kimg' and results[{key!r}] ({err})"
            ) from err
    return sorted(points.items())


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[lo, hi]``."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks of a log axis covering ``[lo, hi]`` (both > 0); decades only when they span more than two."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mantissas = (1,) if last - first > 2 else (1, 2, 5)
    return [m * 10.0**e for e in range(first, last + 1) for m in mantissas if lo <= m * 10.0**e <= hi]


def _label(value: float) -> str:
    return f"{value:.3g}" if value != 0 else "0"


def save_line_chart(
    points: list[tuple[float, float]],
    path: str | Path,
    title: str,
    xlabel: str = "kimg",
    size: tuple[int, int] = (480, 300),
    log_y: bool | None = None,
) -> Path:
    """Draw ``points`` (x, y) as a line with markers and labelled axes; written atomically as PNG.

    ``log_y``: a logarithmic y axis; None chooses it when every value is positive and they span 30x or more (a metric
    that falls by orders of magnitude early and keeps falling slowly).
    """
    if not points:
        raise ValueError(f"no points to draw for {title!r}")
    width, height = size
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_lo, x_hi = min(0.0, min(xs)), max(xs)
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    if log_y is None:
        log_y = min(ys) > 0 and max(ys) >= 30 * min(ys)
    if log_y and min(ys) <= 0:
        raise ValueError(f"{title!r}: a log axis needs positive values, got {min(ys)}")
    scale = math.log10 if log_y else float
    y_lo, y_hi = scale(min(ys)), scale(max(ys))
    pad = (y_hi - y_lo) * 0.05 or abs(y_hi) * 0.05 or 1.0
    y_lo, y_hi = y_lo - pad, y_hi + pad
    plot_w, plot_h = width - MARGIN_LEFT - MARGIN_RIGHT, height - MARGIN_TOP - MARGIN_BOTTOM

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            MARGIN_LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w,
            MARGIN_TOP + (y_hi - scale(y)) / (y_hi - y_lo) * plot_h,
        )

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    y_ticks = _log_ticks(10**y_lo, 10**y_hi) if log_y else _ticks(y_lo, y_hi)
    for y in y_ticks:
        _, py = to_px(x_lo, y)
        draw.line([(MARGIN_LEFT, py), (width - MARGIN_RIGHT, py)], fill=(225, 225, 225))
        draw.text((MARGIN_LEFT - 6, py), _label(y), fill="black", font=font, anchor="rm")
    for x in _ticks(x_lo, x_hi):
        px = to_px(x, y_ticks[0])[0]
        draw.line([(px, height - MARGIN_BOTTOM), (px, height - MARGIN_BOTTOM + 4)], fill="black")
        draw.text((px, height - MARGIN_BOTTOM + 6), _label(x), fill="black", font=font, anchor="mt")
    draw.rectangle([MARGIN_LEFT, MARGIN_TOP, width - MARGIN_RIGHT, height - MARGIN_BOTTOM], outline="black")
    pixels = [to_px(x, y) for x, y in points]
    if len(pixels) > 1:
        draw.line(pixels, fill=(31, 119, 180), width=2)
    for px, py in pixels:
        draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(31, 119, 180))
    draw.text((width / 2, 8), title + (", log scale" if log_y else ""), fill="black", font=font, anchor="mt")
    draw.text((MARGIN_LEFT + plot_w / 2, height - 12), xlabel, fill="black", font=font, anchor="mt")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def plot_metric_file(jsonl: str | Path, out: str | Path | None = None) -> list[Path]:
    """One PNG per result key of a ``metric-<name>.jsonl`` (``<stem>.png``, or ``<stem>-<key>.png`` for several)."""
    jsonl = Path(jsonl)
    first = next((line for line in jsonl.read_text().splitlines() if line.strip()), None)
    if first is None:
        raise ValueError(f"{jsonl}: no evaluations recorded yet")
    keys = list(json.loads(first).get("results", {}))
    if not keys:
        raise ValueError(f"{jsonl}: the first record has no 'results'")
    base = Path(out) if out is not None else jsonl.with_suffix(".png")
    written = []
    for key in keys:
        target = base if len(keys) == 1 else base.with_name(f"{base.stem}-{key}.png")
        points = read_curve(jsonl, key)
        written.append(save_line_chart(points, target, f"{key}: {len(points)} evaluations"))
    return written
