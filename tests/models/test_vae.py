import pytest
import torch
from torch.distributions import Normal, kl_divergence

from genlab.data.tasks import TaskSpec
from genlab.metrics.pixel import ssim
from genlab.models import get_model_class
from genlab.models.losses import gaussian_kl
from genlab.models.vae import VAEConfig, kl_weight, reconstruction_loss
from genlab.nn.vae import SourcePyramid, VAEDecoder, VAEEncoder, vae_depth
from genlab.runs import build_run_config
from genlab.train.logging import read_metrics
from genlab.train.trainer import resume_config, train
from genlab.utils import GenlabError, sample_generator

PAIRED = TaskSpec("toy-paired", "paired", 16, 3, 3)
LABELLED = TaskSpec("toy-labelled", "labelled", 16, 1, 1, num_classes=3)
TINY = VAEConfig(latent_dim=4, width=4, label_dim=3)


def _model(name: str, spec: TaskSpec, config: VAEConfig = TINY):
    torch.manual_seed(0)
    return get_model_class(name).build(config, spec)


def _paired_batch(count=4, size=16):
    generator = torch.Generator().manual_seed(1)
    source = torch.rand(count, 3, size, size, generator=generator) * 2 - 1
    return {"source": source, "target": -source}


def _labelled_batch(count=6, size=16):
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(count, 1, size, size, generator=generator) * 2 - 1
    return {"image": images, "label": torch.arange(count) % 3}


# --- networks ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, depth", [(8, 1), (16, 2), (32, 3), (64, 4), (128, 5), (256, 6)])
def test_depth_follows_the_image_size_down_to_4x4(size, depth):
    assert vae_depth(size) == depth
    encoder, decoder = VAEEncoder(3, 5, size, width=2), VAEDecoder(5, 3, size, width=2)
    mu, logvar = encoder(torch.zeros(1, 3, size, size))
    assert mu.shape == logvar.shape == (1, 5)
    image = decoder(mu)
    assert image.shape == (1, 3, size, size) and image.abs().max() <= 1.0  # Tanh


@pytest.mark.parametrize("size", [0, 4, 28, 48])
def test_other_sizes_are_a_clear_error_naming_the_key(size):
    with pytest.raises(GenlabError, match="data.image_size"):
        vae_depth(size)


def test_decoder_sees_the_source_at_every_resolution():
    pyramid = SourcePyramid(3, 32, width=4)
    features = pyramid(torch.zeros(2, 3, 32, 32))
    assert [f.shape[-1] for f in features] == [4, 8, 16, 32]
    assert tuple(f.shape[1] for f in features) == pyramid.channels
    decoder = VAEDecoder(6, 3, 32, width=4, cond_channels=pyramid.channels)
    assert decoder(torch.zeros(2, 6), features).shape == (2, 3, 32, 32)
    # The full-size source map reaches the output pixel at the same place directly (fine detail, not blur).
    source = torch.zeros(1, 3, 32, 32, requires_grad=True)
    decoder(torch.zeros(1, 6), pyramid(source))[0, 0, 5, 9].backward()
    assert source.grad[0, :, 5, 9].abs().sum() > 0


# --- losses ------------------------------------------------------------------------------------------------------
def test_kl_term_is_the_closed_form_of_the_gaussians():
    mu = torch.tensor([[0.5, -1.0, 0.0], [2.0, 0.1, -0.3]])
    logvar = torch.tensor([[0.2, -0.3, 0.0], [1.0, -2.0, 0.5]])
    posterior = Normal(mu, torch.exp(0.5 * logvar))
    expected = kl_divergence(posterior, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(dim=1).mean()
    assert torch.isclose(gaussian_kl(mu, logvar), expected, atol=1e-6)


def test_the_training_step_uses_that_kl_term():
    model = _model("cvae", PAIRED)
    batch = _paired_batch()
    recorded = []
    model.encoder.register_forward_hook(lambda module, inputs, output: recorded.append(output))
    losses = model.training_step(batch)
    mu, logvar = recorded[0]
    assert losses["kl"] == pytest.approx(gaussian_kl(mu, logvar).item(), rel=1e-6)
    assert losses["loss"] == pytest.approx(losses["reconstruction"] + TINY.beta * losses["kl"], rel=1e-6)


def test_reconstruction_losses_are_summed_per_image_and_averaged_over_the_batch():
    logits = torch.tensor([[[[0.0, 1.0], [-2.0, 0.5]]], [[[3.0, -1.0], [0.0, 0.0]]]])  # (2, 1, 2, 2)
    target = torch.tensor([[[[0.5, 1.0], [-1.0, 0.0]]], [[[1.0, -0.5], [0.2, -0.2]]]])
    output = torch.tanh(logits)
    assert torch.isclose(reconstruction_loss(logits, target, "l1"), (output - target).abs().sum() / 2)
    assert torch.isclose(reconstruction_loss(logits, target, "l2"), ((output - target) ** 2).sum() / 2)
    p, t = (output + 1) / 2, (target + 1) / 2  # images in [0, 1]
    bce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    assert torch.isclose(reconstruction_loss(logits, target, "bce"), bce.sum() / 2, rtol=1e-5)
    # One known value: a perfect l1/l2 reconstruction costs nothing.
    assert reconstruction_loss(torch.atanh(target * 0.5), target * 0.5, "l2") < 1e-10


def test_ssim_l1_reconstruction_is_zhaos_mix_summed_per_image():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 16, 16, generator=generator, dtype=torch.float64)
    target = torch.rand(2, 1, 16, 16, generator=generator, dtype=torch.float64) * 2 - 1
    output = torch.tanh(logits)
    per_image_ssim = ssim(output, target, data_range=2.0, reduction="none", border="reflect")  # (2,)
    l1 = (output - target).abs().flatten(1).sum(dim=1)
    expected = (0.84 * 256 * (1 - per_image_ssim) + 0.16 * l1).mean()
    assert torch.isclose(reconstruction_loss(logits, target, "ssim_l1"), expected.float(), rtol=1e-5)
    # A perfect reconstruction costs nothing; gradients reach the logits.
    perfect = torch.atanh(target.clamp(-0.9, 0.9))
    assert reconstruction_loss(perfect, target.clamp(-0.9, 0.9), "ssim_l1") < 1e-4
    leaf = logits.float().requires_grad_(True)
    reconstruction_loss(leaf, target.float(), "ssim_l1").backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


def test_kl_warmup_ramps_linearly_to_beta():
    assert kl_weight(0, 2.0, 0) == 2.0
    assert [kl_weight(step, 2.0, 4) for step in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]


def test_unknown_reconstruction_is_a_clear_error():
    with pytest.raises(GenlabError, match="net.reconstruction"):
        _model("vae", LABELLED, VAEConfig(latent_dim=4, width=4, reconstruction="huber"))
    tiny = TaskSpec("tiny", "labelled", 8, 1, 1, 10)
    with pytest.raises(GenlabError, match="ssim_l1 needs images of at least 11 px"):
        _model("cvae", tiny, VAEConfig(latent_dim=4, width=4, reconstruction="ssim_l1"))


# --- training ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, spec, batch",
    [("cvae", PAIRED, _paired_batch()), ("cvae", LABELLED, _labelled_batch()), ("vae", LABELLED, _labelled_batch())],
)
def test_one_training_step_moves_every_trainable_parameter(name, spec, batch):
    model = _model(name, spec)
    before = {key: value.clone() for key, value in model.named_parameters()}
    losses = model.training_step(batch)
    assert set(losses) >= {"loss", "reconstruction", "kl"}
    assert all(torch.isfinite(torch.tensor(value)) for value in losses.values())
    unchanged = [key for key, value in model.named_parameters() if torch.equal(before[key], value)]
    assert unchanged == []
    assert all(p.requires_grad for p in model.parameters())
    nets = set(model.parameter_counts())
    expected = {"encoder", "decoder"} | ({"source_pyramid"} if spec.kind == "paired" else set())
    assert nets == expected | ({"label_conditioning"} if name == "cvae" and spec.kind == "labelled" else set())


# --- generating --------------------------------------------------------------------------------------------------
def test_translation_shapes_range_and_diversity():
    model = _model("cvae", PAIRED)
    source = _paired_batch(3)["source"]
    first = model.translate_batch(source, generator=torch.Generator().manual_seed(1))
    again = model.translate_batch(source, generator=torch.Generator().manual_seed(1))
    other = model.translate_batch(source, generator=torch.Generator().manual_seed(2))
    assert first.shape == (3, 3, 16, 16) and first.abs().max() <= 1.0
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert not torch.allclose(model.translate_batch(source, z=torch.zeros(3, 4), temperature=0.0), first)
    assert model.translate(torch.full((3, 16, 16), -0.5)).shape == (3, 16, 16)  # the base class's single-image form


@pytest.mark.parametrize("name", ["vae", "cvae"])
def test_sample_shapes_and_range(name):
    model = _model(name, LABELLED)
    labels = torch.tensor([0, 2, 1, 1]) if name == "cvae" else None
    images = model.sample(4, labels=labels, generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 16, 16) and images.abs().max() <= 1.0
    assert model.latent_shape() == (4,)


@pytest.mark.parametrize("name", ["vae", "cvae"])
def test_a_sample_does_not_depend_on_the_batch_size(name):
    model = _model(name, LABELLED)
    labels = torch.arange(5) % 3 if name == "cvae" else None
    batch = model.sample(5, labels=labels, generator=sample_generator(7, 10, 5))
    single = model.sample(1, labels=None if labels is None else labels[3:4], generator=sample_generator(7, 13, 1))
    assert torch.allclose(single[0], batch[3], atol=1e-6)


def test_default_labels_cycle_over_all_samples_not_within_each_batch():
    from genlab.sample import sample_images

    model = _model("cvae", LABELLED)  # 3 classes
    by_two = sample_images(model, 7, seed=1, batch_size=2)  # batches of 2: the classes must not restart at 0
    explicit = sample_images(model, 7, labels=torch.tensor([0, 1, 2, 0, 1, 2, 0]), seed=1, batch_size=7)
    assert torch.allclose(by_two, explicit, atol=1e-6)
    first_class_only = sample_images(model, 7, labels=torch.zeros(7, dtype=torch.long), seed=1, batch_size=7)
    assert not torch.allclose(by_two[1], first_class_only[1])  # the label matters, so the check can fail


def test_class_conditional_samples_follow_the_labels():
    model = _model("cvae", LABELLED)
    assert model.conditional and model.can("labels")
    z = torch.randn(1, 4).repeat(3, 1)
    images = model.sample(3, labels=torch.tensor([0, 1, 2]), z=z)
    assert not torch.allclose(images[0], images[1])  # same code, different classes


@pytest.mark.parametrize("labels", [torch.tensor([0, 3]), torch.tensor([-1, 0])])
def test_labels_outside_the_classes_are_an_error(labels):
    model = _model("cvae", LABELLED)
    with pytest.raises(GenlabError, match="outside the classes 0..2"):
        model.sample(2, labels=labels)


def test_the_unconditional_vae_refuses_labels_and_translation():
    model = _model("vae", LABELLED)
    assert not model.conditional and not model.can("translate")
    with pytest.raises(GenlabError, match="unconditional"):
        model.sample(2, labels=torch.tensor([0, 1]))
    with pytest.raises(GenlabError, match="cannot translate images"):
        model.translate(torch.zeros(1, 1, 16, 16))
    with pytest.raises(GenlabError, match="does not support paired tasks"):
        get_model_class("vae").build(TINY, PAIRED)


def test_a_translation_cvae_cannot_sample_from_noise():
    model = _model("cvae", PAIRED)
    with pytest.raises(GenlabError, match="cannot generate images from noise"):
        model.sample(2)


def test_unknown_options_are_a_type_error_naming_them():
    with pytest.raises(TypeError, match="steps"):
        _model("vae", LABELLED).sample(2, steps=10)
    with pytest.raises(TypeError, match="guidance_scale"):
        _model("cvae", PAIRED).translate_batch(torch.zeros(1, 3, 16, 16), guidance_scale=2.0)


def test_linear_interpolation_through_the_z_option():
    model = _model("vae", LABELLED)
    start, end = torch.randn(1, 4), torch.randn(1, 4)
    weights = torch.linspace(0, 1, 5)[:, None]
    path = start + weights * (end - start)  # (5, 4)
    images = model.sample(5, z=path)
    assert torch.allclose(images[0], model.decode_latents(start)[0], atol=1e-6)
    assert torch.allclose(images[-1], model.decode_latents(end)[0], atol=1e-6)
    assert model.can("interpolate") and model.abilities.interpolation == "linear"
    with pytest.raises(GenlabError, match="expected latents shaped"):
        model.sample(5, z=torch.zeros(5, 3))


def test_previews():
    paired = _model("cvae", PAIRED).preview(_paired_batch(2))
    assert [row.shape for row in paired.values()] == [(2, 3, 16, 16)] * 3
    rows = _model("cvae", LABELLED).preview(_labelled_batch(3))
    assert list(rows) == ["real", "reconstruction", "samples"]
    assert [row.shape for row in rows.values()] == [(3, 1, 16, 16)] * 3


# --- state -------------------------------------------------------------------------------------------------------
def test_training_state_round_trip_gives_identical_outputs():
    model = _model("cvae", PAIRED)
    model.training_step(_paired_batch())
    model.end_step()
    torch.manual_seed(123)  # a different initialisation, overwritten by the loaded state
    restored = get_model_class("cvae").build(TINY, PAIRED)
    restored.load_training_state(model.training_state())
    assert restored.step == 1
    source = _paired_batch(2)["source"]
    expected = model.translate_batch(source, generator=torch.Generator().manual_seed(5))
    assert torch.equal(restored.translate_batch(source, generator=torch.Generator().manual_seed(5)), expected)
    torch.manual_seed(9)
    after_model = model.training_step(_paired_batch())
    torch.manual_seed(9)
    assert restored.training_step(_paired_batch()) == after_model  # optimiser state came along too


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(toy_task, tmp_path):
    def config(steps):
        return build_run_config(
            "cvae",
            "quick",
            {"data.task": toy_task, "data.image_size": 16, "train.steps": steps, "train.batch_size": 2},
            [
                "net.width=4",
                "net.latent_dim=4",
                "net.kl_warmup_steps=3",
                "train.log_every=1",
                "train.sample_every=2",
                "train.checkpoint_every=2",
                "train.preview_count=2",
            ],
        )

    train(config(4), tmp_path / "full", progress=False)
    train(config(2), tmp_path / "split", progress=False)
    resumed_config = resume_config(tmp_path / "split")
    resumed_config.train.steps = 4
    train(resumed_config, tmp_path / "split", resume=True, progress=False)
    full = read_metrics(tmp_path / "full" / "metrics.csv")
    split = read_metrics(tmp_path / "split" / "metrics.csv")
    assert split["step"] == [1, 2, 3, 4]
    for key in ("loss", "reconstruction", "kl", "kl_weight"):
        assert split[key] == full[key], key  # exact: same batches, RNG, optimiser state and KL warm-up


# --- the sampling prior ------------------------------------------------------------------------------------------
def test_aggregate_moment_sums_add_up_each_class_posteriors():
    from genlab.models.vae import aggregate_moment_sums

    mu = torch.tensor([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.5]])
    logvar = torch.log(torch.tensor([[0.5, 0.5], [0.1, 0.2], [1.0, 1.0]]))
    counts, sums, second = aggregate_moment_sums(mu, logvar, torch.tensor([0, 0, 2]), 3)  # class 1 absent
    assert counts.tolist() == [2.0, 0.0, 1.0] and sums.dtype == torch.float64
    torch.testing.assert_close(sums[0], torch.tensor([4.0, 6.0], dtype=torch.float64))
    expected = sum(torch.outer(mu[i], mu[i]) + torch.diag(logvar[i].exp()) for i in (0, 1)).double()
    torch.testing.assert_close(second[0], expected)
    assert not sums[1].any() and not second[1].any()


def test_calibration_fits_the_mixture_of_the_posteriors():
    """Posterior means around a known centre with known spread, each posterior N(mu_i, e^-2 I): the fit is the
    mixture's mean E[mu] and covariance Cov(mu) + e^-2 I, and the prior draws follow it."""
    from genlab.models.vae import gaussian_factors

    model = _model("vae", LABELLED)
    generator = torch.Generator().manual_seed(0)
    centre, spread = torch.tensor([2.0, -1.0, 0.5, 0.0]), torch.diag(torch.tensor([0.6, 0.3, 1.0, 0.2]))
    mus = [centre + torch.randn(500, 4, generator=generator) @ spread for _ in range(8)]

    class FixedEncoder(torch.nn.Module):  # hands out the prepared posteriors batch by batch
        def forward(self, image, cond=None):
            return mus.pop(0), torch.full((len(image), 4), -2.0)

    model.encoder = FixedEncoder()
    expected_mean, expected_cov = torch.cat(mus).mean(0), torch.cov(torch.cat(mus).T, correction=0)
    model.calibrate({"image": torch.zeros(500, 1, 16, 16)} for _ in range(8))
    factor = gaussian_factors(model.aggregate_mean, model.aggregate_second)[0]
    torch.testing.assert_close(model.aggregate_mean[0], expected_mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(factor @ factor.T, expected_cov + torch.exp(torch.tensor(-2.0)) * torch.eye(4),
                               atol=1e-4, rtol=0)
    z = model.prior_latents(4000, torch.Generator().manual_seed(1), None, 1.0)
    torch.testing.assert_close(z.mean(0), expected_mean, atol=0.1, rtol=0)


def test_generation_samples_from_the_fitted_prior_and_translation_from_n01():
    model = _model("cvae", LABELLED)
    assert model.uses_aggregate_prior and model.aggregate_mean.shape == (3, 4)
    torch.testing.assert_close(model.from_noise(torch.ones(2, 4), torch.tensor([0, 2])), torch.ones(2, 4))  # N(0, I)
    model.calibrate([{"image": torch.rand(4, 1, 16, 16), "label": torch.tensor([0, 0, 2, 2])}])
    assert model.aggregate_mean[[0, 2]].abs().sum() > 0  # fitted where the classes were seen
    assert torch.equal(model.aggregate_mean[1], torch.zeros(4))  # class 1 unseen: still N(0, I)
    # A known fit: class 1 centred at (3, 0, 0, 0) with covariance diag(4, 1, 1, 1).
    mean = torch.zeros(3, 4)
    mean[1, 0] = 3.0
    second = torch.eye(4).repeat(3, 1, 1) + mean[:, :, None] * mean[:, None, :]
    second[1, 0, 0] += 3.0
    model.aggregate_mean.copy_(mean)
    model.aggregate_second.copy_(second)
    labels = torch.ones(4000, dtype=torch.long)
    z = model.prior_latents(4000, torch.Generator().manual_seed(0), None, 1.0, labels)
    torch.testing.assert_close(z.mean(0), mean[1], atol=0.1, rtol=0)
    torch.testing.assert_close(z.var(0), torch.tensor([4.0, 1.0, 1.0, 1.0]), atol=0.2, rtol=0)
    cold = model.prior_latents(3, None, None, 0.0, torch.tensor([1, 1, 0]))  # temperature 0: the class means
    torch.testing.assert_close(cold, mean[[1, 1, 0]])
    # the standard prior ignores the fit
    standard = _model("cvae", LABELLED, VAEConfig(latent_dim=4, width=4, label_dim=3, sampling_prior="standard"))
    standard.aggregate_mean.copy_(mean)
    assert not standard.uses_aggregate_prior
    torch.testing.assert_close(standard.from_noise(torch.ones(2, 4), torch.tensor([1, 1])), torch.ones(2, 4))
    translator = _model("cvae", PAIRED)
    assert not translator.uses_aggregate_prior and not hasattr(translator, "aggregate_mean")


def test_the_trainer_fits_the_prior_and_saves_it_with_the_weights(tmp_path):
    config = build_run_config("cvae", "quick", {"data.image_size": 16, "train.steps": 2},
                              ["net.width=4", "net.latent_dim=4", "data.task=fashion-mnist", "data.train_limit=16",
                               "train.batch_size=8", "train.preview_count=2"])
    result = train(config, tmp_path / "run", progress=False)
    from genlab.api import load_run

    loaded = load_run(tmp_path / "run", device="cpu")
    model = loaded.model
    torch.testing.assert_close(model.aggregate_mean, result.model.aggregate_mean)
    # the fit is the final weights' posteriors on the training images (16 here)
    split = loaded.task().split("train")
    refit = _model("cvae", model.spec, model.config)
    refit.load_training_state({"networks": model.state_dict()}, weights_only=True)
    refit.aggregate_mean.zero_()
    refit.calibrate([loaded.task().prepare(split.subset(torch.arange(len(split))))])
    torch.testing.assert_close(refit.aggregate_mean, model.aggregate_mean)
    assert result.model.calibration_images == 10_000 and _model("cvae", PAIRED).calibration_images == 0


def test_a_checkpoint_without_the_fit_loads_with_the_standard_prior_and_a_warning():
    model = _model("cvae", LABELLED)
    state = model.training_state()
    for key in ("aggregate_mean", "aggregate_second"):
        del state["networks"][key]
    fresh = _model("cvae", LABELLED)
    fresh.aggregate_mean.fill_(5.0)
    with pytest.warns(UserWarning, match="predates it"):
        fresh.load_training_state(state, weights_only=True)
    assert torch.equal(fresh.aggregate_mean, torch.zeros_like(fresh.aggregate_mean))  # the N(0, I) start
    assert torch.equal(fresh.aggregate_second, torch.eye(4).repeat(3, 1, 1))
