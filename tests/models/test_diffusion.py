import io
import math

import pytest
import torch

from genlab.data.tasks import TaskSpec
from genlab.models import get_model_class
from genlab.runs import build_run_config
from genlab.sample import interpolation_noise
from genlab.utils import GenlabError

SMALL = ["net.base_width=8", "net.channel_mults=[1,2]", "net.num_res_blocks=1", "net.timesteps=50"]


def ddpm(conditional=True, **extra):
    sets = SMALL + [f"net.class_conditional={str(conditional).lower()}"] + [f"{k}={v}" for k, v in extra.items()]
    config = build_run_config("ddpm", "quick", {}, sets)
    return get_model_class("ddpm").build(config.net, TaskSpec("fm", "labelled", 16, 1, 1, 10))


def test_ddpm_training_step_and_ema():
    torch.manual_seed(0)
    model = ddpm()
    batch = {"image": torch.rand(8, 1, 16, 16) * 2 - 1, "label": torch.randint(0, 10, (8,))}
    ema_before = [p.clone() for p in model.ema_network.parameters()]
    losses = model.training_step(batch)
    model.end_step()
    assert set(losses) == {"loss", "image_loss"} and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    # The first update of the power-function EMA copies the weights; the second has decay (1/2)^(gamma+1).
    for average, current in zip(model.ema_network.parameters(), model.network.parameters()):
        assert torch.equal(average, current)
    assert not any(p.requires_grad for p in model.ema_network.parameters())
    first = [p.clone() for p in model.ema_network.parameters()]
    model.training_step(batch)
    model.end_step()
    decay = 0.5 ** (model.ema_gamma + 1)
    for average, before, current in zip(model.ema_network.parameters(), first, model.network.parameters()):
        assert torch.allclose(average, decay * before + (1 - decay) * current, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, first))  # the copy moved the average


def test_ema_length_sets_the_average_and_an_unreachable_cap_is_reported():
    assert ddpm().ema_gamma == pytest.approx(8.056, abs=1e-3)  # the default width, 0.09 of the training
    assert ddpm(**{"net.ema_length": 0.16}).ema_gamma == pytest.approx(3.130, abs=1e-3)
    with pytest.warns(UserWarning, match=r"net.ema_decay=0.9995 changes nothing in this run.*update 18\d\d\d"):
        ddpm(**{"net.ema_decay": 0.9995}).check_budget(6000)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ddpm(**{"net.ema_decay": 0.99}).check_budget(6000)  # reached at update ~900: it does cap the average
        ddpm().check_budget(6000)  # no cap
        ddpm(**{"net.ema_decay": 0.9995}).check_budget(None)  # a minutes budget: the step count is not known
    with pytest.raises(GenlabError, match=r"net.ema_decay: 1.0 is out of range \(allowed: \[0, 1\)\)"):
        ddpm(**{"net.ema_decay": 1.0})  # a decay of 1 would never move the average
    with pytest.raises(GenlabError, match="net.ema_warmup false keeps the decay at net.ema_decay"):
        ddpm(**{"net.ema_warmup": "false"})
    fixed = ddpm(**{"net.ema_warmup": "false", "net.ema_decay": 0.5})
    before = [p.clone() for p in fixed.ema_network.parameters()]
    fixed.training_step({"image": torch.rand(4, 1, 16, 16) * 2 - 1, "label": torch.randint(0, 10, (4,))})
    for average, old, current in zip(fixed.ema_network.parameters(), before, fixed.network.parameters()):
        assert torch.allclose(average, 0.5 * old + 0.5 * current, atol=1e-6)


def test_min_snr_gamma_weights_the_training_loss():
    """For eps-prediction every min-SNR weight is at most 1, and below 1 wherever SNR > gamma: the same draws give a
    smaller loss with the switch on, and the same loss with it off."""
    batch = {"image": torch.rand(16, 1, 16, 16) * 2 - 1, "label": torch.randint(0, 10, (16,))}
    losses = {}
    for gamma in (None, 5.0):
        torch.manual_seed(0)
        model = ddpm() if gamma is None else ddpm(**{"net.min_snr_gamma": gamma})
        assert model.config.min_snr_gamma == gamma
        losses[gamma] = model.training_step(batch)["loss"]
    assert 0 < losses[5.0] < losses[None]


def test_log_sigma_normal_sets_the_levels_trained_on(monkeypatch):
    """The model hands its log-normal level distribution to the loss (None without the setting) and trains."""
    import genlab.models.diffusion as diffusion_module
    from genlab.diffusion.process import log_normal_level_probabilities

    handed, loss = [], diffusion_module.diffusion_loss

    def recording_loss(*args, level_probabilities=None, **kwargs):
        handed.append(level_probabilities)
        return loss(*args, level_probabilities=level_probabilities, **kwargs)

    monkeypatch.setattr(diffusion_module, "diffusion_loss", recording_loss)
    batch = {"image": torch.rand(8, 1, 16, 16) * 2 - 1, "label": torch.randint(0, 10, (8,))}
    torch.manual_seed(0)
    plain, log_normal = ddpm(), ddpm(**{"net.log_sigma_normal": "[-3,0.5]"})
    losses = [model.training_step(batch)["loss"] for model in (plain, log_normal)]
    assert log_normal.config.log_sigma_normal == (-3.0, 0.5)
    assert handed[0] is None
    expected = log_normal_level_probabilities(log_normal.schedule, -3.0, 0.5).float()
    torch.testing.assert_close(handed[1], expected)
    assert all(torch.isfinite(torch.tensor(loss)) for loss in losses)


def test_log_sigma_normal_refuses_a_non_positive_std():
    message = r"net.log_sigma_normal: the std of ln sigma must be > 0, got -1 \(its second value\)"
    with pytest.raises(GenlabError, match=message):
        ddpm(**{"net.log_sigma_normal": "[0,-1]"})


def test_self_condition_doubles_the_denoiser_input_and_trains_and_samples():
    """net.self_condition gives the U-Net x_t and its clean estimate (2 channels for 1), and both the loss and
    the sampler feed it that way (a 1-channel input would not fit its first convolution)."""
    torch.manual_seed(0)
    plain, conditioned = ddpm(), ddpm(**{"net.self_condition": "true"})
    assert (plain.network.config.in_channels, conditioned.network.config.in_channels) == (1, 2)
    assert conditioned.network.config.out_channels == 1
    batch = {"image": torch.rand(8, 1, 16, 16) * 2 - 1, "label": torch.randint(0, 10, (8,))}
    for _ in range(3):
        losses = conditioned.training_step(batch)
        conditioned.end_step()
        assert all(torch.isfinite(torch.tensor(value)) for value in losses.values())
    samples = conditioned.sample(4, generator=torch.Generator().manual_seed(0), steps=3)
    assert samples.shape == (4, 1, 16, 16) and torch.isfinite(samples).all()
    config = build_run_config("cddim", "quick", {}, SMALL + ["net.self_condition=true"])
    cddim = get_model_class("cddim").build(config.net, TaskSpec("f", "paired", 16, 3, 3))
    assert cddim.network.config.in_channels == 6 and cddim.network.config.cond_channels == 3
    cddim.training_step({"source": torch.rand(2, 3, 16, 16) * 2 - 1, "target": torch.rand(2, 3, 16, 16) * 2 - 1})
    output = cddim.translate_batch(torch.rand(2, 3, 16, 16) * 2 - 1, steps=2)
    assert output.shape == (2, 3, 16, 16) and torch.isfinite(output).all()


def test_label_dropout_uses_the_null_label():
    model = ddpm(**{"net.label_dropout": 0.5})
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (4000,))
    _, cond = model.inputs({"image": torch.zeros(4000, 1, 1, 1), "label": labels})
    dropped = cond == 10
    assert 0.45 < dropped.float().mean() < 0.55
    assert torch.equal(cond[~dropped], labels[~dropped])


def test_sampling_shapes_determinism_and_options():
    model = ddpm()
    first = model.sample(4, labels=torch.tensor([0, 1, 2, 3]), generator=torch.Generator().manual_seed(1), steps=5)
    again = model.sample(4, labels=torch.tensor([0, 1, 2, 3]), generator=torch.Generator().manual_seed(1), steps=5)
    assert first.shape == (4, 1, 16, 16) and first.abs().max() <= 1
    assert torch.equal(first, again)  # DDIM eta 0 from the same x_T
    ddpm_sampled = model.sample(2, generator=torch.Generator().manual_seed(1), sampler="ddpm")
    assert ddpm_sampled.shape == (2, 1, 16, 16)
    with pytest.raises(GenlabError, match="label 10 is outside the classes 0..9"):
        model.sample(1, labels=torch.tensor([10]))
    with pytest.raises(GenlabError, match="between 1 and 50"):
        model.sample(1, steps=51)


def test_guidance_scale_one_equals_the_conditional_model():
    model = ddpm()
    with torch.no_grad():  # a fresh net has a zero output layer, which ignores labels
        for parameter in model.ema_network.parameters():
            parameter.normal_(0.0, 0.1)
    noise = torch.randn(2, 1, 16, 16)
    labels = torch.tensor([3, 7])
    deterministic = {"x_T": noise, "steps": 4, "eta": 0.0}  # the quick preset samples with eta 1
    guided = model.sample(2, labels=labels, guidance_scale=1.0, **deterministic)
    direct = model.generate(noise.shape, labels, None, **deterministic)
    assert torch.equal(guided, direct)
    assert not torch.equal(model.sample(2, labels=labels, guidance_scale=3.0, **deterministic), guided)


def test_guidance_interval_guides_only_the_levels_inside_it():
    """An interval holding every level is full guidance; one holding none is the plain conditional model; one
    holding some is neither; from the run's config or per call; a reversed interval is refused by name."""
    model = ddpm()
    model.config.guidance_interval = None  # the quick preset's is (0, 2.9]
    with torch.no_grad():  # a fresh net has a zero output layer, which ignores labels
        for parameter in model.ema_network.parameters():
            parameter.normal_(0.0, 0.1)
    noise = torch.randn(2, 1, 16, 16)
    labels = torch.tensor([3, 7])
    deterministic = {"x_T": noise, "steps": 4, "eta": 0.0, "guidance_scale": 3.0}
    full = model.sample(2, labels=labels, **deterministic)
    plain = model.sample(2, labels=labels, **{**deterministic, "guidance_scale": 1.0})
    assert torch.equal(model.sample(2, labels=labels, guidance_interval=(0.0, 1e9), **deterministic), full)
    assert torch.equal(model.sample(2, labels=labels, guidance_interval=(1e8, 1e9), **deterministic), plain)
    model.config.guidance_interval = (0.5, 5.0)  # 4 DDIM levels, linear schedule: sigma ~1, 3.4, 17, 157
    partial = model.sample(2, labels=labels, **deterministic)
    assert not torch.equal(partial, full) and not torch.equal(partial, plain)
    with pytest.raises(GenlabError, match="guidance_interval"):
        model.sample(2, labels=labels, guidance_interval=(5.0, 0.5), **deterministic)


def test_unconditional_ddpm_refuses_labels():
    model = ddpm(conditional=False)
    assert model.network.config.num_classes == 0
    with pytest.raises(GenlabError, match="unconditional"):
        model.sample(2, labels=torch.tensor([0, 1]))


def test_cddim_translates_with_the_source_as_condition():
    config = build_run_config("cddim", "quick", {}, SMALL)
    model = get_model_class("cddim").build(config.net, TaskSpec("f", "paired", 16, 3, 3))
    assert model.network.config.cond_channels == 3
    batch = {"source": torch.rand(2, 3, 16, 16) * 2 - 1, "target": torch.rand(2, 3, 16, 16) * 2 - 1}
    assert torch.isfinite(torch.tensor(model.training_step(batch)["loss"]))
    out = model.translate_batch(batch["source"], generator=torch.Generator().manual_seed(0), steps=3)
    assert out.shape == (2, 3, 16, 16)
    other = model.translate_batch(-batch["source"], generator=torch.Generator().manual_seed(0), steps=3)
    assert not torch.equal(out, other)  # the output depends on the source


def test_guidance_is_refused_where_there_are_no_class_labels_to_guide():
    """cddim (an image condition, no classes) and an unconditional ddpm refuse a guidance scale or interval rather
    than ignore it; a class-conditional ddpm takes both."""
    config = build_run_config("cddim", "quick", {}, SMALL)
    cddim = get_model_class("cddim").build(config.net, TaskSpec("f", "paired", 16, 3, 3))
    source = torch.rand(1, 3, 16, 16) * 2 - 1
    for options in ({"guidance_scale": 3.0}, {"guidance_interval": (0.0, 2.9)}):
        with pytest.raises(GenlabError, match="takes no class labels here"):
            cddim.translate_batch(source, steps=2, **options)
        with pytest.raises(GenlabError, match="takes no class labels here"):
            ddpm(conditional=False).sample(1, steps=2, **options)
        assert ddpm().sample(1, steps=2, **options).shape == (1, 1, 16, 16)
    with pytest.raises(GenlabError, match="--guidance, --guidance-interval: model 'cddim'"):
        cddim.check_sampling_options({"guidance_scale": 2.0, "guidance_interval": (0.0, 1.0)}, flags=True)


def test_the_ddpm_sampler_refuses_eta_and_records_the_levels_it_runs():
    """eta is DDIM's: with the ancestral sampler it would do nothing, so it is refused; and a result records the
    ddpm sampler with the T levels it runs by default, not the DDIM step count of the config."""
    model = ddpm(**{"net.eta": 1.0})
    with pytest.raises(GenlabError, match="--eta: the ddpm sampler takes no eta"):
        model.check_sampling_options({"sampler": "ddpm", "eta": 0.5}, flags=True)
    with pytest.raises(GenlabError, match="eta: the ddpm sampler takes no eta"):
        ddpm(**{"net.sampler": "ddpm"}).sample(1, eta=0.0)
    model.check_sampling_options({"sampler": "ddim", "eta": 0.5})
    assert model.sampler_record({"sampler": "ddpm"}) == {"sampler": "ddpm", "steps": 50, "guidance_scale": 2.0,
                                                         "guidance_interval": (0.0, 2.9), "autoguidance": 1.0}
    assert model.sampler_record({"sampler": "ddpm", "steps": 10})["steps"] == 10
    assert model.sampler_record({})["sampler"] == "ddim" and model.sampler_record({})["eta"] == 1.0


def test_guidance_needs_a_null_label_trained_by_label_dropout():
    with pytest.raises(GenlabError, match="net.guidance_scale=2 needs net.label_dropout > 0"):
        ddpm(**{"net.label_dropout": 0.0})
    plain = ddpm(**{"net.label_dropout": 0.0, "net.guidance_scale": 1.0})
    assert plain.sample(1, steps=2).shape == (1, 1, 16, 16)
    with pytest.raises(GenlabError, match="--guidance: this run was trained with net.label_dropout=0"):
        plain.check_sampling_options({"guidance_scale": 3.0}, flags=True)
    ddpm(conditional=False, **{"net.label_dropout": 0.0})  # no labels: the guidance setting is unused


def test_ddim_is_a_sampler_not_a_family():
    with pytest.raises(GenlabError, match="ddim is a sampler"):
        get_model_class("ddim")


def test_interpolation_noise_endpoints_and_layout():
    noise = interpolation_noise((1, 4, 4), rows=2, columns=5, seed=3)
    assert noise.shape == (10, 1, 4, 4)
    generator = torch.Generator().manual_seed(3)
    start, end = torch.randn((2, 1, 4, 4), generator=generator), torch.randn((2, 1, 4, 4), generator=generator)
    assert torch.allclose(noise[0], start[0], atol=1e-6) and torch.allclose(noise[4], end[0], atol=1e-6)
    assert torch.allclose(noise[5], start[1], atol=1e-6)


def test_guidance_interval_from_the_config_is_two_ordered_noise_levels():
    config = build_run_config("ddpm", "quick", {}, SMALL + ["net.guidance_interval=[0.3,5]"])
    assert config.net.guidance_interval == (0.3, 5.0)
    with pytest.raises(GenlabError, match=r"net.guidance_interval: expected 2 values, got 3"):
        build_run_config("ddpm", "quick", {}, SMALL + ["net.guidance_interval=[0.3,5,7]"])
    with pytest.raises(GenlabError, match=r"net.guidance_interval: need 0 <= low < high"):
        ddpm(**{"net.guidance_interval": "[5,0.3]"})


NO_GUIDE = {"net.autoguide_at": "null", "net.autoguidance": 1}  # the quick preset keeps a guide


def _labelled_batch(seed, count=4):
    generator = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(count, 1, 16, 16, generator=generator) * 2 - 1,
            "label": torch.randint(0, 10, (count,), generator=generator)}


def _train(model, progresses, first_batch=0):
    for index, progress in enumerate(progresses):
        model.budget_progress = progress  # what the trainer sets before each step
        model.training_step(_labelled_batch(first_batch + index))
        model.end_step()


def test_autoguide_at_keeps_the_weight_average_of_that_point_of_training():
    torch.manual_seed(0)
    model = ddpm(**{"net.autoguide_at": 0.5})
    assert not model.guide_taken and not any(p.requires_grad for p in model.guide_network.parameters())
    _train(model, [0.0, 0.25])
    assert not model.guide_taken
    _train(model, [0.5], first_batch=2)  # the first step with half the budget spent takes the average
    taken = {key: value.clone() for key, value in model.ema_network.state_dict().items()}
    _train(model, [0.75], first_batch=3)
    assert model.guide_taken
    for key, value in model.guide_network.state_dict().items():
        assert torch.equal(value, taken[key]), key
    assert any(not torch.equal(a, b) for a, b in zip(model.guide_network.parameters(), model.ema_network.parameters()))
    assert set(model.parameter_counts()) == {"network"}  # the average and the guide are frozen copies
    assert "guide_taken" not in ddpm(**NO_GUIDE).state_dict()  # runs without a guide keep their checkpoint keys


def test_autoguidance_samples_with_the_guide_and_resumes_exactly():
    from genlab.diffusion.samplers import DDIMSampler, evenly_spaced_timesteps, sample_loop

    torch.manual_seed(0)
    half = ddpm(**{"net.autoguide_at": 0.5})
    _train(half, [0.0, 0.25])
    buffer = io.BytesIO()
    torch.save(half.training_state(), buffer)  # a saved copy, as a checkpoint (no tensors shared with `half`)
    buffer.seek(0)
    resumed = ddpm(**{"net.autoguide_at": 0.5})
    resumed.load_training_state(torch.load(buffer, weights_only=True))
    torch.manual_seed(1)  # the steps draw noise levels and noise: both halves from the same RNG state
    _train(resumed, [0.5, 0.75], first_batch=2)
    torch.manual_seed(1)
    _train(half, [0.5, 0.75], first_batch=2)
    for (key, value), other in zip(half.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(value, other), key
    assert resumed.guide_taken

    labels = torch.arange(4)
    x_T = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    options = {"steps": 5, "eta": 0.0, "guidance_scale": 3.0}
    images = resumed.sample(4, labels=labels, x_T=x_T, autoguidance=2.0, **options)
    reference = sample_loop(
        resumed.ema_network, DDIMSampler(resumed.schedule, eta=0.0), evenly_spaced_timesteps(50, 5), x_T,
        cond=labels, guidance_scale=3.0, null_cond=torch.full((4,), 10), guide_fn=resumed.guide_network,
        guide_weight=2.0,
    ).clamp(-1, 1)
    torch.testing.assert_close(images, reference)
    plain = resumed.sample(4, labels=labels, x_T=x_T, autoguidance=1.0, **options)
    assert not torch.allclose(images, plain)  # the guide changed the samples
    assert resumed.sampler_defaults()["autoguidance"] == 3.0  # the quick preset's


def test_autoguidance_needs_a_guide_that_training_has_reached():
    with pytest.raises(GenlabError, match="net.autoguidance=2 needs a guide network: set net.autoguide_at"):
        ddpm(**{"net.autoguide_at": "null", "net.autoguidance": 2})
    with pytest.raises(GenlabError, match="--autoguidance: this run keeps no guide network"):
        ddpm(**NO_GUIDE).check_sampling_options({"autoguidance": 2.0}, flags=True)
    with pytest.raises(GenlabError, match="autoguidance must be 1 \\(none\\) or more, got 0.5"):
        ddpm(**{"net.autoguide_at": 0.5}).check_sampling_options({"autoguidance": 0.5})
    early = ddpm(**{"net.autoguide_at": 0.5})
    with pytest.raises(GenlabError, match="has not reached net.autoguide_at=0.5 of its training yet"):
        early.sample(2, labels=torch.arange(2), steps=2, autoguidance=2.0)
    assert early.sample(2, labels=torch.arange(2), steps=2).shape == (2, 1, 16, 16)  # w = 1 needs no guide
    # net.autoguidance is the default once the guide is taken; before (previews early in training) none
    default = ddpm(**{"net.autoguide_at": 0.5, "net.autoguidance": 2})
    x_T, labels = torch.randn(2, 1, 16, 16), torch.arange(2)
    assert default.sampler_defaults()["autoguidance"] == 1.0
    torch.testing.assert_close(default.sample(2, labels=labels, steps=2, eta=0.0, x_T=x_T),
                               default.sample(2, labels=labels, steps=2, eta=0.0, x_T=x_T, autoguidance=1.0))
    _train(default, [0.0, 0.5, 0.75])
    assert default.sampler_defaults()["autoguidance"] == 2.0
    guided = default.sample(2, labels=labels, steps=2, eta=0.0, x_T=x_T)
    torch.testing.assert_close(guided, default.sample(2, labels=labels, steps=2, eta=0.0, x_T=x_T, autoguidance=2.0))
    assert not torch.allclose(guided, default.sample(2, labels=labels, steps=2, eta=0.0, x_T=x_T, autoguidance=1.0))
    ldm_config = build_run_config("ldm", "quick", {}, ["net.autoguide_at=0.25"])
    with pytest.raises(GenlabError, match="net.autoguide_at: ldm keeps no autoguidance network"):
        get_model_class("ldm").build(ldm_config.net, TaskSpec("fm", "labelled", 16, 1, 1, 10))


def cddim_with_value_prior(enabled=True):
    config = build_run_config("cddim", "quick", {}, SMALL + [f"net.value_prior={str(enabled).lower()}",
                                                            "net.sample_steps=5"])
    return get_model_class("cddim").build(config.net, TaskSpec("f", "paired", 16, 1, 1))


def test_value_prior_off_keeps_nothing_and_decodes_nothing():
    model = cddim_with_value_prior(False)
    assert model.calibration_images == 0
    assert not {"value_histogram", "value_error_std"} & set(model.state_dict())
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    assert model.decoded(images) is images


def test_value_prior_calibrates_on_clean_batches_without_touching_the_random_streams():
    from genlab.diffusion.decode import decode_levels, level_histogram, posterior_mean_table
    from genlab.diffusion.process import model_output_to_x0_eps, q_sample

    torch.manual_seed(0)
    model = cddim_with_value_prior()
    assert model.calibration_images == 1024 and {"value_histogram", "value_error_std"} <= set(model.state_dict())
    # targets with nothing below level 64 (-0.5), so the decoder has somewhere to move outputs from
    batches = [
        {"source": torch.rand(4, 1, 16, 16) * 2 - 1, "target": (torch.rand(4, 1, 16, 16) * 2 - 1).clamp(min=-0.5)}
        for _ in range(2)
    ]
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    assert model.decoded(images) is images  # not measured yet: nothing to decode with
    state = torch.get_rng_state()
    model.calibrate(iter(batches))
    assert torch.equal(torch.get_rng_state(), state)  # a resumed run draws what an uninterrupted one does
    expected = sum(level_histogram(batch["target"]) for batch in batches)
    assert torch.equal(model.value_histogram.double(), expected)
    # the error: the weight average's x0 estimate at the default sampler's last level (DDIM-5 of 50: t = 9), on
    # the first value_error_images of the images
    assert model.sampling_levels("ddim", None)[-1] == 9

    def error_std(images):
        generator, squared, count = torch.Generator().manual_seed(0), 0.0, 0
        network = model.ema_network.eval()
        for batch in batches:
            x0, cond = batch["target"][:images - count // 256], batch["source"][:images - count // 256]
            t = torch.full((len(x0),), 9)
            x_t = q_sample(model.schedule, x0, t, torch.randn(x0.shape, generator=generator))
            with torch.no_grad():
                output = network(x_t, t, cond)
            estimate, _ = model_output_to_x0_eps(model.schedule, output, x_t, t, model.config.prediction)
            squared += float((estimate.clamp(-1, 1) - x0).mul(127.5).square().sum())
            count += x0.numel()
        return max(math.sqrt(squared / count), 0.5)

    assert model.value_error_std.item() == pytest.approx(error_std(8), rel=1e-5)
    model.value_error_images = 6  # all of the first batch, half of the second
    model.calibrate(iter(batches))
    assert model.value_error_std.item() == pytest.approx(error_std(6), rel=1e-5)
    assert error_std(6) != pytest.approx(error_std(8), rel=1e-3)
    assert torch.equal(model.value_histogram.double(), expected)  # the histogram still counts every image
    # sampling reads the outputs under the measured prior: translate = decode(generate) with the same noise
    source = torch.rand(2, 1, 16, 16) * 2 - 1
    translated = model.translate_batch(source, generator=torch.Generator().manual_seed(3), steps=3)
    generated = model.generate((2, 1, 16, 16), source, None, torch.Generator().manual_seed(3), steps=3)
    table = posterior_mean_table(model.value_histogram.double(), model.value_error_std.item())
    torch.testing.assert_close(translated, decode_levels(generated, table))
    assert not torch.equal(translated, generated)
    # below level 64 (-0.5) the training targets have nothing: the decoder moves every output off those levels
    assert (translated >= -0.5 - 2 / 127.5).all()


def test_value_prior_is_saved_with_the_weights_and_refused_by_ldm():
    model = cddim_with_value_prior()
    model.calibrate(iter([{"source": torch.zeros(2, 1, 16, 16), "target": torch.rand(2, 1, 16, 16) * 2 - 1}]))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    loaded = cddim_with_value_prior()
    loaded.load_state_dict(torch.load(buffer))
    assert torch.equal(loaded.value_histogram, model.value_histogram)
    assert loaded.value_error_std.item() == model.value_error_std.item() > 0
    ldm_config = build_run_config("ldm", "quick", {}, ["net.value_prior=true"])
    with pytest.raises(GenlabError, match="net.value_prior: ldm samples latents"):
        get_model_class("ldm").build(ldm_config.net, TaskSpec("fm", "labelled", 16, 1, 1, 10))


def test_ddpm_calibrates_with_its_labels_undropped():
    model = ddpm(**{"net.value_prior": "true", "net.label_dropout": 0.9})
    seen = []
    model.ema_network.register_forward_hook(lambda module, args, output: seen.append(args[2].clone()))
    labels = torch.arange(8) % 10
    model.calibrate(iter([{"image": torch.rand(8, 1, 16, 16) * 2 - 1, "label": labels}]))
    assert torch.equal(seen[0], labels)  # no null label: the network is measured on the classes asked for
    assert model.value_histogram.sum().item() == 8 * 16 * 16
