"""Pix2Pix (Isola et al. 2017): conditional GAN with a U-Net generator, a PatchGAN and an L1 term."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genlab.config import non_negative, positive, ranged, unit_interval
from genlab.models.base import Abilities, GenerativeModel, frozen, register_model
from genlab.models.losses import GANLoss, GANMode
from genlab.nn.layers import NormKind, init_gan_weights
from genlab.nn.patchgan import PatchDiscriminator, patchgan_layers
from genlab.nn.unet import UNetGenerator, unet_depth


@dataclass
class Pix2PixConfig:
    """Pix2Pix settings; defaults are the paper's (section 3 and appendix 6)."""

    width: int = positive(64)  # generator and discriminator base width (ngf = ndf)
    norm: NormKind = "instance"
    dropout: float = unit_interval(0.5, high_open=True)
    # Decoder blocks with dropout: None = where the reference implementation puts them (the depth - 5 blocks
    # after the innermost: 3 at 256 px, none at 32 px); N = the N innermost decoder blocks.
    dropout_blocks: int | None = non_negative(None)
    # PatchGAN blocks: None = the deepest, up to the paper's 3 (70x70), whose patch fits in the image (34x34 at
    # 64 px, 16x16 at 32 px: each better on 3 seeds than a patch larger than the image, README); N = N blocks.
    disc_layers: int | None = ranged(None, 1, 8)
    gan_loss: GANMode = "vanilla"  # vanilla = BCE (paper); lsgan = the seed report's L2 variant
    lambda_l1: float = non_negative(100.0)
    lr: float = positive(2e-4)
    beta1: float = unit_interval(0.5, high_open=True)
    beta2: float = unit_interval(0.999, high_open=True)
    # The paper halves D's objective to slow D relative to G.
    disc_loss_weight: float = positive(0.5)
    # LR: constant, then linear to zero from this fraction of the training budget on (the reference: 100
    # epochs constant + 100 decaying = 0.5); 1.0 = constant. Defined over the budget, so --minutes decays too.
    lr_decay_start: float = unit_interval(0.5)
    # Dropout at inference gives pix2pix's (small) stochasticity; off by default for reproducible scores.
    dropout_at_inference: bool = False
    # Translate with an average of the generator over training (weights and batch-norm statistics): the
    # power-function EMA of diffusion's nets (nn/ema.py), whose std is this fraction of the training done, so it
    # means the same at every budget. None = the last weights, as the paper. Averaging GAN generators lowers
    # their FID (Yazici et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training").
    ema_length: float | None = ranged(None, 0, 0.28, low_open=True)


@register_model
class Pix2Pix(GenerativeModel):
    """Paired image-to-image translation: G(source) -> target, D(source, image) -> real/fake patch logits."""

    name = "pix2pix"
    config_class = Pix2PixConfig
    task_kinds = frozenset({"paired"})
    presets = {
        # The paper: 256 px, batch 1, 200 epochs of 400 facades = 80k steps.
        "paper": {"data.image_size": 256, "train.batch_size": 1, "train.steps": 80_000, "net.width": 64},
        # The seed report (Tables 1-3): 256 px, batch 1, 80,000 iterations; `net.gan_loss=lsgan` is its L2+L1.
        "seed": {
            "data.image_size": 256,
            "train.batch_size": 1,
            "train.steps": 80_000,
            "net.width": 64,
        },
        # Small and fast on 2 CPU cores: about 4 minutes. lambda_L1 and the losses stay the paper's (a 3-seed sweep of
        # lambda_L1 and the PatchGAN depth is in the README; the depth's default follows the image size).
        # Batch norm (the reference implementation's default, scored in eval mode with its running statistics) and
        # lr 2e-3: the paper's 2e-4 is for batch 1 over 200 epochs. On edges2fashion at 32 px (40k images, 3 seeds)
        # domain FID 3.14 vs 4.42 and class accuracy 81.1% vs 78.9%, both intervals apart, PSNR and SSIM a tie; on
        # facades-synth at 64 px domain FID 0.36 vs 0.48 and FCN mIoU 0.483 vs 0.461, PSNR 0.35 dB lower. At 15
        # minutes (2 seeds) the FID gain holds, PSNR/SSIM go either way (README, "Pix2Pix: batch norm and the
        # learning rate"). Translation with the generator's average over training (std 0.15 of the run) at a
        # constant LR: at 40k images (3 seeds) PSNR 18.41 vs 17.89 dB, SSIM 0.637 vs 0.608, domain FID 2.87 vs 3.14,
        # each better on every seed; at 15 minutes (2 seeds) +0.5 dB and +0.027 SSIM, domain FID a tie, class
        # accuracy 0.6 points lower; on facades-synth +0.8 dB, +0.038 SSIM, a higher domain FID (0.43 vs 0.36)
        # (README, "Pix2Pix: an average of the generator's weights").
        "quick": {
            "data.image_size": 64,
            "train.batch_size": 4,
            "train.steps": 1500,
            "net.width": 32,
            "net.norm": "batch",
            "net.lr": 2e-3,
            "net.lr_decay_start": 1.0,
            "net.ema_length": 0.15,
            "train.sample_every": 250,
            "train.checkpoint_every": 500,
        },
    }
    # Images of 32 px or less: a step of 32 costs 2.9x a step of 4 on 2 CPU cores (the small maps leave the step
    # overhead-bound, whatever they show), so a budget in minutes sees 2.7x the images (3.4x in the 5-minute
    # benchmark). On garments at 5 minutes (3 seeds) batch 16 beat 4 with separate intervals (domain FID 0.59 vs
    # 0.93, PSNR 19.94 vs 19.57 dB, SSIM 0.702 vs 0.687) and 32 beat 16 on PSNR; at 15 minutes 32 beat 16 on PSNR,
    # SSIM and domain FID on each of 3 seeds, class accuracy a tie (README, "Pix2Pix: the batch size at the
    # budget"). At equal images batch 4 is better (40k images, 3 seeds). On facades-synth at its 1.5-minute budget
    # (3 seeds) batch 4 tied 8 and 16 at 64 px, where a step is less overhead-bound, and 32 tied 4 at 32 px.
    size_presets = {"quick": {32: {"train.batch_size": 32}}}
    task_presets = {"quick": {"edges2fashion": {"data.image_size": 32}}}
    default_preset = "quick"
    # pix2pix's (small) output diversity comes from dropout kept on at inference, as the paper does.
    abilities = Abilities(translates=True, stochastic=True, stochastic_options={"dropout": True}, ema=True)
    purpose = "paired image-to-image translation"

    def __init__(self, config: Pix2PixConfig, spec) -> None:
        super().__init__(config, spec)
        self.generator = UNetGenerator(
            spec.source_channels,
            spec.target_channels,
            depth=unet_depth(spec.image_size),
            width=config.width,
            norm=config.norm,
            dropout=config.dropout,
            dropout_blocks=config.dropout_blocks,
        )
        self.discriminator = PatchDiscriminator(
            spec.source_channels + spec.target_channels,
            width=config.width,
            layers=patchgan_layers(config.disc_layers, spec.image_size),
            norm=config.norm,
        )
        init_gan_weights(self)
        self.keep_averages(config.ema_length, "generator")
        self.gan_loss = GANLoss(config.gan_loss)
        betas = (config.beta1, config.beta2)
        self.optimizers = {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas),
        }

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        source, target = batch["source"], batch["target"]  # (B, C, H, W) in [-1, 1]
        self.train()
        self.decay_learning_rates(self.config.lr_decay_start)
        with self.autocast():
            fake = self.generator(source)

        # D step: real pairs toward 1, fake pairs toward 0; fake is detached so G gets no gradient here.
        with self.autocast():
            real_logits = self.discriminator(torch.cat([source, target], dim=1))
            fake_logits = self.discriminator(torch.cat([source, fake.detach()], dim=1))
        loss_d_real = self.gan_loss(real_logits, real=True)
        loss_d_fake = self.gan_loss(fake_logits, real=False)
        loss_d = self.config.disc_loss_weight * (loss_d_real + loss_d_fake)
        self.optimize(loss_d, "discriminator")

        # G step: fool the updated D (its weights frozen) and stay close to the target in L1.
        with frozen(self.discriminator), self.autocast():
            fake_logits = self.discriminator(torch.cat([source, fake], dim=1))
        loss_g_gan = self.gan_loss(fake_logits, real=True, for_discriminator=False)
        loss_g_l1 = F.l1_loss(fake.float(), target)
        loss_g = loss_g_gan + self.config.lambda_l1 * loss_g_l1
        self.optimize(loss_g, "generator")
        self.update_averages()

        return {
            "loss_g": loss_g.item(),
            "loss_g_gan": loss_g_gan.item(),
            "loss_g_l1": loss_g_l1.item(),
            "loss_d": loss_d.item(),
            "loss_d_real": loss_d_real.item(),
            "loss_d_fake": loss_d_fake.item(),
        }

    @torch.no_grad()
    def translate_batch(
        self, source: torch.Tensor, generator: torch.Generator | None = None, **options
    ) -> torch.Tensor:
        """G(source) in [-1, 1], with the generator's average when the run keeps one (net.ema_length);
        `dropout=True` keeps dropout on (pix2pix's stochastic outputs)."""
        dropout = options.pop("dropout", self.config.dropout_at_inference)
        if options:
            raise TypeError(f"pix2pix.translate got unknown options: {', '.join(options)}")
        generator = self.inference_network("generator")
        was_training = generator.training
        generator.eval()
        if dropout:
            for module in generator.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.train()
        with self.autocast():
            output = generator(source.to(self.device))
        generator.train(was_training)
        return output.float()
