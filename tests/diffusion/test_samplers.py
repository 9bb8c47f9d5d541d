"""Samplers: exact recovery with an oracle model, agreement with diffusers' schedulers, guidance, timesteps."""

from __future__ import annotations

import pytest
import torch

from genlab.diffusion.process import predict_v
from genlab.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    StepOutput,
    evenly_spaced_timesteps,
    guided_output,
    interval_guidance_scales,
    sample_loop,
    slerp,
)
from genlab.diffusion.schedules import NoiseSchedule

diffusers = pytest.importorskip("diffusers")


def oracle_eps_model(schedule: NoiseSchedule, x0: torch.Tensor):
    """The true noise for a known x0: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""

    def model(x_t, t, cond):
        abar = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1).double()
        return ((x_t.double() - abar.sqrt() * x0.double()) / (1 - abar).sqrt()).float()

    return model


@pytest.mark.parametrize("steps", [10, 50, 1000])
def test_ddim_eta0_recovers_x0_with_oracle(schedule, steps):
    generator = torch.Generator().manual_seed(steps)
    x0 = torch.rand(2, 3, 8, 8, generator=generator) * 1.8 - 0.9
    x_T = torch.randn(2, 3, 8, 8, generator=generator)
    result = sample_loop(
        oracle_eps_model(schedule, x0), DDIMSampler(schedule, eta=0.0), evenly_spaced_timesteps(1000, steps), x_T
    )
    assert torch.allclose(result, x0, atol=1e-4)


def test_ddim_deterministic(schedule):
    model = oracle_eps_model(schedule, torch.zeros(1, 1, 4, 4) + 0.3)
    x_T = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    timesteps = evenly_spaced_timesteps(1000, 20)
    first = sample_loop(model, DDIMSampler(schedule), timesteps, x_T)
    second = sample_loop(model, DDIMSampler(schedule), timesteps, x_T)
    assert torch.equal(first, second)


def test_ddpm_reproducible_with_generator(schedule):
    def model(x, t, c):
        return 0.1 * x

    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    timesteps = evenly_spaced_timesteps(1000, 25)
    runs = [
        sample_loop(model, DDPMSampler(schedule), timesteps, x_T, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    other = sample_loop(model, DDPMSampler(schedule), timesteps, x_T, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(runs[0], other)


def test_evenly_spaced_timesteps():
    for T, steps in [(1000, 1), (1000, 10), (1000, 50), (1000, 1000), (1000, 3), (1000, 7), (10, 4), (37, 36)]:
        timesteps = evenly_spaced_timesteps(T, steps)
        assert len(timesteps) == steps
        assert len(set(timesteps)) == steps
        assert all(a > b for a, b in zip(timesteps, timesteps[1:], strict=False))
        assert timesteps[0] == T - 1 and timesteps[-1] >= 0
    assert evenly_spaced_timesteps(1000, 50)[:3] == [999, 979, 959]
    assert evenly_spaced_timesteps(1000, 50)[-1] == 19
    with pytest.raises(ValueError):
        evenly_spaced_timesteps(10, 11)


@pytest.mark.parametrize("steps", [10, 50, 3, 1000])
def test_evenly_spaced_matches_diffusers_trailing(steps):
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    assert evenly_spaced_timesteps(1000, steps) == scheduler.timesteps.tolist()


def _diffusers_ddim(beta_schedule: str, prediction: str, clip: bool):
    return diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule=beta_schedule,
        beta_start=1e-4,
        beta_end=0.02,
        clip_sample=clip,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
        prediction_type={"eps": "epsilon", "v": "v_prediction", "x0": "sample"}[prediction],
    )


@pytest.mark.parametrize(
    ("schedule_name", "beta_schedule", "prediction", "clip"),
    [
        ("linear", "linear", "eps", False),
        ("linear", "linear", "eps", True),
        ("linear", "linear", "v", False),
        ("cosine", "squaredcos_cap_v2", "eps", False),
        ("cosine", "squaredcos_cap_v2", "x0", True),
    ],
)
def test_ddim_step_matches_diffusers(schedule_name, beta_schedule, prediction, clip):
    schedule = NoiseSchedule(schedule_name, 1000)
    reference = _diffusers_ddim(beta_schedule, prediction, clip)
    assert torch.allclose(schedule.alphas_cumprod, reference.alphas_cumprod, rtol=1e-5, atol=1e-7)
    # Same alpha-bar values on both sides (ours is a float64 cumprod, diffusers' a float32 one), so the test
    # compares the step, not the rounding of the cumulative product.
    reference.alphas_cumprod = schedule.alphas_cumprod.clone()
    reference.set_timesteps(50)
    timesteps = evenly_spaced_timesteps(1000, 50)
    sampler = DDIMSampler(schedule, eta=0.0, clip_x0=clip)
    generator = torch.Generator().manual_seed(0)
    for index in (0, 1, 25, 48, 49):  # t_prev of the last one is -1, alpha-bar 1
        t = timesteps[index]
        t_prev = timesteps[index + 1] if index + 1 < len(timesteps) else -1
        x_t = torch.randn(2, 3, 8, 8, generator=generator)
        model_output = torch.randn(2, 3, 8, 8, generator=generator)
        ours = sampler.step(model_output, t, t_prev, x_t, prediction=prediction)
        theirs = reference.step(model_output, t, x_t, eta=0.0, use_clipped_model_output=True)
        assert torch.allclose(ours.prev_sample, theirs.prev_sample, atol=1e-5, rtol=1e-5), (t, t_prev)
        assert torch.allclose(ours.pred_x0, theirs.pred_original_sample, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("variance", "variance_type"), [("posterior", "fixed_small"), ("beta", "fixed_large")])
@pytest.mark.parametrize("steps", [1000, 50])
def test_ddpm_step_matches_diffusers(schedule, variance, variance_type, steps):
    reference = diffusers.DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        variance_type=variance_type,
        clip_sample=True,
        timestep_spacing="trailing",
        prediction_type="epsilon",
    )
    reference.alphas_cumprod = schedule.alphas_cumprod.clone()  # same alpha-bar values on both sides
    reference.set_timesteps(steps)
    timesteps = evenly_spaced_timesteps(1000, steps)
    assert timesteps == reference.timesteps.tolist()
    sampler = DDPMSampler(schedule, variance=variance, clip_x0=True)
    generator = torch.Generator().manual_seed(1)
    # Intermediate steps only: at the last step diffusers still adds noise when t > 0 (e.g. t = 19 -> clean),
    # where ours, going to t_prev = -1, adds none.
    for index in range(0, steps - 1, steps // 10):
        t, t_prev = timesteps[index], timesteps[index + 1]
        x_t = torch.randn(2, 3, 8, 8, generator=generator)
        model_output = torch.randn(2, 3, 8, 8, generator=generator)
        ours = sampler.step(model_output, t, t_prev, x_t, generator=torch.Generator().manual_seed(index))
        theirs = reference.step(model_output, t, x_t, generator=torch.Generator().manual_seed(index))
        assert torch.allclose(ours.prev_sample, theirs.prev_sample, atol=1e-5, rtol=1e-5), (t, t_prev)
        assert torch.allclose(ours.pred_x0, theirs.pred_original_sample, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t", [1, 2, 5, 20])
def test_ddpm_first_steps_in_float64(schedule, t):
    """Near t = 0, beta_t = 1 - abar_t / abar_{t-1} ~ 1e-4 loses ~3 digits in float32, as diffusers computes it;
    ours takes the step's scalars from float64, so it matches a float64 evaluation of seed 001, eq. 11."""
    abar = schedule.alphas_cumprod_float64
    generator = torch.Generator().manual_seed(t)
    x_t, eps = (torch.randn(2, 3, 8, 8, generator=generator) for _ in range(2))
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(99))  # what diffusers will draw
    x0 = ((x_t.double() - (1 - abar[t]).sqrt() * eps.double()) / abar[t].sqrt()).clamp(-1, 1)
    beta = 1 - abar[t] / abar[t - 1]
    coef_x0 = abar[t - 1].sqrt() * beta / (1 - abar[t])
    coef_xt = (1 - beta).sqrt() * (1 - abar[t - 1]) / (1 - abar[t])
    sigma = (beta * (1 - abar[t - 1]) / (1 - abar[t])).sqrt()
    expected = coef_x0 * x0 + coef_xt * x_t.double() + sigma * noise.double()
    ours = DDPMSampler(schedule, "posterior").step(eps, t, t - 1, x_t, generator=torch.Generator().manual_seed(99))
    assert torch.allclose(ours.prev_sample.double(), expected, atol=1e-5)
    reference = diffusers.DDPMScheduler(beta_schedule="linear", variance_type="fixed_small", clip_sample=True)
    reference.alphas_cumprod = schedule.alphas_cumprod.clone()
    theirs = reference.step(eps, t, x_t, generator=torch.Generator().manual_seed(99))
    assert torch.allclose(theirs.prev_sample.double(), expected, atol=2e-3)  # float32 cancellation


def test_ddpm_explicit_noise(schedule):
    sampler = DDPMSampler(schedule, variance="posterior", clip_x0=False)
    x_t, model_output, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    without = sampler.step(model_output, 500, 499, x_t, noise=torch.zeros_like(noise))
    with_noise = sampler.step(model_output, 500, 499, x_t, noise=noise)
    sigma = schedule.posterior_variance[500].sqrt()
    assert torch.allclose(with_noise.prev_sample - without.prev_sample, sigma * noise, atol=1e-6)


@pytest.mark.parametrize("t", [1, 10, 500, 999])
def test_ddim_eta1_variance_is_ddpm_posterior_variance(schedule, t):
    ddim = DDIMSampler(schedule, eta=1.0, clip_x0=False)
    ddpm = DDPMSampler(schedule, variance="posterior", clip_x0=False)
    expected = schedule.posterior_variance[t]
    assert ddim.step_variance(t, t - 1) == pytest.approx(expected.item(), rel=1e-6)
    assert ddpm.step_variance(t, t - 1) == pytest.approx(expected.item(), rel=1e-6)
    # With the same noise the whole step is DDPM's (Song et al., sec. 4.1: eta = 1 makes the process Markovian).
    x_t, model_output, noise = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    ours = ddim.step(model_output, t, t - 1, x_t, noise=noise)
    markov = ddpm.step(model_output, t, t - 1, x_t, noise=noise)
    assert torch.allclose(ours.prev_sample, markov.prev_sample, atol=1e-4)


def test_ddim_eta1_respaced_variance_is_posterior_between_levels(schedule):
    ddim = DDIMSampler(schedule, eta=1.0)
    ddpm = DDPMSampler(schedule, variance="posterior")
    assert ddim.step_variance(979, 959) == pytest.approx(ddpm.step_variance(979, 959), rel=1e-12)
    assert ddim.step_variance(19, -1) == 0.0


def test_step_output_and_bad_levels(schedule):
    output = DDIMSampler(schedule).step(torch.zeros(1, 1, 2, 2), 5, 4, torch.zeros(1, 1, 2, 2))
    assert isinstance(output, StepOutput)
    with pytest.raises(ValueError):
        DDIMSampler(schedule).step(torch.zeros(1, 1, 2, 2), 5, 5, torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError):
        DDPMSampler(schedule).step(torch.zeros(1, 1, 2, 2), 1000, 5, torch.zeros(1, 1, 2, 2))


class CountingModel:
    """Output depends on x, t and the label; counts forwards and their batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x, t, cond):
        self.batches.append(x.shape[0])
        label = cond.float().reshape(-1, 1, 1, 1) if cond is not None else 0.0
        return 0.5 * x + 0.001 * t.float().reshape(-1, 1, 1, 1) + label


def test_guidance_scale_one_is_conditional_with_one_forward():
    model = CountingModel()
    x, t = torch.randn(3, 1, 4, 4), torch.full((3,), 7)
    cond, null_cond = torch.tensor([0, 1, 2]), torch.full((3,), 10)
    output = guided_output(model, x, t, cond, null_cond, 1.0)
    assert model.batches == [3]
    assert torch.equal(output, CountingModel()(x, t, cond))


def test_guidance_is_one_batched_forward():
    model = CountingModel()
    x, t = torch.randn(3, 1, 4, 4), torch.full((3,), 7)
    cond, null_cond = torch.tensor([0, 1, 2]), torch.full((3,), 10)
    output = guided_output(model, x, t, cond, null_cond, 3.0)
    assert model.batches == [6]
    reference = CountingModel()
    conditional, unconditional = reference(x, t, cond), reference(x, t, null_cond)
    assert torch.allclose(output, unconditional + 3.0 * (conditional - unconditional), atol=1e-6)
    with pytest.raises(ValueError):
        guided_output(model, x, t, cond, None, 3.0)


class WeakModel(CountingModel):
    """A different network of the same kind: another response to x and to the label."""

    def __call__(self, x, t, cond):
        self.batches.append(x.shape[0])
        return 0.3 * x - 0.002 * t.float().reshape(-1, 1, 1, 1) + 0.5 * cond.float().reshape(-1, 1, 1, 1)


def test_autoguidance_adds_the_push_away_from_the_weaker_network():
    """cond + (s - 1)(cond - uncond) + (w - 1)(cond - guide); at s = 1 the paper's guide + w (cond - guide); the
    guide sees the condition, not the null label, and is not called at w = 1."""
    x, t = torch.randn(3, 1, 4, 4), torch.full((3,), 7)
    cond, null_cond = torch.tensor([0, 1, 2]), torch.full((3,), 10)
    reference, weak_reference = CountingModel(), WeakModel()
    conditional, unconditional = reference(x, t, cond), reference(x, t, null_cond)
    weak = weak_reference(x, t, cond)
    for scale, weight in ((3.0, 2.0), (1.0, 2.5)):
        model, guide = CountingModel(), WeakModel()
        output = guided_output(model, x, t, cond, null_cond, scale, guide, weight)
        expected = conditional + (scale - 1) * (conditional - unconditional) + (weight - 1) * (conditional - weak)
        torch.testing.assert_close(output, expected, rtol=0, atol=1e-5)
        assert guide.batches == [3] and model.batches == ([6] if scale != 1 else [3])
    torch.testing.assert_close(
        guided_output(CountingModel(), x, t, cond, null_cond, 1.0, WeakModel(), 2.5), weak + 2.5 * (conditional - weak)
    )
    unused = WeakModel()
    guided_output(CountingModel(), x, t, cond, null_cond, 3.0, unused, 1.0)
    assert unused.batches == []  # weight 1: no autoguidance, no forward of the guide


def test_sample_loop_guidance_forwards(schedule):
    model = CountingModel()
    x_T = torch.randn(2, 1, 4, 4)
    cond, null_cond = torch.tensor([1, 2]), torch.full((2,), 10)
    sample_loop(model, DDIMSampler(schedule), evenly_spaced_timesteps(1000, 5), x_T, cond, guidance_scale=1.0)
    assert model.batches == [2] * 5
    model.batches.clear()
    sample_loop(model, DDIMSampler(schedule), evenly_spaced_timesteps(1000, 5), x_T, cond,
                guidance_scale=2.0, null_cond=null_cond)
    assert model.batches == [4] * 5


def test_sample_loop_v_prediction_oracle(schedule):
    """An oracle in the v parametrisation also lands on x0."""
    x0 = torch.rand(1, 2, 4, 4) * 1.6 - 0.8
    eps_model = oracle_eps_model(schedule, x0)

    def v_model(x_t, t, cond):
        return predict_v(schedule, x0.expand_as(x_t), t, eps_model(x_t, t, cond))

    x_T = torch.randn(1, 2, 4, 4)
    result = sample_loop(v_model, DDIMSampler(schedule), evenly_spaced_timesteps(1000, 20), x_T, prediction="v")
    assert torch.allclose(result, x0, atol=1e-4)


def test_slerp():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, 8, 8, generator=generator), torch.randn(4, 3, 8, 8, generator=generator)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    middle = slerp(a, b, 0.5)
    # Near-orthogonal high-dimensional Gaussians: the slerp midpoint keeps the norm, the lerp one shrinks it.
    norms = middle.flatten(1).norm(dim=1)
    expected = (a.flatten(1).norm(dim=1) + b.flatten(1).norm(dim=1)) / 2
    assert torch.allclose(norms, expected, rtol=0.1)
    assert bool(((a + b) / 2).flatten(1).norm(dim=1).lt(0.85 * expected).all())
    assert torch.allclose(slerp(a, a, 0.3), a, atol=1e-5)  # parallel: falls back to lerp
    weights = torch.tensor([0.0, 1.0, 0.0, 1.0])
    mixed = slerp(a, b, weights)
    assert torch.allclose(mixed[1], b[1], atol=1e-5) and torch.allclose(mixed[2], a[2], atol=1e-6)


def test_interval_guidance_scales_follow_the_noise_level():
    """sigma = sqrt((1 - abar) / abar) computed independently from the linear betas (NumPy, float64): the scale
    is applied exactly where sigma is in (low, high], 1 elsewhere, and everywhere without an interval."""
    import numpy as np

    schedule = NoiseSchedule("linear", 1000)
    levels = evenly_spaced_timesteps(1000, 50)
    abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    sigma = np.sqrt((1.0 - abar[levels]) / abar[levels])
    scales = interval_guidance_scales(schedule, levels, 7.0, (0.3, 5.0))
    expected = [7.0 if 0.3 < value <= 5.0 else 1.0 for value in sigma]
    assert scales == expected
    assert 0 < scales.count(7.0) < len(levels)  # the interval cuts both ends of this schedule
    assert interval_guidance_scales(schedule, levels, 7.0, None) == [7.0] * 50
    with pytest.raises(ValueError, match="low < high"):
        interval_guidance_scales(schedule, levels, 7.0, (5.0, 0.3))


def test_sample_loop_with_per_level_scales_guides_only_those_levels(schedule):
    """A level at scale 1 is one plain conditional forward on the batch; a guided level one forward on 2B; the
    result equals a hand-written loop over guided_output with each level's scale."""
    levels = evenly_spaced_timesteps(schedule.num_timesteps, 4)
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    cond, null_cond = torch.tensor([0, 1, 2]), torch.full((3,), 10)
    scales = [1.0, 4.0, 4.0, 1.0]
    model = CountingModel()
    sampler = DDIMSampler(schedule, eta=0.0)
    got = sample_loop(model, sampler, levels, x_T, cond=cond, null_cond=null_cond, guidance_scale=scales)
    assert model.batches == [3, 6, 6, 3]
    x = x_T
    for index, t in enumerate(levels):
        t_prev = levels[index + 1] if index + 1 < len(levels) else -1
        output = guided_output(CountingModel(), x, torch.full((3,), t), cond, null_cond, scales[index])
        x = sampler.step(output, t, t_prev, x).prev_sample
    torch.testing.assert_close(got, x)
    with pytest.raises(ValueError, match="3 guidance scales for 4"):
        sample_loop(model, sampler, levels, x_T, cond=cond, null_cond=null_cond, guidance_scale=scales[:3])


def test_self_conditioned_sampling_feeds_each_step_the_previous_clean_estimate(schedule):
    """The network reads x_t beside zeros at the first level and beside the previous step's pred_x0 after;
    under guidance both halves of the batched forward carry the same estimate."""
    inputs, estimates = [], []

    def model(network_input, t, cond):
        inputs.append(network_input.clone())
        x_t, estimate = network_input.chunk(2, dim=1)
        return 0.5 * x_t + 0.25 * estimate + 0.001 * t.float().reshape(-1, 1, 1, 1)

    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    cond, null_cond = torch.tensor([1, 2]), torch.full((2,), 10)
    levels = evenly_spaced_timesteps(1000, 6)
    result = sample_loop(
        model, DDIMSampler(schedule, eta=1.0), levels, x_T, cond, generator=torch.Generator().manual_seed(1),
        guidance_scale=3.0, null_cond=null_cond, callback=lambda t, out: estimates.append(out.pred_x0),
        self_condition=True,
    )
    assert len(inputs) == 6 and all(batch.shape == (4, 2, 4, 4) for batch in inputs)
    assert torch.equal(inputs[0][:, 1:], torch.zeros(4, 1, 4, 4))
    for index in range(1, 6):
        conditional_half, unconditional_half = inputs[index][:, 1:].chunk(2)
        torch.testing.assert_close(conditional_half, estimates[index - 1])
        torch.testing.assert_close(unconditional_half, estimates[index - 1])
    assert result.shape == (2, 1, 4, 4) and torch.isfinite(result).all()
    # The estimate changes what the network predicts, so self-conditioning changes the samples.
    plain = sample_loop(
        lambda x, t, c: model(torch.cat([x, torch.zeros_like(x)], dim=1), t, c), DDIMSampler(schedule, eta=1.0),
        levels, x_T, cond, generator=torch.Generator().manual_seed(1), guidance_scale=3.0, null_cond=null_cond,
    )
    assert not torch.allclose(plain, result)
