"""Noise schedules against their closed forms, and the float32 buffers of NoiseSchedule."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.diffusion.schedules import (
    SCHEDULES,
    NoiseSchedule,
    alphas_cumprod_from_betas,
    betas_from_alphas_cumprod,
    cosine_alphas_cumprod,
    cosine_angle_alphas_cumprod,
    cosine_angle_rates,
    linear_betas,
    schedule_alphas_cumprod,
)
from genlab.utils import GenlabError


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_alphas_cumprod_decreasing_in_unit_interval(name):
    alphas_cumprod = schedule_alphas_cumprod(name, 1000)
    assert alphas_cumprod.dtype == torch.float64 and alphas_cumprod.shape == (1000,)
    assert bool((alphas_cumprod > 0).all()) and bool((alphas_cumprod <= 1).all())
    assert bool((alphas_cumprod[1:] < alphas_cumprod[:-1]).all())


def test_linear_endpoints_and_cumprod():
    betas = linear_betas(1000)
    assert betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    steps = torch.diff(betas)
    assert torch.allclose(steps, torch.full_like(steps, (0.02 - 1e-4) / 999))
    alphas_cumprod = alphas_cumprod_from_betas(betas)
    assert alphas_cumprod[0].item() == pytest.approx(1 - 1e-4)
    assert alphas_cumprod[2].item() == pytest.approx((1 - betas[0]) * (1 - betas[1]) * (1 - betas[2]))
    assert torch.allclose(betas_from_alphas_cumprod(alphas_cumprod), betas, rtol=0, atol=1e-12)


def test_cosine_matches_closed_form():
    T, s = 1000, 0.008

    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    alphas_cumprod = cosine_alphas_cumprod(T, s)
    closed_form = torch.tensor([f((t + 1) / T) / f(0.0) for t in range(T)], dtype=torch.float64)
    # Only the last beta (f(1) = 0 -> beta = 1) is clipped to 0.999.
    assert torch.allclose(alphas_cumprod[:-1], closed_form[:-1], rtol=1e-10, atol=0)
    betas = betas_from_alphas_cumprod(alphas_cumprod)
    assert betas.max().item() == pytest.approx(0.999)
    assert betas[-1].item() == pytest.approx(0.999)


def test_cosine_angle_rates_endpoints_and_unit_norm():
    signal, noise = cosine_angle_rates(torch.tensor([0.0, 1.0]))
    assert signal[0].item() == pytest.approx(0.95, abs=1e-12)
    assert signal[1].item() == pytest.approx(0.02, abs=1e-12)
    times = torch.linspace(0, 1, 101, dtype=torch.float64)
    signal, noise = cosine_angle_rates(times)
    assert torch.allclose(signal**2 + noise**2, torch.ones_like(times), atol=1e-14)
    assert bool((torch.diff(signal) < 0).all())
    # Seed table 6: the angles are acos(0.95) ~ 0.31756 and acos(0.02) ~ 1.55079 rad.
    assert math.acos(0.95) == pytest.approx(0.31756, abs=1e-5)
    assert math.acos(0.02) == pytest.approx(1.55079, abs=1e-5)


def test_cosine_angle_discretisation():
    alphas_cumprod = cosine_angle_alphas_cumprod(1000)
    signal, _ = cosine_angle_rates(torch.tensor([1 / 1000, 1.0]))
    assert alphas_cumprod[0].item() == pytest.approx(signal[0].item() ** 2)
    assert alphas_cumprod[-1].item() == pytest.approx(0.02**2)


def test_noise_schedule_buffers():
    schedule = NoiseSchedule("cosine", 100)
    reference = cosine_alphas_cumprod(100)
    assert schedule.num_timesteps == 100
    for name, buffer in schedule.named_buffers():
        assert buffer.dtype == torch.float32, name
        assert buffer.shape == (100,), name
        assert torch.isfinite(buffer).all(), name
    assert torch.allclose(schedule.alphas_cumprod.double(), reference, rtol=1e-6)
    assert torch.allclose(schedule.sqrt_one_minus_alphas_cumprod.double(), (1 - reference).sqrt(), rtol=1e-6)
    assert schedule.posterior_variance[0].item() == 0.0
    assert schedule.posterior_log_variance_clipped[0] == schedule.posterior_log_variance_clipped[1]
    # Not persistent: a schedule never lands in a checkpoint.
    assert schedule.state_dict() == {}
    assert schedule.alpha_bar(-1) == 1.0
    assert schedule.alpha_bar(3) == pytest.approx(reference[3].item(), rel=1e-15)


def test_noise_schedule_moves_with_to():
    schedule = NoiseSchedule("linear", 10).to(torch.float64)  # .to(dtype) moves float buffers like any module
    assert schedule.betas.dtype == torch.float64
    schedule = schedule.to("cpu")
    assert schedule.betas.device.type == "cpu"


def test_unknown_schedule_names_the_valid_ones():
    with pytest.raises(GenlabError, match="linear, cosine, cosine-angle"):
        NoiseSchedule("quadratic", 10)


def test_custom_alphas_cumprod():
    alphas_cumprod = alphas_cumprod_from_betas(linear_betas(50))
    schedule = NoiseSchedule("custom", alphas_cumprod=alphas_cumprod)
    assert schedule.num_timesteps == 50 and schedule.name == "custom"
    assert torch.allclose(schedule.betas.double(), linear_betas(50), atol=1e-9)
