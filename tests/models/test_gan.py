import io

import pytest
import torch
import torch.nn.functional as F

from genlab.data.tasks import TaskSpec
from genlab.models import get_model_class
from genlab.nn.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_upsamplings
from genlab.runs import build_run_config
from genlab.utils import GenlabError, sample_generator

LABELLED = TaskSpec("fashion-mnist", "labelled", 16, 1, 1, num_classes=10)
PAIRED = TaskSpec("toy-paired", "paired", 16, 3, 3)


def _model(family="cgan", spec=LABELLED, *assignments):
    config = build_run_config(family, "quick", {}, ["net.width=4", "net.latent_dim=8", *assignments]).net
    torch.manual_seed(0)
    return get_model_class(family).build(config, spec)


def _batch(spec, count=4):
    generator = torch.Generator().manual_seed(1)
    size = spec.image_size
    if spec.kind == "paired":
        return {
            "source": torch.rand(count, 3, size, size, generator=generator) * 2 - 1,
            "target": torch.rand(count, 3, size, size, generator=generator) * 2 - 1,
        }
    return {
        "image": torch.rand(count, 1, size, size, generator=generator) * 2 - 1,
        "label": torch.randint(0, 10, (count,), generator=generator),
    }


def _parameters(module):
    return [p.detach().clone() for p in module.parameters()]


def _same(before, module):
    return all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


@pytest.mark.parametrize("size, upsamplings", [(16, 2), (32, 3), (64, 4), (128, 5), (256, 6)])
def test_depth_follows_the_image_size(size, upsamplings):
    assert dcgan_upsamplings(size) == upsamplings
    generator = DCGANGenerator(8, 3, size, width=2, num_classes=3)
    images = generator(torch.randn(2, 8), torch.tensor([0, 2]))
    assert images.shape == (2, 3, size, size) and images.abs().max() <= 1.0  # Tanh
    discriminator = DCGANDiscriminator(3, size, width=2, num_classes=3)
    assert discriminator(images, torch.tensor([0, 2])).shape == (2,)  # one logit per image


@pytest.mark.parametrize("size", [8, 24, 48, 100])
def test_sizes_that_are_not_a_power_of_two_of_16_or_more_are_refused(size):
    with pytest.raises(GenlabError, match="data.image_size"):
        _model("dcgan", TaskSpec("fashion-mnist", "labelled", size, 1, 1, 10))


@pytest.mark.parametrize("family, spec", [("dcgan", LABELLED), ("cgan", LABELLED), ("cgan", PAIRED)])
def test_output_shapes_and_range(family, spec):
    model = _model(family, spec)
    if spec.kind == "paired":
        output = model.translate_batch(_batch(spec)["source"])
    else:
        output = model.sample(3, labels=torch.tensor([0, 5, 9]) if model.conditional else None)
    assert output.shape == (len(output), spec.target_channels, 16, 16) and len(output) in (3, 4)
    assert output.min() >= -1.0 and output.max() <= 1.0


@pytest.mark.parametrize("family, spec", [("dcgan", LABELLED), ("cgan", LABELLED), ("cgan", PAIRED)])
def test_d_step_changes_only_d_and_g_step_only_g(family, spec):
    model = _model(family, spec)
    model.train()
    condition, real = model.training_inputs(_batch(spec))
    fake = model.generate(condition, torch.randn(len(real), model.config.latent_dim))
    generator_before, discriminator_before = _parameters(model.generator), _parameters(model.discriminator)

    model.discriminator_step(condition, real, fake.detach())
    assert _same(generator_before, model.generator)
    assert not _same(discriminator_before, model.discriminator)

    discriminator_after = _parameters(model.discriminator)
    losses = model.generator_step(condition, real, fake)
    assert _same(discriminator_after, model.discriminator)
    assert not _same(generator_before, model.generator)
    assert all(p.requires_grad for p in model.discriminator.parameters())  # unfrozen after the G step
    assert ("loss_g_l1" in losses) == (spec.kind == "paired")


@pytest.mark.parametrize("family, spec", [("dcgan", LABELLED), ("cgan", LABELLED), ("cgan", PAIRED)])
def test_one_step_moves_every_trainable_parameter_with_finite_losses(family, spec):
    model = _model(family, spec)
    before = dict((name, p.detach().clone()) for name, p in model.named_parameters())
    losses = model.training_step(_batch(spec))
    expected = {"loss_d", "loss_d_real", "loss_d_fake", "loss_g"} | ({"loss_g_l1"} if spec.kind == "paired" else set())
    assert set(losses) >= expected
    assert all(torch.isfinite(torch.tensor(value)) for value in losses.values())
    unmoved = [name for name, p in model.named_parameters() if torch.equal(before[name], p)]
    assert unmoved == []
    if spec.kind == "paired":
        assert losses["loss_g"] == pytest.approx(losses["loss_g_gan"] + 100 * losses["loss_g_l1"], rel=1e-5)


def test_label_conditional_nets_see_the_labels():
    model = _model("cgan", LABELLED)
    assert model.conditional and model.generator.embedding is not None
    z = torch.randn(2, 8)
    assert not torch.equal(model.generate(torch.tensor([0, 0]), z), model.generate(torch.tensor([3, 3]), z))
    assert not _model("dcgan", LABELLED).conditional


def test_vanilla_generator_loss_is_the_non_saturating_form():
    model = _model("cgan", LABELLED)
    logits = torch.tensor([-3.0, -0.5, 0.0, 2.0])
    expected = -torch.log(torch.sigmoid(logits)).mean()  # -log D(G(z)), not log(1 - D(G(z)))
    assert torch.isclose(model.gan_loss(logits, real=True, for_discriminator=False), expected)
    # Its gradient does not vanish where D confidently rejects the fake (logit -3), unlike the minimax form.
    logits.requires_grad_(True)
    model.gan_loss(logits, real=True, for_discriminator=False).backward()
    assert logits.grad[0] < -0.2


def test_one_sided_label_smoothing_is_bce_toward_one_minus_s():
    model = _model("cgan", LABELLED, "net.label_smoothing=0.1")
    logits = torch.tensor([-1.0, 0.5, 2.0])
    expected = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 0.9))
    assert torch.isclose(model.real_loss(logits), expected)


@pytest.mark.parametrize("family, spec", [("dcgan", LABELLED), ("cgan", LABELLED), ("cgan", PAIRED)])
def test_a_sample_does_not_depend_on_the_batch_size(family, spec):
    model = _model(family, spec)
    model.training_step(_batch(spec))  # running BatchNorm statistics away from their initial values
    if spec.kind == "paired":
        source = _batch(spec, 5)["source"]
        alone = model.translate_batch(source[3:4], generator=sample_generator(7, 3, 1))
        together = model.translate_batch(source, generator=sample_generator(7, 0, 5))
    else:
        labels = torch.tensor([1, 4, 2, 8, 0]) if model.conditional else None
        alone = model.sample(1, labels=None if labels is None else labels[3:4], generator=sample_generator(7, 3, 1))
        together = model.sample(5, labels=labels, generator=sample_generator(7, 0, 5))
    assert torch.allclose(alone[0], together[3], atol=1e-6)


def test_z_option_gives_the_same_images_and_unknown_options_are_named():
    model = _model("cgan", LABELLED)
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 2])
    first = model.sample(3, labels=labels, generator=torch.Generator().manual_seed(3))
    assert torch.equal(model.sample(3, labels=labels, z=z), first)
    with pytest.raises(GenlabError, match="z: expected shape"):
        model.sample(2, z=z)
    with pytest.raises(TypeError, match="steps, eta"):
        model.sample(3, steps=10, eta=0.0)
    translator = _model("cgan", PAIRED)
    with pytest.raises(TypeError, match="guidance_scale"):
        translator.translate_batch(torch.zeros(1, 3, 16, 16), guidance_scale=2.0)


def test_interpolation_walks_between_latent_codes():
    from genlab.sample import interpolate

    model = _model("cgan", LABELLED)
    assert model.latent_shape() == (8,)
    walk = interpolate(model, rows=2, columns=4, seed=3)
    assert walk.shape == (8, 1, 16, 16)
    codes = torch.randn(2, 8)
    assert torch.equal(
        model.sample_from_latents(codes, labels=torch.tensor([1, 2])), model.sample(2, torch.tensor([1, 2]), z=codes)
    )


@pytest.mark.parametrize("conditioning", ["channels", "projection"])
def test_both_label_conditionings_make_d_see_the_label(conditioning):
    discriminator = DCGANDiscriminator(1, 16, width=4, num_classes=10, conditioning=conditioning).eval()
    images = torch.randn(2, 1, 16, 16)
    if conditioning == "projection":  # starts small (N(0, 0.02)); give it weight to see
        torch.nn.init.normal_(discriminator.projection.weight)
    assert not torch.allclose(discriminator(images, torch.tensor([0, 0])), discriminator(images, torch.tensor([7, 7])))


def test_stochastic_translation_differs_between_generators():
    model = _model("cgan", PAIRED)
    source = _batch(PAIRED, 2)["source"]
    first = model.translate_batch(source, generator=torch.Generator().manual_seed(0))
    second = model.translate_batch(source, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(first, second)
    assert torch.equal(first, model.translate_batch(source, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("labels", [[0, 10], [-1, 3]])
def test_labels_outside_the_classes_are_refused(labels):
    with pytest.raises(GenlabError, match="outside the classes 0..9"):
        _model("cgan", LABELLED).sample(2, labels=torch.tensor(labels))


def test_unconditional_runs_refuse_labels():
    with pytest.raises(GenlabError, match="unconditional"):
        _model("dcgan", LABELLED).sample(2, labels=torch.tensor([0, 1]))


def test_abilities_follow_the_family_and_the_task():
    dcgan = _model("dcgan", LABELLED)
    with pytest.raises(GenlabError, match="cannot translate images"):
        dcgan.translate(torch.zeros(1, 1, 16, 16))
    with pytest.raises(GenlabError, match="does not support paired tasks"):
        _model("dcgan", PAIRED)
    translator = _model("cgan", PAIRED)
    assert translator.can("translate") and not translator.can("sample")
    with pytest.raises(GenlabError, match="cannot generate images from noise"):
        translator.sample(2)
    generator = _model("cgan", LABELLED)
    assert generator.can("sample") and generator.can("labels") and generator.can("interpolate")
    assert not generator.can("translate")


@pytest.mark.parametrize("family, spec", [("cgan", LABELLED), ("cgan", PAIRED)])
def test_preview_rows(family, spec):
    model = _model(family, spec)
    rows = model.preview(_batch(spec, 3))
    assert list(rows) == (["input", "output", "target"] if spec.kind == "paired" else ["real", "samples"])
    assert all(row.shape[0] == 3 for row in rows.values())


@pytest.mark.parametrize("family, spec", [("cgan", LABELLED), ("cgan", PAIRED)])
def test_checkpoint_round_trip_gives_identical_outputs(family, spec):
    model = _model(family, spec)
    for _ in range(2):
        model.training_step(_batch(spec))
    saved = io.BytesIO()
    torch.save(model.training_state(), saved)  # through bytes, as a checkpoint file: no tensor is shared
    saved.seek(0)
    restored = _model(family, spec)
    restored.load_training_state(torch.load(saved, weights_only=True))
    assert restored.step == model.step
    if spec.kind == "paired":
        source = _batch(spec)["source"]
        outputs = [m.translate_batch(source, generator=torch.Generator().manual_seed(5)) for m in (model, restored)]
    else:
        outputs = [m.sample(4, generator=torch.Generator().manual_seed(5)) for m in (model, restored)]
    assert torch.equal(*outputs)
    # The optimiser states came along too: one more identical step on both gives identical weights.
    torch.manual_seed(9)
    model.training_step(_batch(spec))
    torch.manual_seed(9)
    restored.training_step(_batch(spec))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))


def test_resume_is_exact_for_a_cgan(toy_task, tmp_path):
    from genlab.train.trainer import resume_config, train

    def config(steps):
        return build_run_config(
            "cgan",
            "quick",
            {"data.task": toy_task, "data.image_size": 16, "train.steps": steps, "train.batch_size": 2},
            # with G's average, which must resume exactly too
            ["net.width=4", "net.latent_dim=8", "train.sample_every=2", "train.checkpoint_every=2",
             "net.ema_length=0.1"],
        )

    straight = train(config(4), tmp_path / "straight", progress=False).model
    assert any(name.startswith("ema_generator.") for name in straight.state_dict())
    train(config(2), tmp_path / "split", progress=False)
    resumed_config = resume_config(tmp_path / "split")
    resumed_config.train.steps = 4
    resumed = train(resumed_config, tmp_path / "split", resume=True, progress=False).model
    assert resumed.step == straight.step == 4
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("family, spec", [("dcgan", LABELLED), ("cgan", LABELLED), ("cgan", PAIRED)])
def test_generator_average_follows_the_power_ema_and_generates(family, spec):
    """net.ema_length: G's average (weights and batch-norm statistics) copies G at the first update, then
    avg <- d avg + (1 - d) G with d = (1 - 1/(n+1))^(gamma+1); samples and translations come from it."""
    from genlab.nn.ema import power_ema_decay, power_ema_gamma

    model = _model(family, spec, "net.ema_length=0.1")
    assert _model(family, spec, "net.ema_length=null").ema_generator is None
    snapshots = []
    for _ in range(2):
        model.training_step(_batch(spec))
        model.end_step()  # the trainer's: the step count the decay reads
        snapshots.append({key: value.clone() for key, value in model.generator.state_dict().items()})
    decay = power_ema_decay(1, power_ema_gamma(0.1))
    assert 0 < decay < 1
    for key, value in model.ema_generator.state_dict().items():
        if value.is_floating_point():
            expected = decay * snapshots[0][key] + (1 - decay) * snapshots[1][key]
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6, msg=key)
    z = torch.randn(4, model.config.latent_dim)
    condition = _batch(spec)["source"] if spec.kind == "paired" else (torch.arange(4) if model.conditional else None)
    with torch.no_grad():
        averaged = model.generate(condition, z, model.ema_generator.eval())
        last = model.generate(condition, z, model.generator.eval())
    model.generator.train()
    output = model.translate_batch(condition, z=z) if spec.kind == "paired" else model.sample(4, labels=condition, z=z)
    torch.testing.assert_close(output, averaged)
    assert not torch.equal(averaged, last)  # (an untrained G's outputs are small: equality is the test)
    assert model.generator.training  # sampling with the average leaves the trained G's mode alone


def test_presets_resolve():
    for family in ("dcgan", "cgan"):
        for preset in get_model_class(family).presets:
            config = build_run_config(family, preset)
            assert config.net.lr == 2e-4 and config.net.beta1 == 0.5
    paper = build_run_config("cgan", "paper")
    assert (paper.train.batch_size, paper.data.image_size) == (128, 64)
    assert build_run_config("cgan").data.task == "fashion-mnist"
    # G's average where it was measured (fashion-mnist); the last weights on facades-synth
    assert build_run_config("cgan", "quick").net.ema_length == build_run_config("dcgan", "quick").net.ema_length == 0.15
    assert build_run_config("cgan", "quick", {"data.task": "facades-synth"}).net.ema_length is None


@pytest.mark.slow
def test_quick_cgan_samples_follow_their_labels_on_fashion_mnist(tmp_path):
    from genlab.evaluate import EvalOptions, evaluate_run
    from genlab.train.trainer import train

    train(build_run_config("cgan", "quick"), tmp_path / "cgan", progress=False)
    result = evaluate_run(tmp_path / "cgan", EvalOptions(features=("domain",)), device="cpu")
    assert result.score("class_accuracy").value >= 0.8


@pytest.mark.slow
def test_quick_cgan_beats_the_mean_photo_on_facades_synth(tmp_path):
    from genlab.evaluate import EvalOptions, evaluate_run
    from genlab.train.trainer import train

    values = {"data.task": "facades-synth", "data.image_size": 64, "train.batch_size": 8, "train.steps": 2000}
    train(build_run_config("cgan", "quick", values), tmp_path / "cgan", progress=False)
    options = EvalOptions(features=(), lpips=False, diversity_inputs=0, baselines=True)
    result = evaluate_run(tmp_path / "cgan", options, device="cpu")
    mean_photo = next(score for score in result.baselines["mean_train_target"] if score.metric == "ssim")
    assert result.score("ssim").value > mean_photo.value
