"""Fixtures shared by the diffusion math tests."""

import pytest
import torch

from genlab.diffusion.schedules import NoiseSchedule


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)  # the unseeded draws in the tests are then the same on every run


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule("linear", 1000)
