"""CycleGAN (Zhu et al. 2017): two generators, two PatchGANs, cycle-consistency and identity terms, image pools.

G_AB maps domain A to B and G_BA maps B back; D_A scores domain-A images, D_B domain-B images. Trains on
unpaired tasks ({"a", "b"} batches) and on paired tasks used unpaired ({"source", "target"} batches drawn with
`Task.training_batch(..., unpaired=True)`, so the pairing is never seen).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from genlab.config import non_negative, positive, ranged, unit_interval
from genlab.models.base import Abilities, GenerativeModel, frozen, register_model
from genlab.models.image_pool import ImagePool
from genlab.models.losses import GANLoss, GANMode
from genlab.nn.layers import NormKind, init_gan_weights
from genlab.nn.patchgan import PatchDiscriminator, patchgan_layers
from genlab.nn.resnet_generator import ResnetGenerator, resnet_blocks
from genlab.utils import GenlabError, derive_seed

DIRECTIONS = ("AtoB", "BtoA")


@dataclass
class CycleGANConfig:
    """CycleGAN settings; defaults are the paper's (section 4 and appendix 7)."""

    width: int = positive(64)  # generator and discriminator base width (ngf = ndf)
    n_blocks: int | None = positive(None)  # residual blocks; None: by image size (9 at >= 256 px, 6 below)
    norm: NormKind = "instance"
    disc_layers: int = ranged(3, 1, 8)  # 3 -> the 70x70 PatchGAN (fewer on tiny images)
    gan_loss: GANMode = "lsgan"  # least squares (paper section 4, after Mao et al. 2017)
    lambda_cycle: float = non_negative(10.0)  # weight of each cycle-consistency L1 term (paper eq. 3)
    # Identity loss weight relative to lambda_cycle (the paper's 0.5 * lambda, as the reference code's
    # lambda_identity). Skipped, with a warning, when A and B have different channel counts.
    lambda_identity: float = non_negative(0.5)
    pool_size: int = ranged(50, 0, 10_000)  # fake-image history per discriminator (0: no pool)
    lr: float = positive(2e-4)
    beta1: float = unit_interval(0.5, high_open=True)
    beta2: float = unit_interval(0.999, high_open=True)
    # LR schedule: constant for the first `decay_start` fraction of the training, then linear to zero at its
    # end (the paper: 100 epochs constant + 100 decaying = decay_start 0.5). total_steps None (the default):
    # over the trainer's budget (steps, images or minutes), so raising --steps or giving --minutes keeps it
    # right; an integer fixes the schedule to that many steps whatever the budget.
    total_steps: int | None = positive(None)
    decay_start: float = unit_interval(0.5)
    # The D objective is halved to slow D relative to G (paper section 4).
    disc_loss_weight: float = positive(0.5)
    # Translate with an average of each generator's weights over training (None: the last weights): the
    # power-function EMA (nn/ema.py), whose std is this fraction of the training done, as pix2pix's option.
    ema_length: float | None = ranged(None, 0, 0.28, low_open=True)


def lr_factor(step: int, total_steps: int | None, decay_start: float) -> float:
    """The LR multiplier at optimisation step `step`: 1 until decay_start * total_steps, then linear to 0.

    >>> [lr_factor(s, 10, 0.5) for s in (0, 4, 5, 8, 10)]
    [1.0, 1.0, 1.0, 0.4, 0.0]
    """
    if total_steps is None:
        return 1.0
    start = decay_start * total_steps
    if step < start or total_steps <= start:
        return 1.0
    return max(0.0, (total_steps - step) / (total_steps - start))


@register_model
class CycleGAN(GenerativeModel):
    """Unpaired translation both ways: G_AB, G_BA with D_A, D_B, LSGAN + cycle L1 + identity L1, image pools."""

    name = "cyclegan"
    config_class = CycleGANConfig
    task_kinds = frozenset({"unpaired", "paired"})
    presets = {
        # The paper (section 4, appendix 7.1-7.2): 256 px (load 286, random crop 256, flip), batch 1, Adam 2e-4,
        # 100 epochs constant + 100 epochs decaying to zero; on the 400 facades that is 80k steps.
        "paper": {
            "data.image_size": 256,
            "data.load_scale": 286 / 256,  # the reference resizes 256 px images to 286, then crops 256
            "train.batch_size": 1,
            "train.steps": 80_000,
            "net.width": 64,
            "net.n_blocks": 9,
            "net.lr": 2e-4,
            "net.decay_start": 0.5,
        },
        # The seed report (000): its CycleGAN section 3.5 is a draft without settings (its note guesses "16
        # residual layers?", unconfirmed), so this takes its shared training settings: section 3.1's
        # augmentation (256 -> 300 -> random crop 256, flip) and Table 3's batch 1, Adam 2e-4 (0.5, 0.999),
        # 80,000 iterations; the architecture and losses stay the paper's.
        "seed": {
            "data.image_size": 256,
            "train.batch_size": 1,
            "train.steps": 80_000,
            "net.width": 64,
            "net.n_blocks": 9,
            "net.lr": 2e-4,
            "net.decay_start": 0.5,
        },
        # Small and fast on 2 CPU cores (about 5 minutes, 0.15-0.2 s/step): 64 px, width 32, 6 blocks, the
        # paper's losses and weights. On facades-synth it beats the mean-training-photo baseline on test SSIM.
        "quick": {
            "data.image_size": 64,
            "train.batch_size": 1,
            "train.steps": 1500,
            "net.width": 32,
            "net.n_blocks": 6,
            "net.decay_start": 0.5,
            "train.sample_every": 250,
            "train.checkpoint_every": 500,
        },
    }
    default_preset = "quick"
    abilities = Abilities(translates=True, unpaired=True, reverse=True, ema=True)
    purpose = "unpaired image-to-image translation in both directions"

    def __init__(self, config: CycleGANConfig, spec) -> None:
        super().__init__(config, spec)
        check_config(config)
        channels_a, channels_b = spec.source_channels, spec.target_channels
        n_blocks = resnet_blocks(spec.image_size) if config.n_blocks is None else config.n_blocks
        self.generator_ab = ResnetGenerator(channels_a, channels_b, config.width, n_blocks, config.norm)
        self.generator_ba = ResnetGenerator(channels_b, channels_a, config.width, n_blocks, config.norm)
        layers = patchgan_layers(config.disc_layers, spec.image_size)
        self.discriminator_a = PatchDiscriminator(channels_a, config.width, layers, config.norm)
        self.discriminator_b = PatchDiscriminator(channels_b, config.width, layers, config.norm)
        init_gan_weights(self)
        self.keep_averages(config.ema_length, "generator_ab", "generator_ba")
        self.gan_loss = GANLoss(config.gan_loss)
        self.use_identity = config.lambda_identity > 0 and channels_a == channels_b
        if config.lambda_identity > 0 and not self.use_identity:
            warnings.warn(
                f"cyclegan on {spec.name}: A has {channels_a} channels and B {channels_b}, so G_AB(b) ~ b is "
                "undefined; the identity loss is skipped (net.lambda_identity=0 silences this)",
                stacklevel=2,
            )
        # The trainer seeds torch with the run seed before building the model, so the pools follow the run seed.
        run_seed = torch.initial_seed()
        self.pools = {
            "a": ImagePool(config.pool_size, derive_seed(run_seed, 0xA)),  # fakes G_BA(b) shown to D_A
            "b": ImagePool(config.pool_size, derive_seed(run_seed, 0xB)),  # fakes G_AB(a) shown to D_B
        }
        betas = (config.beta1, config.beta2)
        generators = itertools.chain(self.generator_ab.parameters(), self.generator_ba.parameters())
        discriminators = itertools.chain(self.discriminator_a.parameters(), self.discriminator_b.parameters())
        self.optimizers = {
            "generators": torch.optim.Adam(generators, lr=config.lr, betas=betas),
            "discriminators": torch.optim.Adam(discriminators, lr=config.lr, betas=betas),
        }
        if config.total_steps is not None:
            self.schedulers = {
                name: torch.optim.lr_scheduler.LambdaLR(
                    optimizer, lambda step: lr_factor(step, config.total_steps, config.decay_start)
                )
                for name, optimizer in self.optimizers.items()
            }

    # --- training ------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        real_a, real_b = domains(batch)  # (B, C_a, H, W), (B', C_b, H, W) in [-1, 1]
        self.train()
        if self.config.total_steps is None:
            self.decay_learning_rates(self.config.decay_start)
        # G step first (D frozen), then D step on pooled fakes of this step's generators (the paper's order).
        generator_losses, fake_a, fake_b = self.generator_step(real_a, real_b)
        self.update_averages()
        discriminator_losses = self.discriminator_step(real_a, real_b, fake_a, fake_b)
        return {**generator_losses, **discriminator_losses}

    def generator_losses(
        self, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The full generator objective (paper eq. 3 plus the identity term) and the fakes G_BA(b), G_AB(a)."""
        config = self.config
        with self.autocast():
            fake_b = self.generator_ab(real_a)  # G_AB(a): (B, C_b, H, W)
            fake_a = self.generator_ba(real_b)  # G_BA(b): (B', C_a, H, W)
            reconstructed_a = self.generator_ba(fake_b)  # G_BA(G_AB(a)) ~ a, forward cycle
            reconstructed_b = self.generator_ab(fake_a)  # G_AB(G_BA(b)) ~ b, backward cycle
            with frozen(self.discriminator_a, self.discriminator_b):  # D gives gradients to G only
                logits_b = self.discriminator_b(fake_b)
                logits_a = self.discriminator_a(fake_a)
        losses = {
            "loss_g_gan_ab": self.gan_loss(logits_b, real=True, for_discriminator=False),
            "loss_g_gan_ba": self.gan_loss(logits_a, real=True, for_discriminator=False),
            "loss_cycle_a": F.l1_loss(reconstructed_a.float(), real_a.float()),
            "loss_cycle_b": F.l1_loss(reconstructed_b.float(), real_b.float()),
        }
        if self.use_identity:  # a generator fed an image of its output domain should leave it unchanged
            with self.autocast():
                identity_a = self.generator_ba(real_a)  # G_BA(a) ~ a
                identity_b = self.generator_ab(real_b)  # G_AB(b) ~ b
            losses["loss_idt_a"] = F.l1_loss(identity_a.float(), real_a.float())
            losses["loss_idt_b"] = F.l1_loss(identity_b.float(), real_b.float())
        else:
            losses["loss_idt_a"] = losses["loss_idt_b"] = torch.zeros((), device=real_a.device)
        lambda_identity = config.lambda_cycle * config.lambda_identity
        losses["loss_g"] = (
            losses["loss_g_gan_ab"]
            + losses["loss_g_gan_ba"]
            + config.lambda_cycle * (losses["loss_cycle_a"] + losses["loss_cycle_b"])
            + lambda_identity * (losses["loss_idt_a"] + losses["loss_idt_b"])
        )
        return losses, fake_a, fake_b

    def generator_step(
        self, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """Update G_AB and G_BA together; returns their losses and the detached fakes (fake_a, fake_b)."""
        losses, fake_a, fake_b = self.generator_losses(real_a, real_b)
        self.optimize(losses["loss_g"], "generators")
        return {name: value.item() for name, value in losses.items()}, fake_a.detach(), fake_b.detach()

    def discriminator_step(
        self, real_a: torch.Tensor, real_b: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor
    ) -> dict[str, float]:
        """Update D_A and D_B: real images toward 1, fakes drawn from the image pools toward 0."""
        pooled_a = self.pools["a"].query(fake_a.float())  # a mix of this step's and older fakes
        pooled_b = self.pools["b"].query(fake_b.float())
        with self.autocast():
            real_logits_a, fake_logits_a = self.discriminator_a(real_a), self.discriminator_a(pooled_a)
            real_logits_b, fake_logits_b = self.discriminator_b(real_b), self.discriminator_b(pooled_b)
        weight = self.config.disc_loss_weight
        loss_d_a = weight * (self.gan_loss(real_logits_a, real=True) + self.gan_loss(fake_logits_a, real=False))
        loss_d_b = weight * (self.gan_loss(real_logits_b, real=True) + self.gan_loss(fake_logits_b, real=False))
        self.optimize(loss_d_a + loss_d_b, "discriminators")  # D_A and D_B share no parameters
        return {"loss_d_a": loss_d_a.item(), "loss_d_b": loss_d_b.item()}

    # --- translation -------------------------------------------------------------------------------------------
    def generator_for(self, direction: str) -> torch.nn.Module:
        """G_AB for "AtoB", G_BA for "BtoA" (their averages where the run keeps them, net.ema_length); anything
        else is an error listing the valid directions."""
        if direction == "AtoB":
            return self.inference_network("generator_ab")
        if direction == "BtoA":
            return self.inference_network("generator_ba")
        raise GenlabError(f"cyclegan: unknown direction {direction!r} (valid: {', '.join(DIRECTIONS)})")

    @torch.no_grad()
    def translate_batch(
        self, source: torch.Tensor, generator: torch.Generator | None = None, direction: str = "AtoB", **options
    ) -> torch.Tensor:
        """G_AB(source) for AtoB (A images (B, C_a, H, W)), G_BA(source) for BtoA, or their averages;
        deterministic (no noise)."""
        if options:
            raise TypeError(f"cyclegan.translate got unknown options: {', '.join(options)}")
        network = self.generator_for(direction)
        was_training = network.training
        network.eval()
        with self.autocast():
            output = network(source.to(self.device))
        network.train(was_training)
        return output.float()

    def preview(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rows real A | G_AB(A) | G_BA(G_AB(A)) | real B | G_BA(B) (paired tasks: input | output | target)."""
        if "source" in batch:
            source = batch["source"].to(self.device)
            return {"input": batch["source"], "output": self.translate_batch(source), "target": batch["target"]}
        real_a, real_b = batch["a"].to(self.device), batch["b"].to(self.device)
        fake_b = self.translate_batch(real_a)
        reconstructed_a = self.translate_batch(fake_b, direction="BtoA")
        return {
            "A": real_a,
            "A to B": fake_b,
            "back to A": reconstructed_a,
            "B": real_b,
            "B to A": self.translate_batch(real_b, direction="BtoA"),
        }

    # --- state -------------------------------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """The base state plus both image pools (stored fakes and RNG states), so resume is exact."""
        state = super().training_state()
        state["pools"] = {name: pool.state_dict() for name, pool in self.pools.items()}
        return state

    def load_training_state(self, state: dict[str, Any], weights_only: bool = False) -> None:
        super().load_training_state(state, weights_only)
        if weights_only:
            return
        for name, pool in self.pools.items():
            pool.load_state_dict(state["pools"][name])


def domains(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(A images, B images) of an unpaired batch {"a", "b"} or of a paired one {"source", "target"}."""
    for key_a, key_b in (("a", "b"), ("source", "target")):
        if key_a in batch and key_b in batch:
            return batch[key_a], batch[key_b]
    raise GenlabError(f"cyclegan: a batch needs keys a/b or source/target, got {', '.join(sorted(batch))}")


def check_config(config: CycleGANConfig) -> None:
    """Clear errors for values the schedule and losses cannot use."""
    if not 0.0 <= config.decay_start <= 1.0:
        raise GenlabError(f"net.decay_start={config.decay_start}: expected a fraction of the training in [0, 1]")
    if config.total_steps is not None and config.total_steps < 1:
        raise GenlabError(f"net.total_steps={config.total_steps}: expected a positive step count or None")
    for key, weight in {"lambda_cycle": config.lambda_cycle, "lambda_identity": config.lambda_identity}.items():
        if weight < 0:
            raise GenlabError(f"net.{key}={weight}: expected a non-negative weight")
    if config.pool_size < 0:
        raise GenlabError(f"net.pool_size={config.pool_size}: expected 0 (no pool) or more")
