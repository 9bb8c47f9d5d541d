"""Samplers: DDPM ancestral and DDIM steps as pure objects, a sampling loop and classifier-free guidance.

A sampler holds only its fixed settings (schedule, variance kind or eta, clipping); `step` is told both the
current level `t` and the target level `t_prev`, so fewer steps is just a shorter timestep list
(guided-diffusion `space_timesteps`) and nothing depends on the order of calls (unlike diffusers'
`set_timesteps` + internal counters). `t_prev = -1` means "to the clean data", with alpha-bar = 1.

Example:
    >>> schedule = NoiseSchedule("linear", 1000)
    >>> sampler = DDIMSampler(schedule, eta=0.0)
    >>> x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> x0 = sample_loop(lambda x, t, c: torch.zeros_like(x), sampler, evenly_spaced_timesteps(1000, 10), x_T)
    >>> x0.shape
    torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from tqdm.auto import tqdm

from genlab.diffusion.process import (
    Network,
    Prediction,
    model_output_to_x0_eps,
    predict_eps_from_x0,
    randn_like_with,
    self_conditioned_input,
)
from genlab.diffusion.schedules import NoiseSchedule, posterior_coefficients

DDPMVariance = Literal["beta", "posterior"]


def evenly_spaced_timesteps(T: int, steps: int) -> list[int]:
    """`steps` descending, unique timesteps out of T, always starting at the noisiest one, T - 1.

    The "trailing" spacing (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    table 2; diffusers `timestep_spacing="trailing"`): t_i = round(T - i * T / steps) - 1 for i = 0..steps-1,
    e.g. T = 1000, steps = 50 -> [999, 979, ..., 19]. Starting at T - 1 matters: x_T ~ N(0, I) only matches the
    noisiest level. Rounds halves up where diffusers (NumPy) rounds them to even; the two differ only where
    T (steps - i) / steps is exactly a half-integer.
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and T = {T}, got {steps}")
    # Exact integer arithmetic for round(T * (steps - i) / steps): no float drift for any T.
    return [(T * (steps - i) * 2 + steps) // (2 * steps) - 1 for i in range(steps)]


@dataclass(frozen=True)
class StepOutput:
    """One reverse step: the sample at `t_prev` and the clean-image estimate it was built from (both (B, C, H, W))."""

    prev_sample: torch.Tensor
    pred_x0: torch.Tensor


class Sampler(Protocol):
    """What `sample_loop` needs: a pure reverse step from level t to level t_prev."""

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        t_prev: int,
        x_t: torch.Tensor,
        generator: torch.Generator | None = None,
        prediction: Prediction = "eps",
    ) -> StepOutput: ...


def _estimate_x0_eps(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    t: int,
    x_t: torch.Tensor,
    prediction: Prediction,
    clip_x0: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from the network output; with `clip_x0`, x0 is clamped to the image range [-1, 1] and eps is
    re-derived from the clamped x0 so the step stays on the line through x_t (guided-diffusion's DDIM)."""
    x0, eps = model_output_to_x0_eps(schedule, model_output, x_t, t, prediction)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = predict_eps_from_x0(schedule, x_t, t, x0)
    return x0, eps


def _levels(schedule: NoiseSchedule, t: int, t_prev: int) -> tuple[float, float]:
    """alpha-bar at t and t_prev as float64 Python floats; checks the step goes towards the data."""
    if not -1 <= t_prev < t < schedule.num_timesteps:
        limit = schedule.num_timesteps
        raise ValueError(f"a reverse step needs -1 <= t_prev < t < {limit}, got t={t}, t_prev={t_prev}")
    return schedule.alpha_bar(t), schedule.alpha_bar(t_prev)


class DDPMSampler:
    """Ancestral sampling from p(x_prev | x_t) = N(posterior mean at the predicted x0, sigma^2) (DDPM, alg. 2).

    `variance="beta"` uses sigma^2 = beta_t (DDPM's "fixed large"), `"posterior"` uses beta-tilde_t (the true
    posterior variance, "fixed small"); Ho et al. found both work about as well (seed 001, below eq. 20). Between
    non-adjacent levels (a respaced run) beta_t means 1 - abar_t / abar_prev.
    """

    def __init__(self, schedule: NoiseSchedule, variance: DDPMVariance = "beta", clip_x0: bool = True) -> None:
        if variance not in ("beta", "posterior"):
            raise ValueError(f"unknown DDPM variance {variance!r} (valid: beta, posterior)")
        self.schedule = schedule
        self.variance = variance
        self.clip_x0 = clip_x0

    def step_variance(self, t: int, t_prev: int) -> float:
        """sigma^2 of the step t -> t_prev; 0 when t_prev = -1, the last step adds no noise."""
        abar_t, abar_prev = _levels(self.schedule, t, t_prev)
        if t_prev < 0:
            return 0.0
        if self.variance == "beta":
            return 1.0 - abar_t / abar_prev
        return posterior_coefficients(abar_t, abar_prev)[2]

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        t_prev: int,
        x_t: torch.Tensor,
        generator: torch.Generator | None = None,
        prediction: Prediction = "eps",
        *,
        noise: torch.Tensor | None = None,
    ) -> StepOutput:
        """x_prev = coef_x0 * x0_hat + coef_xt * x_t + sigma * z (seed 001, eq. 11 with x0 -> x0_hat).

        `noise` (shaped like x_t) overrides the draw of z from `generator`.
        """
        t, t_prev = int(t), int(t_prev)
        abar_t, abar_prev = _levels(self.schedule, t, t_prev)
        x0, _ = _estimate_x0_eps(self.schedule, model_output, t, x_t, prediction, self.clip_x0)
        coef_x0, coef_xt, _ = posterior_coefficients(abar_t, abar_prev)
        mean = coef_x0 * x0 + coef_xt * x_t  # (B, C, H, W)
        if t_prev < 0:
            return StepOutput(prev_sample=mean, pred_x0=x0)
        if noise is None:
            noise = randn_like_with(x_t, generator)
        return StepOutput(prev_sample=mean + math.sqrt(self.step_variance(t, t_prev)) * noise, pred_x0=x0)


class DDIMSampler:
    """DDIM (Song et al. 2021): the non-Markovian reverse step, deterministic at eta = 0, DDPM-like at eta = 1."""

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0, clip_x0: bool = True) -> None:
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.schedule = schedule
        self.eta = float(eta)
        self.clip_x0 = clip_x0

    def step_variance(self, t: int, t_prev: int) -> float:
        """sigma_t^2 = eta^2 (1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev) (Song et al., eq. 16)."""
        abar_t, abar_prev = _levels(self.schedule, t, t_prev)
        return self.eta**2 * (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        t_prev: int,
        x_t: torch.Tensor,
        generator: torch.Generator | None = None,
        prediction: Prediction = "eps",
        *,
        noise: torch.Tensor | None = None,
    ) -> StepOutput:
        """Song et al., eq. 12: x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z.

        The first term is the "predicted x0", the second the "direction pointing to x_t"; sigma from eq. 16.
        `noise` (shaped like x_t) overrides the draw of z from `generator`; no noise is drawn when sigma = 0.
        """
        t, t_prev = int(t), int(t_prev)
        _, abar_prev = _levels(self.schedule, t, t_prev)
        x0, eps = _estimate_x0_eps(self.schedule, model_output, t, x_t, prediction, self.clip_x0)
        variance = self.step_variance(t, t_prev)
        # max(., 0): 1 - abar_prev - sigma^2 may round to -1e-17 instead of 0 at eta = 1.
        prev_sample = math.sqrt(abar_prev) * x0 + math.sqrt(max(1.0 - abar_prev - variance, 0.0)) * eps
        if variance > 0 and t_prev >= 0:
            if noise is None:
                noise = randn_like_with(x_t, generator)
            prev_sample = prev_sample + math.sqrt(variance) * noise
        return StepOutput(prev_sample=prev_sample, pred_x0=x0)  # (B, C, H, W) each


def guided_output(
    model_fn: Network,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor | None,
    null_cond: torch.Tensor | None,
    scale: float,
    guide_fn: Network | None = None,
    guide_weight: float = 1.0,
) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6): uncond + scale * (cond - uncond), plus autoguidance.

    scale = 1 (or no condition) is exactly the conditional prediction, with a single forward on the batch.
    Otherwise both predictions come from ONE forward on [x, x] with [cond, null_cond] (batch 2B), the usual
    trade of memory for a single network call. `null_cond` is the "no condition" input of the same shape as
    `cond`: the null label (`LabelEmbedding.null_index`) or, for an image condition, what the network was
    trained with under condition dropout (e.g. zeros).

    Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"): with a weaker
    network `guide_fn` (fed the same condition) and `guide_weight` w != 1, (w - 1) * (cond - guide) is added, so
    the output is cond + (scale - 1) (cond - uncond) + (w - 1) (cond - guide); at scale 1 that is eq. 2 of the
    paper, guide + w (cond - guide). It pushes away from the weaker network's errors rather than from the
    unconditional prediction, so it sharpens each class without pulling all of its samples toward one layout.
    """
    autoguided = guide_fn is not None and guide_weight != 1.0
    if scale == 1.0 or cond is None:
        output = conditional = model_fn(x, t, cond)
    elif null_cond is None:
        raise ValueError("classifier-free guidance with scale != 1 needs null_cond (the unconditional input)")
    else:
        both = model_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null_cond.to(cond.device)]))
        conditional, unconditional = both.chunk(2)  # each (B, C, H, W)
        output = unconditional + scale * (conditional - unconditional)
    if autoguided:
        output = output + (guide_weight - 1.0) * (conditional - guide_fn(x, t, cond))
    return output


def check_noise_interval(interval: Sequence[float]) -> tuple[float, float]:
    """(low, high) as floats, or a ValueError unless 0 <= low < high (noise levels sigma)."""
    low, high = (float(value) for value in interval)
    if not 0 <= low < high:
        raise ValueError(f"need 0 <= low < high noise levels (sigma), got ({low:g}, {high:g})")
    return low, high


def interval_guidance_scales(
    schedule: NoiseSchedule, levels: Sequence[int], scale: float, sigma_interval: tuple[float, float] | None
) -> list[float]:
    """The guidance scale of each sampling level: `scale` where the noise level lies in the interval, 1 elsewhere.

    Guidance limited to an interval of noise levels (Kynkaanniemi et al. 2024, "Applying guidance in a limited
    interval improves sample and distribution quality in diffusion models"): at high noise guidance pulls every
    sample of a class toward the same layout (lost variety). They find it does little at low noise on ImageNet;
    on genlab's small Fashion-MNIST nets the low-noise end is where it sets the class (README, "Guidance in a
    limited interval"), so the interval is a setting, not a constant. The level is EDM's
    sigma = sqrt((1 - abar_t) / abar_t), so an interval (lo, hi] means the same noise on any schedule or T. None
    (no interval) gives `scale` at every level. A level at scale 1 costs one network evaluation instead of two.
    """
    if sigma_interval is None:
        return [scale] * len(levels)
    low, high = check_noise_interval(sigma_interval)
    scales = []
    for t in levels:
        abar = schedule.alpha_bar(t)
        sigma = math.sqrt((1.0 - abar) / abar)
        scales.append(scale if low < sigma <= high else 1.0)
    return scales


def sample_loop(
    model_fn: Network,
    sampler: Sampler,
    timesteps: Sequence[int] | torch.Tensor,
    x_T: torch.Tensor,
    cond: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    guidance_scale: float | Sequence[float] = 1.0,
    null_cond: torch.Tensor | None = None,
    prediction: Prediction = "eps",
    callback: Callable[[int, StepOutput], None] | None = None,
    self_condition: bool = False,
    guide_fn: Network | None = None,
    guide_weight: float = 1.0,
) -> torch.Tensor:
    """Run `sampler` from x_T (B, C, H, W) through the descending `timesteps` down to the data; returns x0.

    Each level t goes to the next one in the list, the last to -1 (clean). The network sees t as a (B,) int64
    tensor. Noise is drawn from `generator` (for a seed per sample, give each sample its own call).
    `guidance_scale` is one scale, or one per level (`interval_guidance_scales`).
    `callback(t, step_output)` sees every intermediate step (for trajectories or progress images).
    With `self_condition` the network reads x_t beside the previous step's clean-image estimate (zeros at the
    first step), as `diffusion_loss(self_condition=True)` trained it. `guide_fn` and `guide_weight`: autoguidance
    at every level (`guided_output`).
    """
    levels = [int(t) for t in timesteps]
    if any(later >= earlier for earlier, later in zip(levels, levels[1:], strict=False)):
        raise ValueError("timesteps must be strictly descending")
    scales = [float(guidance_scale)] * len(levels) if isinstance(guidance_scale, (int, float)) else list(guidance_scale)
    if len(scales) != len(levels):
        raise ValueError(f"{len(scales)} guidance scales for {len(levels)} sampling levels")
    x = x_T
    x0_estimate = torch.zeros_like(x_T) if self_condition else None
    for index, t in enumerate(tqdm(levels, desc="sampling", disable=not progress, leave=False)):
        t_prev = levels[index + 1] if index + 1 < len(levels) else -1
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)  # (B,)
        network_input = x if x0_estimate is None else self_conditioned_input(x, x0_estimate)
        model_output = guided_output(
            model_fn, network_input, t_batch, cond, null_cond, scales[index], guide_fn, guide_weight
        )
        output = sampler.step(model_output, t, t_prev, x, generator=generator, prediction=prediction)
        if callback is not None:
            callback(t, output)
        x = output.prev_sample
        if x0_estimate is not None:
            x0_estimate = output.pred_x0
    return x


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between noise batches a and b (B, ...), per sample (Shoemake 1985; DDIM sec. 5.3).

    Gaussian noise lives near a sphere, so interpolating along it keeps x_T's norm typical; weight 0 gives a,
    1 gives b. Falls back to linear interpolation where a and b are (nearly) parallel.
    """
    flat_a, flat_b = a.flatten(1).double(), b.flatten(1).double()  # (B, D)
    weight = torch.as_tensor(weight, dtype=torch.float64, device=a.device).reshape(-1, 1)  # (1 or B, 1)
    norms = flat_a.norm(dim=1, keepdim=True) * flat_b.norm(dim=1, keepdim=True)
    cosine = (flat_a * flat_b).sum(1, keepdim=True) / norms  # (B, 1)
    theta = torch.acos(cosine.clamp(-1.0, 1.0))  # (B, 1)
    sin_theta = torch.sin(theta)
    parallel = sin_theta.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin_theta), sin_theta)
    weight_a = torch.where(parallel, 1.0 - weight, torch.sin((1.0 - weight) * theta) / safe)
    weight_b = torch.where(parallel, weight.expand_as(theta), torch.sin(weight * theta) / safe)
    return (weight_a * flat_a + weight_b * flat_b).to(a.dtype).reshape(a.shape)


__all__ = [
    "DDIMSampler",
    "DDPMSampler",
    "Sampler",
    "StepOutput",
    "check_noise_interval",
    "evenly_spaced_timesteps",
    "guided_output",
    "interval_guidance_scales",
    "sample_loop",
    "slerp",
]
