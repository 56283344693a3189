"""ADA's p controller and the statistics windows it reads (budget ~1 s)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist

from lightning_modules.controllers import ADA_STAT, AdaptiveAugment
from lightning_modules.training_stats import TrainingStats
from networks.augment import AugmentPipe


def controller(interval=4, kimg=500.0, target=0.6):
    stats = TrainingStats()
    return stats, AdaptiveAugment(AugmentPipe.from_preset("bgc"), stats, target=target, interval=interval, kimg=kimg)


def test_adaptive_p_sign_rule_step_size_and_interval():
    stats, ada = controller()
    step = 64 * 4 / (500 * 1000)
    p = 0.5
    for it in range(1, 4):
        stats.report(ADA_STAT, torch.ones(64, 1))
        assert ada.update(it, 64, p) == p, it  # between adjustments p is unchanged
    stats.report(ADA_STAT, torch.ones(64, 1))
    p = ada.update(4, 64, p)
    assert p == pytest.approx(0.5 + step) and ada.last_rt == 1.0  # r_t = 1 > 0.6: raise
    for it in range(5, 9):
        stats.report(ADA_STAT, torch.tensor([1.0, 1.0, -1.0, 0.0]))  # r_t = 0.25 < 0.6: lower
        p = ada.update(it, 64, p)
    assert p == pytest.approx(0.5)
    for it in range(9, 13):
        stats.report(ADA_STAT, torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0]))  # r_t = 0.6 exactly: unchanged
        p2 = ada.update(it, 64, p)
    assert p2 == p and ada.last_rt == 0.6
    assert ada.update(16, 64, p) == p and math.isnan(ada.last_rt)  # an interval without reports


def test_adaptive_p_never_negative_and_pools_the_interval():
    stats, ada = controller(interval=2, kimg=100)
    stats.report(ADA_STAT, -torch.ones(10))
    stats.report(ADA_STAT, torch.ones(30))  # pooled r_t = 20 / 40 = 0.5 < 0.6
    assert ada.update(2, 32, 0.0002) == 0.0  # 0.0002 - 32 * 2 / 1e5 clamped at 0
    stats.report(ADA_STAT, torch.ones(3))
    assert ada.update(4, 32, 0.0) == pytest.approx(32 * 2 / 1e5)
    with pytest.raises(ValueError, match="interval"):
        controller(interval=0)


def test_window_state_round_trip_resumes_exactly():
    logits = [torch.randn(16) + 0.5 for _ in range(12)]

    def run(stats, ada, p, start, stop):
        for i in range(start, stop):
            stats.report(ADA_STAT, logits[i].sign())
            p = ada.update(i + 1, 16, p)
        return p

    stats_a, ada_a = controller(kimg=1)
    p = run(stats_a, ada_a, 0.1, 0, 6)  # stop mid-interval: the window holds two iterations
    saved = stats_a.state_dict()
    assert saved["ada"]["counts"] == {ADA_STAT: 32}
    final_a = run(stats_a, ada_a, p, 6, 12)
    stats_b, ada_b = controller(kimg=1)
    stats_b.load_state_dict(saved, torch.device("cpu"))
    assert run(stats_b, ada_b, p, 6, 12) == final_a


def test_adaptive_p_all_reduces_across_ranks(monkeypatch):
    reduced = []

    def fake_all_reduce(tensor):  # another rank contributed 12 logits of sign -1: [sums..., counts...]
        reduced.append(tensor.clone())
        tensor += torch.tensor([-12.0, 12.0], dtype=tensor.dtype)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    stats, ada = controller(interval=1, kimg=1)
    stats.report(ADA_STAT, torch.ones(4))  # this rank alone: r_t = 1 (raise); pooled: (4 - 12) / 16 (lower)
    p = ada.update(1, 8, 0.5)
    assert len(reduced) == 1 and reduced[0].tolist() == [4.0, 4.0]
    assert p == pytest.approx(0.5 - 8 / 1000) and ada.last_rt == -0.5


def test_p_arithmetic_matches_an_fp32_buffer_update():
    """The host p follows the reference's in-place fp32 update exactly, so host and buffer never drift."""
    stats, ada = controller(interval=1, kimg=0.7)
    p, buf = 0.1, torch.tensor(0.1, dtype=torch.float32)
    for it in range(1, 40):
        stats.report(ADA_STAT, torch.ones(3) * (1 if it % 3 else -1))
        p = ada.update(it, 7, p)
        adjust = math.copysign(7 / 700, ada.last_rt - 0.6)
        buf = (buf + adjust).clamp(min=0)
        assert p == float(buf), it


def test_stats_windows_read_their_own_names_since_their_last_read():
    stats = TrainingStats()
    log, only = stats.window("log"), stats.window("x", pattern="loss/.*")
    stats.report("loss/a", torch.tensor([1.0, 3.0]))
    stats.report("other", torch.tensor(5.0))
    assert only.read() == {"loss/a": 2.0}
    stats.report("loss/a", torch.tensor(4.0))
    assert log.read() == {"loss/a": pytest.approx(8 / 3), "other": 5.0}
    assert only.read() == {"loss/a": 4.0} and log.read() == {}
