"""Metric curves: read back from ``metric-<name>.jsonl`` as a resumed run writes it, drawn where the values say."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from metrics.plots import (
    MARGIN_BOTTOM,
    MARGIN_LEFT,
    MARGIN_RIGHT,
    MARGIN_TOP,
    plot_metric_file,
    read_curve,
    save_line_chart,
)

LINE = np.array([31, 119, 180])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps({"kimg": k, "results": r}) + "\n" for k, r in rows))
    return path


def test_read_curve_sorts_and_keeps_the_latest_value_of_a_reevaluated_kimg(tmp_path):
    # A run evaluated at 2 and 4, was killed, resumed from its kimg-2 checkpoint and evaluated 4 again.
    path = write_jsonl(tmp_path / "metric-kid.jsonl", [(2, {"kid": 0.5}), (4, {"kid": 0.3}), (4, {"kid": 0.2})])
    assert read_curve(path, "kid") == [(2.0, 0.5), (4.0, 0.2)]


def test_read_curve_names_the_file_and_line_of_a_bad_record(tmp_path):
    path = tmp_path / "metric-kid.jsonl"
    path.write_text(json.dumps({"kimg": 0, "results": {"kid": 1.0}}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"metric-kid\.jsonl:2"):
        read_curve(path, "kid")
    with pytest.raises(ValueError, match=r"results\['fid'\]"):
        read_curve(write_jsonl(tmp_path / "m.jsonl", [(0, {"kid": 1.0})]), "fid")


def marker_rows(png) -> dict[int, float]:
    """Mean row of the line colour in each of the plot's pixel columns (where drawn)."""
    arr = np.asarray(Image.open(png).convert("RGB")).astype(int)
    mask = (np.abs(arr - LINE).sum(axis=2) < 30)[MARGIN_TOP:-MARGIN_BOTTOM, MARGIN_LEFT:-MARGIN_RIGHT]
    return {x: float(np.nonzero(mask[:, x])[0].mean()) for x in range(mask.shape[1]) if mask[:, x].any()}


def test_curve_is_drawn_where_the_values_are(tmp_path):
    falling = write_jsonl(tmp_path / "metric-kid.jsonl", [(0, {"kid": 0.9}), (5, {"kid": 0.5}), (10, {"kid": 0.1})])
    (png,) = plot_metric_file(falling)
    assert png == tmp_path / "metric-kid.png"
    rows = marker_rows(png)
    columns = sorted(rows)
    assert columns[0] < 10 and columns[-1] > (480 - MARGIN_LEFT - MARGIN_RIGHT) - 10  # spans the x range
    assert rows[columns[0]] < rows[columns[len(columns) // 2]] < rows[columns[-1]]  # falls left to right (y down)

    rising = write_jsonl(tmp_path / "metric-r.jsonl", [(0, {"kid": 0.1}), (10, {"kid": 0.9})])
    (png,) = plot_metric_file(rising, tmp_path / "out" / "curve.png")
    rows = marker_rows(png)
    assert rows[min(rows)] > rows[max(rows)]


def test_one_curve_per_result_key(tmp_path):
    path = write_jsonl(tmp_path / "metric-pr.jsonl", [(1, {"precision": 0.5, "recall": 0.2})])
    written = plot_metric_file(path)
    assert sorted(p.name for p in written) == ["metric-pr-precision.png", "metric-pr-recall.png"]
    assert all(Image.open(p).size == (480, 300) for p in written)


def test_an_empty_file_is_refused_by_name(tmp_path):
    path = tmp_path / "metric-kid.jsonl"
    path.write_text("")
    with pytest.raises(ValueError, match="metric-kid.jsonl: no evaluations"):
        plot_metric_file(path)


def test_values_spanning_decades_get_a_log_axis(tmp_path):
    """1, 10, 100 at even steps: on a log axis the middle point sits halfway (linear would put it near the bottom)."""
    path = write_jsonl(tmp_path / "metric-kid.jsonl", [(0, {"kid": 100.0}), (5, {"kid": 10.0}), (10, {"kid": 1.0})])
    (png,) = plot_metric_file(path)
    rows = marker_rows(png)
    columns = sorted(rows)
    top, middle, bottom = rows[columns[0]], rows[columns[len(columns) // 2]], rows[columns[-1]]
    assert abs((middle - top) - (bottom - middle)) < 0.1 * (bottom - top)
    with pytest.raises(ValueError, match="log axis needs positive values"):
        save_line_chart([(0, 1.0), (1, -1.0)], tmp_path / "bad.png", "kid", log_y=True)
