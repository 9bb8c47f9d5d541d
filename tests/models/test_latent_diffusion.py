import pytest
import torch

from genlab.data.tasks import TaskSpec
from genlab.models import get_model_class
from genlab.nn.autoencoder import KLAutoencoder
from genlab.runs import build_run_config
from genlab.utils import GenlabError

SMALL = [
    "net.base_width=8",
    "net.channel_mults=[1,2]",
    "net.num_res_blocks=1",
    "net.timesteps=20",
    "net.ae_width=8",
    "net.autoencoder_steps=2",
]
LABELLED = TaskSpec("fm", "labelled", 16, 1, 1, 10)
PAIRED = TaskSpec("f", "paired", 16, 3, 3)


def ldm(spec, *extra):
    config = build_run_config("ldm", "quick", {}, SMALL + list(extra))
    return get_model_class("ldm").build(config.net, spec)


@pytest.mark.parametrize("factor", [4, 8])
def test_autoencoder_shapes(factor):
    autoencoder = KLAutoencoder(3, latent_channels=4, factor=factor, width=8)
    mu, logvar = autoencoder.encode(torch.zeros(2, 3, 32, 32))
    assert mu.shape == logvar.shape == (2, 4, 32 // factor, 32 // factor)
    assert autoencoder.decode(mu).shape == (2, 3, 32, 32)


def test_autoencoder_learns_to_reconstruct():
    torch.manual_seed(0)
    config = build_run_config("autoencoder", "quick", {}, ["net.width=8", "net.lr=3e-3"]).net
    model = get_model_class("autoencoder").build(config, LABELLED)
    images = (torch.rand(8, 1, 4, 4) * 2 - 1).repeat_interleave(4, 2).repeat_interleave(4, 3)
    first = model.training_step({"image": images, "label": torch.zeros(8, dtype=torch.long)})
    for _ in range(60):
        last = model.training_step({"image": images, "label": torch.zeros(8, dtype=torch.long)})
    assert last["ae_reconstruction"] < 0.5 * first["ae_reconstruction"]


def test_stages_scale_and_frozen_autoencoder():
    torch.manual_seed(0)
    model = ldm(LABELLED)
    batch = {"image": torch.rand(4, 1, 16, 16) * 2 - 1, "label": torch.randint(0, 10, (4,))}
    for _ in range(2):
        assert "ae_reconstruction" in model.training_step(batch)
        model.end_step()
    assert model.latent_scale == 0
    scheduler = model.schedulers["network"]
    assert scheduler.last_epoch == 0  # the denoiser's LR warm-up starts with its own training
    frozen = [p.clone() for p in model.autoencoder.parameters()]
    losses = model.training_step(batch)
    assert set(losses) == {"loss", "image_loss"}
    assert model.latent_scale > 0
    mu, logvar = model.autoencoder.encode(batch["image"])
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.autoencoder.parameters()))
    # The weight average starts with the denoiser's training: its first update copies the denoiser, as it would
    # at step 0, not a decay near 1 from stage one's steps that would keep the random initial weights.
    assert model.ema_updates == 0
    assert all(torch.equal(a, b) for a, b in zip(model.ema_network.parameters(), model.network.parameters()))
    model.end_step()
    assert model.ema_updates == 1
    samples = model.sample(3, labels=torch.tensor([1, 2, 3]), steps=3)
    assert samples.shape == (3, 1, 16, 16) and samples.abs().max() <= 1


def test_translation_ldm_decodes_to_image_size():
    model = ldm(PAIRED)
    assert model.network.config.cond_channels == 3 and model.network.config.image_size == 4
    batch = {"source": torch.rand(2, 3, 16, 16) * 2 - 1, "target": torch.rand(2, 3, 16, 16) * 2 - 1}
    for _ in range(3):
        model.training_step(batch)
        model.end_step()
    assert model.translate_batch(batch["source"], steps=2).shape == (2, 3, 16, 16)
    with pytest.raises(GenlabError, match="use translate"):
        model.sample(2)


def test_self_conditioned_ldm_denoiser_reads_latents_beside_their_estimate():
    plain, model = ldm(LABELLED), ldm(LABELLED, "net.self_condition=true")
    assert model.network.config.in_channels == 2 * plain.network.config.in_channels
    assert model.network.config.out_channels == plain.network.config.out_channels
    batch = {"image": torch.rand(4, 1, 16, 16) * 2 - 1, "label": torch.randint(0, 10, (4,))}
    for _ in range(4):  # two autoencoder steps, then the denoiser's
        losses = model.training_step(batch)
        model.end_step()
    assert set(losses) == {"loss", "image_loss"} and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    samples = model.sample(2, labels=torch.tensor([1, 2]), steps=3)
    assert samples.shape == (2, 1, 16, 16) and torch.isfinite(samples).all()


def test_sampling_before_stage_two_is_a_clear_error():
    with pytest.raises(GenlabError, match="not reached its diffusion stage"):
        ldm(LABELLED).sample(1, steps=2)


def test_factor_must_divide_the_image_size():
    config = build_run_config("ldm", "quick", {}, SMALL + ["net.ae_factor=8"]).net
    with pytest.raises(GenlabError, match="must divide data.image_size 12"):
        get_model_class("ldm").build(config, TaskSpec("x", "labelled", 12, 1, 1, 10))


def test_ldm_takes_the_autoencoder_from_an_autoencoder_run(toy_task, tmp_path):
    from genlab.train.trainer import train

    config = build_run_config(
        "autoencoder", "quick", {"data.task": "toy-paired", "data.image_size": 16, "train.steps": 3}, ["net.width=8"]
    )
    trained = train(config, tmp_path / "ae", progress=False).model
    model = ldm(PAIRED, f"net.autoencoder_run={tmp_path / 'ae'}", "net.ae_width=8")
    assert model.stage_one_steps == 0
    for ours, theirs in zip(model.autoencoder.parameters(), trained.autoencoder.parameters()):
        assert torch.equal(ours.cpu(), theirs.cpu())
    with pytest.raises(GenlabError, match="width=8, this run asks for net.ae_width=16"):
        ldm(PAIRED, f"net.autoencoder_run={tmp_path / 'ae'}", "net.ae_width=16")
