"""The forward process, its posterior, the eps/x0/v conversions and the training loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genlab.diffusion.process import (
    diffusion_loss,
    log_normal_level_probabilities,
    min_snr_weights,
    model_output_to_x0_eps,
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_v,
    predict_x0_from_eps,
    predict_x0_from_v,
    prediction_target,
    q_posterior,
    q_sample,
    self_conditioned_input,
)
from genlab.diffusion.schedules import NoiseSchedule, cosine_alphas_cumprod, schedule_alphas_cumprod


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_q_sample_moments(schedule, t):
    generator = torch.Generator().manual_seed(t)
    count = 400_000
    x0 = torch.full((count,), 0.7)
    x_t = q_sample(schedule, x0, torch.full((count,), t), torch.randn(count, generator=generator))
    abar = schedule.alphas_cumprod[t].double().item()
    standard_error = ((1 - abar) / count) ** 0.5
    assert x_t.double().mean().item() == pytest.approx(abar**0.5 * 0.7, abs=5 * standard_error)
    # The variance estimate has standard error ~ var * sqrt(2 / n).
    assert x_t.double().var().item() == pytest.approx(1 - abar, rel=5 * (2 / count) ** 0.5)


def test_q_sample_per_sample_levels(schedule):
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 4, generator=generator)
    noise = torch.randn(3, 2, 4, 4, generator=generator)
    t = torch.tensor([0, 10, 999])
    x_t = q_sample(schedule, x0, t, noise)
    for i in range(3):
        abar = schedule.alphas_cumprod[t[i]]
        assert torch.allclose(x_t[i], abar.sqrt() * x0[i] + (1 - abar).sqrt() * noise[i], atol=1e-5)


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine-angle"])
def test_posterior_closed_form_and_gaussian_product(name):
    schedule = NoiseSchedule(name, 1000)
    abar64 = schedule_alphas_cumprod(name, 1000)  # the float64 reference, not the float32 buffer
    t = torch.tensor([1, 2, 50, 400, 998, 999])
    x0 = torch.randn(len(t), 1, 3, 3, dtype=torch.float64)
    x_t = torch.randn(len(t), 1, 3, 3, dtype=torch.float64)
    mean, variance, log_variance = q_posterior(schedule, x0.float(), x_t.float(), t)
    for i, step in enumerate(t.tolist()):
        abar, abar_prev = abar64[step], abar64[step - 1]
        beta = 1 - abar / abar_prev
        # Closed form (seed 001, eq. 11).
        coef_x0 = abar_prev.sqrt() * beta / (1 - abar)
        coef_xt = (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)
        closed_mean = coef_x0 * x0[i] + coef_xt * x_t[i]
        closed_variance = beta * (1 - abar_prev) / (1 - abar)
        # Gaussian product: q(x_t | x_{t-1}) as a density in x_{t-1} is N(x_t / sqrt(alpha), beta / alpha),
        # times q(x_{t-1} | x0) = N(sqrt(abar_prev) x0, 1 - abar_prev) (seed 001, eq. 8-10).
        mean_1, variance_1 = x_t[i] / (1 - beta).sqrt(), beta / (1 - beta)
        mean_2, variance_2 = abar_prev.sqrt() * x0[i], 1 - abar_prev
        product_variance = 1 / (1 / variance_1 + 1 / variance_2)
        product_mean = product_variance * (mean_1 / variance_1 + mean_2 / variance_2)
        assert torch.allclose(closed_mean, product_mean, rtol=1e-9, atol=1e-9)
        assert closed_variance.item() == pytest.approx(product_variance.item(), rel=1e-9)
        assert torch.allclose(mean[i].double(), closed_mean, rtol=1e-4, atol=1e-5)
        assert variance[i].item() == pytest.approx(closed_variance.item(), rel=1e-4)
        assert log_variance[i].item() == pytest.approx(closed_variance.log().item(), rel=1e-4)


def test_posterior_at_first_step_is_x0(schedule):
    x0, x_t = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    mean, variance, _ = q_posterior(schedule, x0, x_t, torch.tensor([0, 0]))
    assert torch.allclose(mean, x0, atol=1e-6)
    assert float(variance.max()) == 0.0


@pytest.mark.parametrize("t_value", [0, 10, 300, 700, 999])
def test_conversions_invert_each_other(schedule, t_value):
    generator = torch.Generator().manual_seed(t_value)
    x0 = torch.rand(4, 3, 8, 8, generator=generator) * 2 - 1
    eps = torch.randn(4, 3, 8, 8, generator=generator)
    t = torch.full((4,), t_value)
    x_t = q_sample(schedule, x0, t, eps)
    # 1/sqrt(abar) reaches ~160 at t = 999 (linear), which scales float32 rounding in x0 from eps.
    scale = schedule.sqrt_recip_alphas_cumprod[t_value].item()
    assert torch.allclose(predict_x0_from_eps(schedule, x_t, t, eps), x0, atol=1e-6 * scale * 10)
    assert torch.allclose(predict_eps_from_x0(schedule, x_t, t, x0), eps, atol=1e-3)
    v = predict_v(schedule, x0, t, eps)
    assert torch.allclose(predict_x0_from_v(schedule, x_t, t, v), x0, atol=1e-5)
    assert torch.allclose(predict_eps_from_v(schedule, x_t, t, v), eps, atol=1e-5)
    for prediction, output in (("eps", eps), ("x0", x0), ("v", v)):
        recovered_x0, recovered_eps = model_output_to_x0_eps(schedule, output, x_t, t, prediction)
        assert torch.allclose(recovered_x0, x0, atol=1e-6 * scale * 10), prediction
        assert torch.allclose(recovered_eps, eps, atol=1e-3), prediction
        assert torch.equal(prediction_target(schedule, x0, t, eps, prediction), output)


def test_conversions_with_int_timestep(schedule):
    x0, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    x_t = q_sample(schedule, x0, 250, eps)
    assert torch.allclose(x_t, q_sample(schedule, x0, torch.tensor([250, 250]), eps))
    assert torch.allclose(predict_x0_from_eps(schedule, x_t, 250, eps), x0, atol=1e-5)


def test_v_is_the_angular_velocity():
    """With abar = cos^2(phi), x_t = cos(phi) x0 + sin(phi) eps and v = d x_t / d phi (Salimans & Ho)."""
    schedule = NoiseSchedule("custom", alphas_cumprod=cosine_alphas_cumprod(100))
    x0, eps = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    abar = schedule.alphas_cumprod[40].double()
    phi = torch.acos(abar.sqrt())
    derivative = -torch.sin(phi) * x0.double() + torch.cos(phi) * eps.double()
    assert torch.allclose(predict_v(schedule, x0, 40, eps).double(), derivative, atol=1e-6)


class RecordingNet(torch.nn.Module):
    """A tiny conv net that records what the process hands it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.seen: list = []

    def forward(self, x_t, t, cond):
        self.seen.append((x_t.shape, t.clone(), cond))
        return self.conv(x_t)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_diffusion_loss(schedule, prediction):
    net = RecordingNet()
    x0 = torch.rand(6, 1, 8, 8) * 2 - 1
    labels = torch.arange(6)
    losses = diffusion_loss(net, schedule, x0, labels, prediction, torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "image_loss"}
    assert losses["loss"].requires_grad and losses["loss"].dim() == 0
    assert not losses["image_loss"].requires_grad
    losses["loss"].backward()
    assert net.conv.weight.grad is not None
    shape, t, cond = net.seen[0]
    assert shape == x0.shape and cond is labels
    assert t.dtype == torch.long and t.shape == (6,) and 0 <= int(t.min()) and int(t.max()) < 1000
    # Same generator seed -> same t, noise and loss.
    again = diffusion_loss(net, schedule, x0, labels, prediction, torch.Generator().manual_seed(0))
    assert torch.equal(net.seen[1][1], t) and torch.equal(again["loss"], losses["loss"])


def test_diffusion_loss_is_zero_for_the_oracle(schedule):
    """A network that outputs the exact target has zero L_simple and zero image MAE."""
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    generator_seed = 3

    # Replay the process' own draws to build an oracle for eps.
    generator = torch.Generator().manual_seed(generator_seed)
    t = torch.randint(0, 1000, (4,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)

    def oracle(x_t, t_seen, cond):
        assert torch.equal(t_seen, t)
        return noise

    losses = diffusion_loss(oracle, schedule, x0, generator=torch.Generator().manual_seed(generator_seed))
    assert losses["loss"].item() == 0.0
    assert losses["image_loss"].item() < 1e-3


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_min_snr_weights_follow_diffusers_recipe(prediction):
    """diffusers' training scripts: snr = compute_snr(...); w = min(snr, gamma), / snr for eps, / (snr + 1) for v."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.training_utils import compute_snr

    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    t = torch.tensor([0, 1, 10, 100, 300, 500, 900, 999])
    snr = compute_snr(scheduler, t)
    expected = torch.minimum(snr, torch.full_like(snr, 5.0))
    expected = {"eps": expected / snr, "x0": expected, "v": expected / (snr + 1)}[prediction]
    weights = min_snr_weights(NoiseSchedule("linear", 1000), t, 5.0, prediction)
    assert weights.dtype == torch.float32 and weights.shape == (8,)
    # diffusers' alpha-bar is a float32 cumulative product, ours a float64 one: 3e-4 apart at SNR ~ 5000 (t = 1).
    torch.testing.assert_close(weights, expected, rtol=1e-3, atol=0)
    # Nearly clean levels (SNR far above gamma) are the ones turned down; the noisiest keep weight 1 for eps.
    if prediction == "eps":
        assert weights[0] < 1e-3 and weights[-1] == pytest.approx(1.0)


def test_min_snr_loss_is_the_weighted_mean_of_per_sample_errors(schedule):
    x0 = torch.rand(5, 1, 4, 4) * 2 - 1

    def zeros(x_t, t, cond):
        return torch.zeros_like(x_t)

    weighted = diffusion_loss(zeros, schedule, x0, None, "v", torch.Generator().manual_seed(2), min_snr_gamma=5.0)
    # Replay the process' draws: t first, then the noise.
    generator = torch.Generator().manual_seed(2)
    t = torch.randint(0, schedule.num_timesteps, (5,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    per_sample = prediction_target(schedule, x0, t, noise, "v").square().flatten(1).mean(1)
    expected = (min_snr_weights(schedule, t, 5.0, "v") * per_sample).mean()
    torch.testing.assert_close(weighted["loss"], expected)
    plain = diffusion_loss(zeros, schedule, x0, None, "v", torch.Generator().manual_seed(2))
    torch.testing.assert_close(plain["loss"], per_sample.mean())
    assert not torch.allclose(weighted["loss"], plain["loss"])


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_log_normal_level_probabilities_are_the_normal_mass_between_level_midpoints(name):
    """Checked against SciPy's normal CDF on ln sigma, computed here from the schedule's alpha-bar."""
    stats = pytest.importorskip("scipy.stats")
    schedule = NoiseSchedule(name, 1000)
    probabilities = log_normal_level_probabilities(schedule, -0.5, 1.2)
    assert probabilities.shape == (1000,) and probabilities.dtype == torch.float64
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-12) and (probabilities >= 0).all()
    abar = schedule.alphas_cumprod_float64.numpy()
    log_sigma = 0.5 * np.log((1 - abar) / abar)
    for t in (0, 37, 250, 600, 999):
        low = -np.inf if t == 0 else (log_sigma[t - 1] + log_sigma[t]) / 2
        high = np.inf if t == 999 else (log_sigma[t] + log_sigma[t + 1]) / 2
        expected = stats.norm.cdf(high, -0.5, 1.2) - stats.norm.cdf(low, -0.5, 1.2)
        assert probabilities[t].item() == pytest.approx(expected, rel=1e-9, abs=1e-15)
    # The median level is the one whose sigma is exp(mean): half the training below it, half above.
    median = int(torch.searchsorted(probabilities.cumsum(0), torch.tensor(0.5, dtype=torch.float64)))
    assert abs(log_sigma[median] - -0.5) < 0.02


def test_log_normal_level_probabilities_refuse_a_non_positive_std(schedule):
    with pytest.raises(ValueError, match="std of ln sigma must be > 0, got 0"):
        log_normal_level_probabilities(schedule, 0.0, 0.0)


def test_diffusion_loss_draws_its_levels_from_level_probabilities(schedule):
    seen = []

    def recorder(x_t, t, cond):
        seen.append(t)
        return torch.zeros_like(x_t)

    x0 = torch.zeros(20_000, 1, 1, 1)
    only_seven = torch.zeros(1000)
    only_seven[7] = 1.0
    generator = torch.Generator().manual_seed(0)
    diffusion_loss(recorder, schedule, x0[:64], level_probabilities=only_seven, generator=generator)
    assert (seen[-1] == 7).all()
    probabilities = log_normal_level_probabilities(schedule, 0.0, 1.0).float()
    diffusion_loss(recorder, schedule, x0, level_probabilities=probabilities, generator=generator)
    counts = torch.bincount(seen[-1], minlength=1000).double()
    # Levels grouped in 10 bins of 100: each bin's frequency within 5 binomial standard errors of its mass.
    mass = probabilities.double().view(10, 100).sum(1)
    frequency = counts.view(10, 100).sum(1) / len(x0)
    standard_error = (mass * (1 - mass) / len(x0)).sqrt()
    assert ((frequency - mass).abs() <= 5 * standard_error + 1e-9).all()
    # ln sigma ~ N(0, 1) gives the first 300 of the 1000 levels (sigma up to about 1.2 here) over half the mass.
    assert mass[:3].sum().item() > 0.5


def test_self_conditioning_trains_half_the_batches_on_a_gradient_free_first_estimate(schedule):
    """Each call draws one coin: on heads the network first reads x_t beside zeros with gradients off, then x_t
    beside that pass's clamped x0 estimate; on tails only x_t beside zeros. Only the last pass carries gradients."""
    calls: list[tuple[torch.Tensor, torch.Tensor, bool]] = []

    def recorder(network_input, t, cond):
        calls.append((network_input.clone(), t.clone(), torch.is_grad_enabled()))
        x_t = network_input[:, :1]
        return 3.0 * x_t + 0.01 * t.float().reshape(-1, 1, 1, 1)  # an eps guess whose x0 leaves [-1, 1]

    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 1, 4, 4) * 2 - 1
    passes = []
    for _ in range(400):
        calls.clear()
        diffusion_loss(recorder, schedule, x0, generator=generator, self_condition=True)
        passes.append(len(calls))
        *first, last = calls
        assert last[0].shape == (8, 2, 4, 4) and last[2]  # x_t and its estimate; the gradient pass
        if first:
            (first_input, t, grad_enabled), = first
            assert not grad_enabled and torch.equal(first_input[:, 1:], torch.zeros(8, 1, 4, 4))
            x_t = first_input[:, :1]
            eps = 3.0 * x_t + 0.01 * t.float().reshape(-1, 1, 1, 1)
            expected = predict_x0_from_eps(schedule, x_t, t, eps).clamp(-1, 1)
            torch.testing.assert_close(last[0][:, 1:], expected)
            assert torch.equal(last[0][:, :1], x_t) and expected.abs().max() == 1.0  # the clamp acted
        else:
            assert torch.equal(last[0][:, 1:], torch.zeros(8, 1, 4, 4))
    heads = passes.count(2)
    assert set(passes) == {1, 2} and abs(heads - 200) <= 5 * 10  # Binomial(400, 1/2): std 10
    torch.testing.assert_close(self_conditioned_input(x0, -x0), torch.cat([x0, -x0], dim=1))


def test_self_conditioning_off_leaves_the_draws_and_the_network_input_unchanged(schedule):
    seen = []

    def recorder(x_t, t, cond):
        seen.append((x_t.clone(), t.clone()))
        return torch.zeros_like(x_t)

    x0 = torch.rand(4, 1, 4, 4)
    diffusion_loss(recorder, schedule, x0, generator=torch.Generator().manual_seed(3))
    diffusion_loss(recorder, schedule, x0, generator=torch.Generator().manual_seed(3), self_condition=False)
    assert seen[0][0].shape == (4, 1, 4, 4)
    assert torch.equal(seen[0][0], seen[1][0]) and torch.equal(seen[0][1], seen[1][1])
