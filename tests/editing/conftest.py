"""Editing tests run single-threaded: the tensors are tiny and two OpenMP threads on a shared 2-core box spin."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
