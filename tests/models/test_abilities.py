"""Declared abilities, one clear error for what a family cannot do, labels, and a seed per sample."""

import pytest
import torch

from genlab.data.tasks import TaskSpec
from genlab.models import MODELS, get_model_class
from genlab.models.base import Abilities, GenerativeModel, cycle_labels
from genlab.runs import build_run_config
from genlab.sample import sample_images
from genlab.utils import GenlabError, sample_generator

LABELLED = TaskSpec("fm", "labelled", 16, 1, 1, 10)
PAIRED = TaskSpec("f", "paired", 16, 3, 3)
DIFFUSION_SMALL = ["net.base_width=8", "net.channel_mults=[1,2]", "net.num_res_blocks=1", "net.timesteps=20"]


def build(name: str, spec: TaskSpec, *sets: str) -> GenerativeModel:
    config = build_run_config(name, None, {}, list(sets))
    return get_model_class(name).build(config.net, spec)


def test_every_family_declares_its_abilities():
    for name, family in MODELS.items():
        assert isinstance(family.abilities, Abilities), name
        assert family.purpose, f"{name} says nothing of what it does"
        assert family.abilities.translates or family.abilities.samples or name == "autoencoder", name


def test_abilities_follow_the_task():
    ldm_paired = build("ldm", PAIRED, *DIFFUSION_SMALL, "net.ae_width=8")
    ldm_labelled = build("ldm", LABELLED, *DIFFUSION_SMALL, "net.ae_width=8")
    assert ldm_paired.can("translate") and not ldm_paired.can("sample")
    assert ldm_labelled.can("sample") and ldm_labelled.conditional and not ldm_labelled.can("translate")
    with pytest.raises(GenlabError, match="cannot translate images .it generates images: use sample"):
        ldm_labelled.translate(torch.zeros(1, 1, 16, 16))


def test_the_autoencoder_says_what_it_is():
    autoencoder = build("autoencoder", LABELLED, "net.width=8")
    with pytest.raises(GenlabError, match="only reconstructs images") as error:
        autoencoder.translate(torch.zeros(1, 1, 16, 16))
    assert "generation model" not in str(error.value) and "it translates" not in str(error.value)
    with pytest.raises(GenlabError, match="cannot generate images"):
        sample_images(autoencoder, 2)


def test_pix2pix_declares_how_it_is_stochastic_and_cannot_sample():
    model = build("pix2pix", PAIRED, "net.width=4")
    assert model.abilities.stochastic_options == {"dropout": True}
    with pytest.raises(GenlabError, match="needs a source image"):
        model.sample(2)
    with pytest.raises(GenlabError, match="no reverse generator"):
        model.require("reverse")


def test_cycle_labels():
    assert cycle_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert cycle_labels(2, 10).dtype == torch.long
    with pytest.raises(GenlabError):
        cycle_labels(3, 0)


@pytest.mark.parametrize("family, extra", [("ddpm", []), ("ldm", ["net.ae_width=8", "net.autoencoder_steps=0"])])
def test_a_sample_does_not_depend_on_the_batch_size(family, extra):
    """Pixel-space (ddpm) and latent-space (ldm) noise: sample i comes from (seed, i) alone, even with a
    stochastic sampler (DDIM eta 1 draws noise at every step)."""
    torch.manual_seed(0)
    model = build(family, LABELLED, *DIFFUSION_SMALL, *extra)
    if family == "ldm":
        model.latent_scale.fill_(1.0)  # as if the diffusion stage had begun
    options = {"steps": 4, "eta": 1.0}
    one_by_one = sample_images(model, 7, seed=3, batch_size=1, **options)
    all_at_once = sample_images(model, 7, seed=3, batch_size=7, **options)
    assert torch.allclose(one_by_one, all_at_once, atol=1e-5)
    by_three = sample_images(model, 7, seed=3, batch_size=3, **options)
    assert torch.allclose(by_three, all_at_once, atol=1e-5)
    other_seed = sample_images(model, 7, seed=4, batch_size=7, **options)
    assert not torch.allclose(other_seed, all_at_once)


def test_a_stochastic_translation_does_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    model = build("cddim", PAIRED, *DIFFUSION_SMALL)
    sources = torch.rand(5, 3, 16, 16) * 2 - 1
    together = model.translate_batch(sources, generator=sample_generator(1, 0, 5), steps=3, eta=1.0)
    apart = torch.cat(
        [
            model.translate_batch(sources[i : i + 1], generator=sample_generator(1, i, 1), steps=3, eta=1.0)
            for i in range(5)
        ]
    )
    assert torch.allclose(together, apart, atol=1e-5)


@pytest.mark.parametrize("family, mode", [("vae", "linear"), ("cvae", "linear"), ("dcgan", "slerp"), ("cgan", "slerp")])
def test_gan_and_vae_walks_between_latent_codes(family, mode):
    from genlab.sample import interpolate

    torch.manual_seed(0)
    model = build(family, LABELLED, "net.width=8")
    assert model.abilities.interpolation == mode and model.can("interpolate")
    walk = interpolate(model.eval(), rows=2, columns=5, seed=1)
    assert walk.shape == (10, 1, 16, 16) and walk.abs().max() <= 1
    assert torch.equal(walk, interpolate(model, rows=2, columns=5, seed=1))  # deterministic given the seed
    ends = walk.view(2, 5, -1)
    steps = (ends[:, 1:] - ends[:, :-1]).abs().mean(dim=-1)  # neighbouring points differ less than the ends
    assert (steps < (ends[:, -1] - ends[:, 0]).abs().mean(dim=-1, keepdim=True) + 1e-6).all()


@pytest.mark.parametrize("family, extra", [("ddpm", []), ("ldm", ["net.ae_width=8"])])
def test_diffusion_walks_between_noises_are_deterministic(family, extra):
    from genlab.sample import interpolate

    torch.manual_seed(0)
    model = build(family, LABELLED, *DIFFUSION_SMALL, *extra).eval()
    if family == "ldm":
        model.latent_scale.fill_(1.0)
    walk = interpolate(model, rows=1, columns=3, seed=2, steps=3)
    assert walk.shape == (3, 1, 16, 16)
    assert torch.equal(walk, interpolate(model, rows=1, columns=3, seed=2, steps=3))  # DDIM eta 0 from fixed x_T
