"""Noise schedules: pure float64 functions for betas / alpha-bar, and `NoiseSchedule`, their float32 buffers.

Conventions (shared by `process.py` and `samplers.py`): timesteps are 0-based indices `t = 0 .. T-1`, where index
`t` is DDPM's step `t + 1` (Ho et al. 2020 count 1..T). `alphas_cumprod[t]` is alpha-bar of that step, so
`alphas_cumprod[0]` is the least noisy level and `alphas_cumprod[T-1]` the noisiest. The index `-1` stands for
the clean data, with alpha-bar = 1 (used as `t_prev` of a sampler's last step).

Example:
    >>> schedule = NoiseSchedule("cosine", 1000)
    >>> schedule.alphas_cumprod.shape, schedule.alphas_cumprod.dtype
    (torch.Size([1000]), torch.float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, TypeVar

import torch
from torch import nn

from genlab.utils import GenlabError

ScheduleName = Literal["linear", "cosine", "cosine-angle"]
Number = TypeVar("Number", torch.Tensor, float)

# Nichol & Dhariwal (2021), sec. 3.2: betas are clipped so the last steps near t = T do not become singular.
MAX_BETA = 0.999


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (Ho et al. 2020, sec. 4): betas from `beta_start` to `beta_end`, float64 (T,)."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """alpha-bar_t = prod_{s<=t} (1 - beta_s) (seed 001, eq. 3), in float64, same shape as `betas`."""
    return torch.cumprod(1.0 - betas.double(), dim=0)


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The inverse of `alphas_cumprod_from_betas`: beta_t = 1 - abar_t / abar_{t-1}, with abar_{-1} = 1."""
    alphas_cumprod = alphas_cumprod.double()
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return 1.0 - alphas_cumprod / previous


def cosine_alpha_bar_function(diffusion_time: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021), eq. 17 before normalisation: f(u) = cos^2((u + s) / (1 + s) * pi / 2), u in [0, 1]."""
    return torch.cos((diffusion_time.double() + s) / (1.0 + s) * (math.pi / 2)) ** 2


def cosine_alphas_cumprod(T: int = 1000, s: float = 0.008) -> torch.Tensor:
    """Improved-DDPM cosine schedule: abar_t = f((t+1)/T) / f(0), with betas clipped at 0.999; float64 (T,).

    The betas 1 - f((t+1)/T) / f(t/T) are clipped before the cumulative product, so the result equals the closed
    form everywhere except the last step(s), where f -> 0 would make beta_T = 1 (Nichol & Dhariwal 2021, eq. 17).
    """
    grid = torch.arange(T + 1, dtype=torch.float64) / T  # u = 0, 1/T, ..., 1
    f = cosine_alpha_bar_function(grid, s)
    betas = (1.0 - f[1:] / f[:-1]).clamp(max=MAX_BETA)
    return alphas_cumprod_from_betas(betas)


def cosine_angle_rates(
    diffusion_time: torch.Tensor | float,
    min_signal_rate: float = 0.02,
    max_signal_rate: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's continuous schedule (seed 000, eq. 11-12; Keras DDIM): (signal_rate, noise_rate) at time in [0, 1].

    angle = acos(max_signal_rate) + t * (acos(min_signal_rate) - acos(max_signal_rate)); signal = cos(angle),
    noise = sin(angle), so signal^2 + noise^2 = 1 and x_t = signal * x0 + noise * eps (eq. 12). At t = 0 the
    signal rate is `max_signal_rate` (never quite clean), at t = 1 it is `min_signal_rate` (never pure noise).
    The seed's table 6 names the two angles the other way round (its angle_min is acos(0.02)); we follow the
    Keras example it reproduces, where t = 0 is the clean end, as every other schedule here.
    """
    time = torch.as_tensor(diffusion_time, dtype=torch.float64)
    start_angle = math.acos(max_signal_rate)
    end_angle = math.acos(min_signal_rate)
    angle = start_angle + time * (end_angle - start_angle)
    return torch.cos(angle), torch.sin(angle)


def cosine_angle_alphas_cumprod(
    T: int = 1000, min_signal_rate: float = 0.02, max_signal_rate: float = 0.95
) -> torch.Tensor:
    """The seed's cosine-angle schedule on T discrete steps: abar at index t is signal_rate((t + 1) / T)^2.

    In DDPM's 1-based step numbering this is abar_t = signal_rate(t / T)^2 for t = 1..T, so the noisiest step
    reaches the schedule's end (signal 0.02) and the first step is one 1/T past its start (signal ~0.95).
    """
    diffusion_time = torch.arange(1, T + 1, dtype=torch.float64) / T
    signal_rate, _ = cosine_angle_rates(diffusion_time, min_signal_rate, max_signal_rate)
    return signal_rate**2


SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {
    "linear": lambda T: alphas_cumprod_from_betas(linear_betas(T)),
    "cosine": cosine_alphas_cumprod,
    "cosine-angle": cosine_angle_alphas_cumprod,
}


def schedule_alphas_cumprod(name: str, T: int) -> torch.Tensor:
    """alpha-bar (float64, (T,)) of the schedule called `name`; a clear error lists the valid names."""
    if name not in SCHEDULES:
        raise GenlabError(f"unknown noise schedule {name!r} (valid: {', '.join(SCHEDULES)})")
    if T < 1:
        raise GenlabError(f"the number of diffusion steps must be at least 1, got {T}")
    return SCHEDULES[name](T)


def posterior_coefficients(alphas_cumprod_t: Number, alphas_cumprod_prev: Number) -> tuple[Number, Number, Number]:
    """q(x_prev | x_t, x0) = N(coef_x0 * x0 + coef_xt * x_t, variance) between any two levels prev < t.

    Seed 001 eq. 11 (DDPM eq. 6-7), written with alpha_t -> abar_t / abar_prev so it also holds between the
    non-adjacent steps of a respaced sampler:
        coef_x0  = sqrt(abar_prev) * beta_t / (1 - abar_t)
        coef_xt  = sqrt(alpha_t) * (1 - abar_prev) / (1 - abar_t)
        variance = beta_t * (1 - abar_prev) / (1 - abar_t)          (beta-tilde)
    Works elementwise on tensors of any (matching) shape and dtype, and on Python floats.
    """
    alpha_t = alphas_cumprod_t / alphas_cumprod_prev
    beta_t = 1.0 - alpha_t
    one_minus_abar_t = 1.0 - alphas_cumprod_t
    coef_x0 = alphas_cumprod_prev**0.5 * beta_t / one_minus_abar_t
    coef_xt = alpha_t**0.5 * (1.0 - alphas_cumprod_prev) / one_minus_abar_t
    variance = beta_t * (1.0 - alphas_cumprod_prev) / one_minus_abar_t
    return coef_x0, coef_xt, variance


def values_at(values: torch.Tensor, t: torch.Tensor | int, ndim: int) -> torch.Tensor:
    """Pick `values[t]` and shape it to broadcast against a (B, ...) tensor with `ndim` dimensions.

    `t` is a Python int (one level for the whole batch -> a 0-d tensor) or a (B,) integer tensor
    (one level per sample -> shape (B, 1, ..., 1)).
    """
    if isinstance(t, int):
        return values[t]
    picked = values[t.to(device=values.device, dtype=torch.long)]  # (B,)
    return picked.reshape(picked.shape + (1,) * (ndim - picked.dim()))


class NoiseSchedule(nn.Module):
    """A discrete schedule of T steps as float32 buffers computed in float64; moves with `.to(device)`.

    Buffers (all (T,)): betas, alphas, alphas_cumprod, alphas_cumprod_prev, sqrt_alphas_cumprod,
    sqrt_one_minus_alphas_cumprod, sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod, posterior_variance,
    posterior_log_variance_clipped, posterior_mean_coef1 (multiplies x0), posterior_mean_coef2 (multiplies x_t).
    They are not persistent: a schedule is rebuilt from its name and T, so it never enters a checkpoint.
    `alphas_cumprod_float64` is a CPU float64 copy (an attribute, not a buffer: MPS has no float64) from which
    samplers take their per-step scalars; in float32, 1 - abar_t / abar_prev loses ~3 digits at the first steps.

    Example:
        >>> schedule = NoiseSchedule("linear", 1000).to("cpu")
        >>> round(schedule.betas[0].item(), 6), schedule.alpha_bar(-1)
        (0.0001, 1.0)
    """

    def __init__(
        self,
        name: ScheduleName | str = "linear",
        num_timesteps: int = 1000,
        *,
        alphas_cumprod: torch.Tensor | None = None,
    ) -> None:
        """Build schedule `name` with `num_timesteps` steps, or take a given alpha-bar (then `name` is a label)."""
        super().__init__()
        if alphas_cumprod is None:
            alphas_cumprod = schedule_alphas_cumprod(name, num_timesteps)
        alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float64)
        if alphas_cumprod.dim() != 1 or not bool(((alphas_cumprod > 0) & (alphas_cumprod <= 1)).all()):
            raise GenlabError("alphas_cumprod must be a 1-D tensor with values in (0, 1]")
        self.name = str(name)
        self.num_timesteps = int(alphas_cumprod.numel())
        self.alphas_cumprod_float64 = alphas_cumprod
        for key, value in _schedule_buffers(alphas_cumprod).items():
            self.register_buffer(key, value.float(), persistent=False)

    # Declared for type checkers; the values are registered buffers.
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor

    def alpha_bar(self, t: int) -> float:
        """alpha-bar at index t in float64, as a Python float (no device sync); t = -1 (the clean data) gives 1."""
        if t < 0:
            return 1.0
        return float(self.alphas_cumprod_float64[t])

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_timesteps={self.num_timesteps}"


def _schedule_buffers(alphas_cumprod: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every derived quantity of a schedule, in float64 (the precision matters near abar -> 0 and 1)."""
    betas = betas_from_alphas_cumprod(alphas_cumprod)
    alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    coef_x0, coef_xt, posterior_variance = posterior_coefficients(alphas_cumprod, alphas_cumprod_prev)
    # The posterior variance is 0 at the first step (x_prev is x0); its log is clipped to the next value, as in
    # guided-diffusion, so log-variance stays finite.
    clipped = torch.cat([posterior_variance[1:2], posterior_variance[1:]]) if len(betas) > 1 else betas
    return {
        "betas": betas,
        "alphas": 1.0 - betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
        "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": clipped.log(),
        "posterior_mean_coef1": coef_x0,
        "posterior_mean_coef2": coef_xt,
    }
