"""The Gaussian diffusion process: forward noising, the true posterior, eps/x0/v conversions and the loss.

The process owns the schedule and the loss and is handed the network (guided-diffusion `training_losses`): the
network is any callable `network(x_t, t, cond)`; it alone decides what `cond` means (a label tensor, a source
image to concatenate, or None). Every eps / x0 / v conversion lives here and nowhere else.

Notation: abar = alphas_cumprod[t]; x_t = sqrt(abar) x0 + sqrt(1 - abar) eps (seed 001, eq. 4); the velocity
v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, sec. 4). `t` is a (B,) integer tensor (a level
per sample) or a Python int (one level for the whole batch).

Example:
    >>> schedule = NoiseSchedule("linear", 1000)
    >>> x0 = torch.zeros(2, 1, 8, 8); noise = torch.randn_like(x0)
    >>> x_t = q_sample(schedule, x0, torch.tensor([10, 500]), noise)
    >>> torch.allclose(predict_x0_from_eps(schedule, x_t, torch.tensor([10, 500]), noise), x0, atol=1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from genlab.diffusion.schedules import NoiseSchedule, values_at
from genlab.utils import Generator, randn

Prediction = Literal["eps", "x0", "v"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v")
Timesteps = torch.Tensor | int
# network(x_t (B, C, H, W), t (B,), cond) -> (B, C, H, W)
Network = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def randn_like_with(x: torch.Tensor, generator: Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn from `generator` (a torch.Generator or one per sample)."""
    return randn(x.shape, generator, x.device).to(x.dtype)


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: Timesteps, noise: torch.Tensor) -> torch.Tensor:
    """Sample q(x_t | x0): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (seed 001, eq. 4). Shapes of x0."""
    return (
        values_at(schedule.sqrt_alphas_cumprod, t, x0.dim()) * x0
        + values_at(schedule.sqrt_one_minus_alphas_cumprod, t, x0.dim()) * noise
    )


def q_posterior(
    schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: Timesteps
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0) (seed 001, eq. 11; DDPM eq. 6-7).

    mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
    variance = beta-tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t). The mean has the shape of x_t; variance and
    log-variance broadcast against it ((B, 1, 1, 1) for a tensor t, 0-d for an int t).
    """
    ndim = x_t.dim()
    mean = (
        values_at(schedule.posterior_mean_coef1, t, ndim) * x0
        + values_at(schedule.posterior_mean_coef2, t, ndim) * x_t
    )
    variance = values_at(schedule.posterior_variance, t, ndim)
    log_variance = values_at(schedule.posterior_log_variance_clipped, t, ndim)
    return mean, variance, log_variance


def predict_x0_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timesteps, eps: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) (seed 001, eq. 12), as sqrt(1/abar) x_t - sqrt(1/abar - 1) eps."""
    return (
        values_at(schedule.sqrt_recip_alphas_cumprod, t, x_t.dim()) * x_t
        - values_at(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.dim()) * eps
    )


def predict_eps_from_x0(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timesteps, x0: torch.Tensor) -> torch.Tensor:
    """eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar), the inverse of `predict_x0_from_eps`."""
    return (values_at(schedule.sqrt_recip_alphas_cumprod, t, x_t.dim()) * x_t - x0) / values_at(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t.dim()
    )


def predict_v(schedule: NoiseSchedule, x0: torch.Tensor, t: Timesteps, eps: torch.Tensor) -> torch.Tensor:
    """The velocity target v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, sec. 4)."""
    return (
        values_at(schedule.sqrt_alphas_cumprod, t, x0.dim()) * eps
        - values_at(schedule.sqrt_one_minus_alphas_cumprod, t, x0.dim()) * x0
    )


def predict_x0_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timesteps, v: torch.Tensor) -> torch.Tensor:
    """x0 = sqrt(abar) x_t - sqrt(1 - abar) v (substitute x_t and v; the cross terms cancel since a^2 + b^2 = 1)."""
    return (
        values_at(schedule.sqrt_alphas_cumprod, t, x_t.dim()) * x_t
        - values_at(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.dim()) * v
    )


def predict_eps_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timesteps, v: torch.Tensor) -> torch.Tensor:
    """eps = sqrt(1 - abar) x_t + sqrt(abar) v."""
    return (
        values_at(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.dim()) * x_t
        + values_at(schedule.sqrt_alphas_cumprod, t, x_t.dim()) * v
    )


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r} (valid: {', '.join(PREDICTIONS)})")


def model_output_to_x0_eps(
    schedule: NoiseSchedule, output: torch.Tensor, x_t: torch.Tensor, t: Timesteps, prediction: Prediction = "eps"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) implied by a network output under the parametrisation `prediction` ("eps", "x0" or "v")."""
    _check_prediction(prediction)
    if prediction == "eps":
        return predict_x0_from_eps(schedule, x_t, t, output), output
    if prediction == "x0":
        return output, predict_eps_from_x0(schedule, x_t, t, output)
    return predict_x0_from_v(schedule, x_t, t, output), predict_eps_from_v(schedule, x_t, t, output)


def prediction_target(
    schedule: NoiseSchedule, x0: torch.Tensor, t: Timesteps, noise: torch.Tensor, prediction: Prediction = "eps"
) -> torch.Tensor:
    """What the network should output under `prediction`: the noise, the clean image or the velocity."""
    _check_prediction(prediction)
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    return predict_v(schedule, x0, t, noise)


def min_snr_weights(schedule: NoiseSchedule, t: torch.Tensor, gamma: float, prediction: Prediction) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, sec. 3.4) for levels `t` (B,), as float32 (B,).

    With SNR = abar / (1 - abar), the x0-space weight min(SNR, gamma) is expressed in the regression target's
    units: divided by SNR for eps (the eps MSE is SNR times the x0 MSE) and by SNR + 1 for v. The effect is to
    stop the many nearly clean levels, where denoising is easy, from dominating the gradient.
    """
    _check_prediction(prediction)
    abar = values_at(schedule.alphas_cumprod_float64, t, 1)  # (B,), float64 on the CPU (MPS has no float64)
    snr = abar / (1.0 - abar)
    clipped = snr.clamp(max=gamma)
    divisor = {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1.0}[prediction]
    return (clipped / divisor).float().to(t.device)


def log_normal_level_probabilities(schedule: NoiseSchedule, mean: float, std: float) -> torch.Tensor:
    """P(t) for t in 0..T-1 (float64, sums to 1) when ln sigma ~ N(mean, std^2), sigma = sqrt((1 - abar) / abar).

    EDM's training distribution of noise levels (Karras et al. 2022, sec. 5: ln sigma ~ N(-1.2, 1.2^2) for data
    of std 0.5) put on a discrete schedule: level t takes the normal's mass between the midpoints (in ln sigma)
    to its neighbours, the first and last levels the two tails. Uniform t spends a third of the training on
    sigma > 10, where the image is nearly pure noise; this spends it around sigma = exp(mean).
    """
    if not std > 0:
        raise ValueError(f"the std of ln sigma must be > 0, got {std:g}")
    abar = schedule.alphas_cumprod_float64
    log_sigma = 0.5 * torch.log((1.0 - abar) / abar)  # (T,), increasing in t
    edges = (log_sigma[1:] + log_sigma[:-1]) / 2  # (T - 1,)
    cdf = torch.special.ndtr((edges - mean) / std)
    zero, one = cdf.new_zeros(1), cdf.new_ones(1)
    return torch.diff(torch.cat([zero, cdf, one]))  # (T,)


def self_conditioned_input(x_t: torch.Tensor, x0_estimate: torch.Tensor) -> torch.Tensor:
    """What a self-conditioned denoiser reads: x_t (B, C, H, W) with its clean-image estimate beside it,
    (B, 2C, H, W); the estimate is zeros where there is none yet (training's first pass, sampling's first step)."""
    return torch.cat([x_t, x0_estimate.to(x_t.dtype)], dim=1)


def diffusion_loss(
    network: Network,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    cond: torch.Tensor | None = None,
    prediction: Prediction = "eps",
    generator: torch.Generator | None = None,
    min_snr_gamma: float | None = None,
    level_probabilities: torch.Tensor | None = None,
    self_condition: bool = False,
) -> dict[str, torch.Tensor]:
    """L_simple (DDPM eq. 14; seed 001 eq. 25, seed 000 eq. 10) for one batch x0 (B, C, H, W) in [-1, 1].

    t ~ U{0..T-1} (or ~ `level_probabilities` (T,), e.g. `log_normal_level_probabilities`) and eps ~ N(0, I)
    are drawn from `generator`; the network sees x_t = q_sample(x0, t, eps) and its output is regressed (MSE,
    averaged over every element) on the target of `prediction`. With `min_snr_gamma`, each sample's MSE is
    weighted by `min_snr_weights` before the batch mean. With `self_condition` the network takes x_t with a
    clean-image estimate concatenated (`self_conditioned_input`): zeros, or on half the batches (a coin from
    `generator`) the clamped x0 of a first, gradient-free pass on zeros (Chen et al. 2023, "Analog Bits", sec. 3).

    Returns `loss` (scalar, differentiable) and `image_loss` (detached): the seed's mean absolute error between
    x0 and the x0 reconstructed from the network output, logged to see what the denoiser actually recovers.
    """
    batch = x0.shape[0]
    device = generator.device if generator is not None else x0.device
    if level_probabilities is None:
        t = torch.randint(0, schedule.num_timesteps, (batch,), generator=generator, device=device)  # (B,)
    else:
        t = torch.multinomial(level_probabilities.to(device), batch, replacement=True, generator=generator)
    t = t.to(x0.device)
    noise = randn_like_with(x0, generator)  # (B, C, H, W)
    x_t = q_sample(schedule, x0, t, noise)
    network_input = x_t
    if self_condition:
        x0_estimate = torch.zeros_like(x_t)
        if torch.rand(1, generator=generator, device=device).item() < 0.5:
            with torch.no_grad():
                first = network(self_conditioned_input(x_t, x0_estimate), t, cond)
                x0_estimate = model_output_to_x0_eps(schedule, first.float(), x_t, t, prediction)[0].clamp(-1, 1)
        network_input = self_conditioned_input(x_t, x0_estimate)  # (B, 2C, H, W)
    output = network(network_input, t, cond)  # (B, C, H, W)
    target = prediction_target(schedule, x0, t, noise, prediction)
    if min_snr_gamma is None:
        loss = F.mse_loss(output.float(), target.float())
    else:
        per_sample = (output.float() - target.float()).square().flatten(1).mean(1)  # (B,)
        loss = (min_snr_weights(schedule, t, min_snr_gamma, prediction) * per_sample).mean()
    with torch.no_grad():
        x0_reconstructed, _ = model_output_to_x0_eps(schedule, output.detach().float(), x_t, t, prediction)
        image_loss = (x0_reconstructed - x0).abs().mean()
    return {"loss": loss, "image_loss": image_loss}
