"""DCGAN (Radford et al. 2016) and CGAN (Mirza & Osindero 2014): adversarial generation from noise, and its
conditional forms: class-conditional generation on labelled tasks, image-conditional translation on paired ones.

Objective: the seed report's equation (1),
    min_G max_D  E_x[log D(x|y)] + E_z[log(1 - D(G(z|y)))],
trained as Goodfellow et al. (2014, section 3) advise: D ascends (1); G minimises -log D(G(z|y)) (the
non-saturating form) instead of log(1 - D(G(z|y))), whose gradient vanishes while D wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genlab.config import non_negative, positive, ranged, unit_interval
from genlab.models.base import Abilities, GenerativeModel, frozen, register_model
from genlab.models.losses import GANLoss, GANMode
from genlab.nn.dcgan import (
    DCGANDiscriminator,
    DCGANGenerator,
    LabelConditioning,
    TranslationGenerator,
    dcgan_upsamplings,
)
from genlab.nn.layers import NormKind, init_gan_weights
from genlab.nn.patchgan import PatchDiscriminator, patchgan_layers
from genlab.utils import Generator, GenlabError, randn


@dataclass
class GANConfig:
    """DCGAN / CGAN settings; defaults are Radford et al.'s (section 4: Adam 2e-4, beta1 0.5, N(0, 0.02) init)."""

    latent_dim: int = positive(100)  # z ~ N(0, I)
    # G's channels next to the image (doubling inward, capped at 8x) and D's first-layer channels
    width: int = positive(64)
    norm: NormKind = "batch"  # DCGAN's BatchNorm; "instance" for batch-1 training (the seed preset)
    embedding_dim: int = positive(32)  # class-label embedding concatenated to z (class-conditional G)
    label_conditioning: LabelConditioning = "channels"  # D: one-hot label maps beside the image, or projection
    noise_channels: int = positive(8)  # z projected to this many input maps of the translation U-Net
    disc_layers: int = ranged(3, 1, 8)  # PatchGAN depth of the translation D (3 -> 70x70 patches)
    gan_loss: GANMode = "vanilla"  # vanilla = BCE, with the non-saturating G loss -log D(G(z))
    lr: float = positive(2e-4)
    beta1: float = unit_interval(0.5, high_open=True)
    beta2: float = unit_interval(0.999, high_open=True)
    # L1 to the target, image-conditional CGAN only (as pix2pix eq. 2); label-conditional and DCGAN runs have no
    # target for a sample, so the term is not used there.
    lambda_l1: float = non_negative(100.0)
    # one-sided: D's real target is 1 - label_smoothing (Salimans et al. 2016, 3.4)
    label_smoothing: float = unit_interval(0.0, high_open=True)
    # BatchNorm running-average momentum (PyTorch's default 0.1): the statistics eval-mode sampling uses.
    bn_momentum: float = unit_interval(0.1)
    # Sample and translate with an average of G over training (weights and batch-norm statistics): the
    # power-function EMA (nn/ema.py), whose std is this fraction of the training done; None = the last weights.
    ema_length: float | None = ranged(None, 0, 0.28, low_open=True)


class AdversarialModel(GenerativeModel):
    """The shared DCGAN/CGAN machinery: one G and one D per task kind, one D step then one G step per batch."""

    config_class = GANConfig

    def __init__(self, config: GANConfig, spec) -> None:
        super().__init__(config, spec)
        dcgan_upsamplings(spec.image_size)  # a clear error naming data.image_size before any net is built
        if config.label_smoothing and config.gan_loss == "hinge":
            raise GenlabError("net.label_smoothing: one-sided label smoothing needs net.gan_loss vanilla or lsgan")
        if not 0.0 <= config.label_smoothing < 1.0:
            raise GenlabError(f"net.label_smoothing must be in [0, 1), got {config.label_smoothing}")
        classes = spec.num_classes if self.conditional else 0
        if self.translates_images:
            self.generator = TranslationGenerator(
                spec.source_channels,
                spec.target_channels,
                spec.image_size,
                config.latent_dim,
                width=config.width,
                noise_channels=config.noise_channels,
                norm=config.norm,
            )
            # D sees the (source, image) pair, pix2pix-style, on patches.
            self.discriminator = PatchDiscriminator(
                spec.source_channels + spec.target_channels,
                width=config.width,
                layers=patchgan_layers(config.disc_layers, spec.image_size),
                norm=config.norm,
            )
        else:
            self.generator = DCGANGenerator(
                config.latent_dim,
                spec.target_channels,
                spec.image_size,
                width=config.width,
                num_classes=classes,
                embedding_dim=config.embedding_dim,
                norm=config.norm,
            )
            self.discriminator = DCGANDiscriminator(
                spec.target_channels,
                spec.image_size,
                width=config.width,
                num_classes=classes,
                norm=config.norm,
                conditioning=config.label_conditioning,
            )
        init_gan_weights(self)  # N(0, 0.02), the paper's init
        for module in self.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = config.bn_momentum
        self.keep_averages(config.ema_length, "generator")
        self.gan_loss = GANLoss(config.gan_loss)
        betas = (config.beta1, config.beta2)
        self.optimizers = {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas),
        }

    @property
    def translates_images(self) -> bool:
        """Image-conditional (a paired task): G maps (source, z) to a target image."""
        return self.spec.kind == "paired"

    # --- training ----------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.train()
        condition, real = self.training_inputs(batch)
        z = randn((len(real), self.config.latent_dim), None, self.device)  # the global RNG, saved with the run
        with self.autocast():
            fake = self.generate(condition, z)  # (B, C, H, W), one G forward shared by both sub-steps
        # D first, on a detached fake: the D step cannot reach G's parameters.
        losses = self.discriminator_step(condition, real, fake.detach())
        # Then G against the updated D, whose parameters are frozen for this backward pass.
        losses.update(self.generator_step(condition, real, fake))
        return losses

    def discriminator_step(self, condition, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        """Ascend eq. (1) in D: real (x, y) toward real, G(z|y) toward fake; updates only D."""
        with self.autocast():
            real_logits = self.discriminate(condition, real)
            fake_logits = self.discriminate(condition, fake)
        loss_d_real = self.real_loss(real_logits)
        loss_d_fake = self.gan_loss(fake_logits, real=False)
        loss_d = loss_d_real + loss_d_fake
        self.optimize(loss_d, "discriminator")
        return {"loss_d": loss_d.item(), "loss_d_real": loss_d_real.item(), "loss_d_fake": loss_d_fake.item()}

    def generator_step(self, condition, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        """The non-saturating G loss -log D(G(z|y)) (plus lambda * L1 when translating); updates only G."""
        with frozen(self.discriminator), self.autocast():
            fake_logits = self.discriminate(condition, fake)
        loss_g_gan = self.gan_loss(fake_logits, real=True, for_discriminator=False)
        losses = {"loss_g_gan": loss_g_gan}
        loss_g = loss_g_gan
        if self.translates_images and self.config.lambda_l1 > 0:
            losses["loss_g_l1"] = F.l1_loss(fake.float(), real)
            loss_g = loss_g + self.config.lambda_l1 * losses["loss_g_l1"]
        self.optimize(loss_g, "generator")
        self.update_averages()
        return {"loss_g": loss_g.item(), **{name: value.item() for name, value in losses.items()}}

    def real_loss(self, logits: torch.Tensor) -> torch.Tensor:
        """D's loss on real inputs; one-sided smoothing mixes in the fake target, i.e. BCE toward 1 - s.

        (For lsgan the mix differs from (D - (1 - s))^2 by a constant only, so the gradient is the same.)
        """
        smoothing = self.config.label_smoothing
        loss = self.gan_loss(logits, real=True)
        if smoothing == 0:
            return loss
        return (1.0 - smoothing) * loss + smoothing * self.gan_loss(logits, real=False)

    def training_inputs(self, batch: dict[str, torch.Tensor]):
        """(condition, real images): (source, target) when translating, else (labels or None, images)."""
        if self.translates_images:
            return batch["source"], batch["target"]
        return (batch["label"] if self.conditional else None), batch["image"]

    def generate(self, condition, z: torch.Tensor, generator: torch.nn.Module | None = None) -> torch.Tensor:
        """G(z | condition): the condition is a source batch, class labels (B,) or None; `generator` another G
        of the same shape (its average)."""
        generator = self.generator if generator is None else generator
        return generator(condition, z) if self.translates_images else generator(z, condition)

    def discriminate(self, condition, images: torch.Tensor) -> torch.Tensor:
        """D(images | condition) logits: per patch of the (source, image) pair, or one per image."""
        if self.translates_images:
            return self.discriminator(torch.cat([condition, images], dim=1))
        return self.discriminator(images, condition)

    # --- inference -----------------------------------------------------------------------------------------------
    def latent(self, count: int, generator: Generator | None, z: torch.Tensor | None) -> torch.Tensor:
        """z (count, latent_dim): the caller's, or drawn through `randn` so sample i depends on (seed, i) only."""
        if z is None:
            return randn((count, self.config.latent_dim), generator, self.device)
        z = torch.as_tensor(z, dtype=torch.float32)
        if tuple(z.shape) != (count, self.config.latent_dim):
            raise GenlabError(f"z: expected shape ({count}, {self.config.latent_dim}), got {tuple(z.shape)}")
        return z.to(self.device)

    @torch.no_grad()
    def run_generator(self, condition, z: torch.Tensor) -> torch.Tensor:
        """G in eval mode (BatchNorm running statistics, so each output depends on its own z alone); its average
        when the run keeps one (net.ema_length)."""
        generator = self.inference_network("generator")
        was_training = generator.training
        generator.eval()
        try:
            with self.autocast():
                return self.generate(condition, z, generator).float()
        finally:
            generator.train(was_training)

    def sample(
        self, count: int, labels: torch.Tensor | None = None, generator: Generator | None = None, **options
    ) -> torch.Tensor:
        """`count` images (count, C, S, S) in [-1, 1]; `labels` (count,) on class-conditional runs (default: cycling
        through the classes); `z=` a (count, latent_dim) tensor instead of drawing one (e.g. a slerp path).

        >>> images = model.sample(10, labels=torch.arange(10), generator=torch.Generator().manual_seed(0))
        """
        self.require("sample")
        z = options.pop("z", None)
        if options:
            raise TypeError(f"{self.name}.sample got unknown options: {', '.join(options)} (valid: z)")
        labels = self.check_labels(labels, count)
        return self.run_generator(labels, self.latent(count, generator, z))

    def latent_shape(self) -> tuple[int, ...]:
        """One sample's z: (latent_dim,), walked by `genlab sample --interpolate` (slerp: z is Gaussian)."""
        self.require("interpolate")
        return (self.config.latent_dim,)

    def sample_from_latents(self, latents: torch.Tensor, labels: torch.Tensor | None = None, **options) -> torch.Tensor:
        """Images G(z | labels) (B, C, S, S) from given codes z (B, latent_dim): deterministic."""
        return self.sample(len(latents), labels=labels, z=latents, **options)

    def translate_batch(self, source: torch.Tensor, generator: Generator | None = None, **options) -> torch.Tensor:
        """G(source, z) (B, C', S, S) in [-1, 1], z drawn from `generator` (another draw, another output) or `z=`."""
        self.require("translate")
        z = options.pop("z", None)
        if options:
            raise TypeError(f"{self.name}.translate got unknown options: {', '.join(options)} (valid: z)")
        return self.run_generator(source.to(self.device), self.latent(len(source), generator, z))

    def preview(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """paired: source | output | target; labelled: real images | samples for the batch's labels."""
        generator = torch.Generator().manual_seed(0)  # the same z at every preview, and the run's RNG untouched
        if self.translates_images:
            output = self.translate_batch(batch["source"], generator=generator)
            return {"input": batch["source"], "output": output, "target": batch["target"]}
        labels = batch["label"] if self.conditional else None
        return {"real": batch["image"], "samples": self.sample(len(batch["image"]), labels=labels, generator=generator)}


# Radford et al. 2016, section 4: batch 128, Adam lr 2e-4 beta1 0.5, N(0, 0.02) init; 64 px and figure 1's
# 1024-512-256-128 generator (width 128). 25 epochs of Fashion-MNIST's 50k training images.
PAPER = {
    "data.image_size": 64,
    "train.batch_size": 128,
    "train.steps": 10_000,
    "net.width": 128,
    "net.latent_dim": 100,
    "net.lr": 2e-4,
    "net.beta1": 0.5,
    "train.sample_every": 1000,
    "train.checkpoint_every": 2000,
}


# Fashion-MNIST at 32 px, 4000 steps of 64: about 4-5 minutes on 2 CPU cores; the class-conditional CGAN's
# samples are then classified as their label about 84% of the time by genlab's domain classifier. No crop jitter
# (load_scale 1): that classifier saw uncropped garments. Presets cannot follow the task; on facades-synth
# (image-conditional CGAN) the same preset is run with a smaller budget, about 3 minutes:
#   genlab train cgan --task facades-synth --size 64 --batch-size 8 --steps 2000
QUICK = {
    "data.task": "fashion-mnist",
    "data.image_size": 32,
    "data.load_scale": 1.0,
    "train.batch_size": 64,
    "train.steps": 4000,
    "net.width": 32,
    "train.sample_every": 500,
    "train.checkpoint_every": 1000,
    "train.preview_count": 10,
    # Sampling from G's average (std 0.15 of the run), on 3 seeds each: cgan's domain FID 2.64 vs 4.18 and recall
    # 0.58 vs 0.44, class accuracy 85.9% vs 84.0%; dcgan's domain FID 6.71 vs 7.31, recall 0.61 vs 0.57; the FID
    # and recall better on every seed (README, "The GAN and VAE families on their quick presets").
    "net.ema_length": 0.15,
}


@register_model
class DCGAN(AdversarialModel):
    """Unconditional image generation from noise on labelled tasks (labels unused)."""

    name = "dcgan"
    task_kinds = frozenset({"labelled"})
    abilities = Abilities(samples=True, stochastic=True, interpolation="slerp", ema=True)
    purpose = "unconditional image generation from noise"
    presets = {
        "paper": {"data.task": "fashion-mnist", **PAPER},
        "quick": dict(QUICK),
    }
    default_preset = "quick"


@register_model
class CGAN(AdversarialModel):
    """Conditional GAN: class-conditional generation on labelled tasks, image-conditional translation on paired."""

    name = "cgan"
    task_kinds = frozenset({"labelled", "paired"})
    abilities = Abilities(
        translates=True, samples=True, class_conditional=True, stochastic=True, interpolation="slerp", ema=True
    )
    purpose = "conditional GAN: class-conditional generation, or image-conditional translation"
    presets = {
        # DCGAN's settings (Radford et al. 2016) with the CGAN conditioning.
        "paper": {"data.task": "fashion-mnist", **PAPER},
        # The seed report's section 3.3 gives only the objective, eq. (1); its other settings are the ones it
        # shares with its Pix2Pix: facades at 256 px cropped from 300 and flipped (section 3.1), Adam 2e-4
        # betas (0.5, 0.999), lambda_L1 100, batch 1, 80,000 iterations (table 3). Batch 1 -> instance norm.
        "seed": {
            "data.task": "facades",
            "data.image_size": 256,
            "train.batch_size": 1,
            "train.steps": 80_000,
            "net.width": 64,
            "net.norm": "instance",
            "net.lambda_l1": 100.0,
            "train.sample_every": 1000,
            "train.checkpoint_every": 5000,
        },
        "quick": dict(QUICK),
    }
    # Image-conditional translation of facades-synth at 64 px: 2000 steps of 8, about 3 minutes on 2 CPU cores
    # (test SSIM 0.395 against the mean photo's 0.079). The last weights there: the average was measured on
    # fashion-mnist only (Pix2Pix's average raised the domain FID on facades-synth).
    task_presets = {
        "quick": {
            "facades-synth": {
                "data.image_size": 64,
                "train.batch_size": 8,
                "train.steps": 2000,
                "net.ema_length": None,
            }
        }
    }
    default_preset = "quick"
