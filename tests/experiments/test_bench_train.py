"""experiments/bench_train.py: the floor stand-ins (the reference ops' output and gradient shapes), the profile
summary (phases, ops split by phase) and the messages about the original's working copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import bench_train
from experiments.bench_train import floor_ops
from ops import _backend as ops_backend
from ops.bias_act import _bias_act_ref
from ops.grid_sample import _grid_sample_ref
from ops.upfirdn2d import _upfirdn2d_ref, setup_filter

UPFIRDN_CASES = [
    dict(up=2, padding=[2, 1]),
    dict(down=2, padding=[1, 1]),
    dict(padding=[1, 2, 2, 1]),
    dict(up=[2, 1], down=[1, 2], padding=[0, 3, -1, 2]),
    dict(up=1, down=1, padding=-1),
]


@pytest.mark.parametrize("case", range(len(UPFIRDN_CASES)))
def test_floor_upfirdn2d_has_the_reference_shapes(case):
    kw = dict(up=1, down=1, padding=0, flip_filter=False, gain=1) | UPFIRDN_CASES[case]
    f = setup_filter([1, 3, 3, 1]) if case != 3 else setup_filter([1, 2, 1], separable=True)
    x = torch.randn(2, 3, 9, 7, requires_grad=True)
    args = (kw["up"], kw["down"], kw["padding"], kw["flip_filter"], kw["gain"])
    out = floor_ops()["upfirdn2d"](x, f, *args)
    assert out.shape == _upfirdn2d_ref(x, f, *args).shape
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.shape == x.shape


def test_floor_bias_act_and_grid_sample_have_the_reference_shapes():
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    out = floor_ops()["bias_act"](x, b, 1, "lrelu")
    assert out.shape == _bias_act_ref(x, b, 1, "lrelu").shape
    assert [t.shape for t in torch.autograd.grad(out.sum(), (x, b))] == [x.shape, b.shape]
    grid = torch.rand(2, 3, 8, 2) * 2 - 1
    out = floor_ops()["grid_sample"](x, grid)
    assert out.shape == _grid_sample_ref(x, grid).shape == (2, 4, 3, 8)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.shape == x.shape


def test_profile_summary_counts_nested_phase_labels_once_and_splits_ops_by_phase():
    from experiments.bench_profile import format_profiles, summarize

    a, b = torch.randn(64, 64), torch.randn(64, 64)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(2):  # two "steps"
            with torch.autograd.profiler.record_function("Gmain"):
                with torch.autograd.profiler.record_function("Gmain"):  # the module and the bench both label it
                    a @ b
            with torch.autograd.profiler.record_function("Dmain"):
                a + b
                a + b
            a * b  # outside every phase
    s = summarize(prof, steps=2, wall_s=0.5)
    assert set(s["phases"]) == {"Gmain", "Dmain"} and s["wall_ms"] == 250
    ops = {name: (ms, calls, split) for name, ms, calls, split in s["ops"]}
    assert ops["aten::add"][1] == 2 and set(ops["aten::add"][2]) == {"Dmain"}
    assert set(ops["aten::mul"][2]) == {"other"}
    assert ops["aten::mm"][1] == 1 and set(ops["aten::mm"][2]) == {"Gmain"}
    gmain = [e for e in prof.events() if e.name == "Gmain"]
    outer = sum(
        e.time_range.end - e.time_range.start for e in gmain if e.cpu_parent is None or e.cpu_parent.name != "Gmain"
    )
    assert s["phases"]["Gmain"] == pytest.approx(outer / 1e3 / 2)  # nested ranges not counted twice
    text = format_profiles({"original": s, "suite": s})
    assert "Gmain" in text and "1.00x" in text and "aten::add" in text


def test_original_without_a_working_copy_says_how_to_get_one(tmp_path, capsys):
    from experiments.bench_train import GET_ORIGINAL, main, original_problem

    assert "training/networks.py" in original_problem(str(tmp_path), sys.executable)
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "networks.py").write_text("")
    assert original_problem(str(tmp_path), sys.executable) is None
    assert "not an executable" in original_problem(str(tmp_path), str(tmp_path / "python"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--original", str(tmp_path / "missing"), "--res", "32", "--repeats", "1"])
    assert str(tmp_path / "missing") in str(exit_info.value) and GET_ORIGINAL in str(exit_info.value)
    assert "git clone https://github.com/NVlabs/stylegan2-ada-pytorch" in GET_ORIGINAL
    with pytest.raises(SystemExit):
        main(["--res", "32", "--repeats", "0"])
    assert "--repeats" in capsys.readouterr().err


def test_original_step_rejects_a_directory_that_is_not_the_original(tmp_path):
    script = Path(__file__).resolve().parents[2] / "experiments" / "original_step.py"
    out = subprocess.run([sys.executable, str(script), "--ref", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode != 0 and "not a working copy of NVlabs/stylegan2-ada-pytorch" in out.stderr


def test_bench_experiments_hold_the_originals_setting_at_every_resolution():
    from experiments.bench_train import bench_config

    for method, res in (("stylegan2_ada", 64), ("insgen-separate", 32)):
        cfg = bench_config(method, res)
        m = cfg.model
        assert (cfg.data.resolution, cfg.data.num_channels, cfg.data.batch_size) == (res, 3, 8)
        assert m.r1_gamma == pytest.approx(0.0002 * res * res / 8)
        assert (m.pl_weight, m.style_mixing_prob, m.augment_p, m.ada.kimg, m.ema_kimg) == (2.0, 0.9, 0.2, 100, 10.0)
        assert (m.generator.w_dim, m.generator.mapping_kwargs.num_layers) == (512, 8)
        for net in (m.generator.synthesis_kwargs, m.discriminator):
            assert (net.channel_base, net.channel_max, net.num_fp16_res, net.conv_clamp) == (16384, 256, 0, None)
    assert m.insgen.query_view == "separate"


def test_compare_rev_reads_both_median_formats_and_ignores_comment_only_kernel_changes(tmp_path):
    from experiments.bench_train import MEDIAN_LINE, _code, export_revision

    old = "res   32  ops auto      malloc tuned   stylegan2_ada    median 1.404 s/step  peak 1076 MB"
    new = "res   32  ops auto      malloc tuned   stylegan2_ada    median 1.404 s/step peak 1076 MB"
    newest = "res   32  ops auto      malloc tuned   caching  stylegan2_ada    median 1.404 s/step peak 1076 MB"
    for line in (old, new, newest):
        assert MEDIAN_LINE.search(line).groups() == ("1.404", "1076")
    code = "int f(int x) {  // CPU kernel (docs)\n  /* the\n loop */ return x + 1; }\n"
    assert _code(code) == _code("// another comment\nint f(int x) { return x + 1; }") != _code(code.replace("1", "2"))
    with pytest.raises(SystemExit, match="not a commit"):
        export_revision("no-such-revision-xyz", tmp_path)


@pytest.mark.skipif(not ops_backend.extension_available(), reason="the Winograd path needs ops._C")
def test_flop_count_separates_the_originals_work_from_the_winograd_step(monkeypatch):
    """--flops: the direct count (the original's work) is larger than the Winograd count, and the mode is restored."""
    from ops import winograd

    monkeypatch.setattr(winograd, "MIN_WORK", 0)  # every 256-channel 3x3 layer of the 16x16 model
    before = winograd.get_conv3x3()
    direct = bench_train.amortised_gflop("stylegan2_ada", 16, "direct")
    wino = bench_train.amortised_gflop("stylegan2_ada", 16, "winograd")
    assert winograd.get_conv3x3() == before
    assert set(direct) == set(wino) == {"amortised", "Gmain", "Greg", "Dmain", "Dreg"}
    assert 0.3 * direct["amortised"] < wino["amortised"] < 0.95 * direct["amortised"]
