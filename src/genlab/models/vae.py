"""Variational autoencoders (Kingma & Welling 2013): `vae` generates images from z ~ N(0, I); `cvae` is the
conditional VAE (Sohn et al. 2015), conditioned on a source image (translation on paired tasks) or on a
class label (generation on labelled tasks with classes).

The loss is the negative ELBO per image, with a KL weight (beta-VAE, Higgins et al. 2017):
    loss = E_q[-log p(x | z, c)] + beta * KL(q(z | x, c) || N(0, I))
with the reconstruction term summed over the pixels of an image (C * H * W values) and the KL summed over
the latent dimensions; both are averaged over the batch. beta = 1 is then the plain ELBO: a Laplace (l1),
Gaussian (l2, variance 1/2) or Bernoulli (bce) decoder likelihood up to constants, whatever the image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from genlab.config import non_negative, positive, unit_interval
from genlab.models.base import Abilities, GenerativeModel, register_model
from genlab.models.losses import gaussian_kl
from genlab.nn.vae import LabelConditioning, SourcePyramid, VAEDecoder, VAEEncoder, vae_depth
from genlab.utils import Generator, GenlabError, randn

ReconstructionKind = Literal["l1", "l2", "bce"]


@dataclass
class VAEConfig:
    """VAE / CVAE settings; defaults suit short CPU runs, the presets set the papers' and the seed's values."""

    latent_dim: int = positive(64)
    width: int = positive(32)  # channels at full resolution; doubles with each halving up to 8x
    label_dim: int = positive(16)  # class-label embedding size (class-conditional cvae only)
    beta: float = non_negative(1.0)  # KL weight; 1 = the plain ELBO (see the module docstring for the scales)
    reconstruction: ReconstructionKind = "l1"  # bce compares images mapped to [0, 1]
    lr: float = positive(1e-3)
    beta1: float = unit_interval(0.9, high_open=True)
    beta2: float = unit_interval(0.999, high_open=True)
    kl_warmup_steps: int = non_negative(0)  # linear KL annealing from 0 to beta over this many steps (0 = off)


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, kind: ReconstructionKind) -> torch.Tensor:
    """-log p(target | z) up to constants, summed over C, H, W and averaged over the batch.

    `logits` are the decoder's pre-Tanh outputs (B, C, H, W): the image is tanh(logits) in [-1, 1].
    l1: sum |x_hat - x|; l2: sum (x_hat - x)^2; bce: sum of the binary cross-entropy between the images in
    [0, 1], (x + 1) / 2 against (x_hat + 1) / 2 = sigmoid(2 * logits) (computed from the logits, so stable).
    """
    logits, target = logits.float(), target.float()
    if kind == "l1":
        per_pixel = (torch.tanh(logits) - target).abs()
    elif kind == "l2":
        per_pixel = (torch.tanh(logits) - target).pow(2)
    elif kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(2.0 * logits, (target + 1.0) / 2.0, reduction="none")
    else:
        raise GenlabError(f"net.reconstruction={kind!r} is not a reconstruction loss (valid: l1, l2, bce)")
    return per_pixel.flatten(1).sum(dim=1).mean()


def kl_weight(step: int, beta: float, warmup_steps: int) -> float:
    """beta, ramped linearly from beta / warmup_steps at step 0 to beta at step warmup_steps - 1 (KL annealing,
    Bowman et al. 2016) when warmup_steps > 0."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)


class VariationalAutoencoder(GenerativeModel):
    """What vae and cvae share: the encoder and decoder, the ELBO step, sampling z from the prior.

    The condition of a batch is a list of decoder maps (one per resolution, coarsest first) plus an optional
    vector concatenated to z; `condition()` builds it, and the unconditional vae has neither.
    """

    config: VAEConfig

    def __init__(self, config: VAEConfig, spec) -> None:
        super().__init__(config, spec)
        if config.reconstruction not in ("l1", "l2", "bce"):
            raise GenlabError(f"net.reconstruction={config.reconstruction!r} (valid: l1, l2, bce)")
        self.source_pyramid: SourcePyramid | None = None
        self.label_conditioning: LabelConditioning | None = None
        size, width = spec.image_size, config.width
        encoder_cond, decoder_cond, extra = 0, (), 0
        if self.translates_source:
            self.source_pyramid = SourcePyramid(spec.source_channels, size, width)
            encoder_cond, decoder_cond = spec.source_channels, self.source_pyramid.channels
        elif self.conditional:
            self.label_conditioning = LabelConditioning(spec.num_classes, config.label_dim)
            resolutions = vae_depth(size) + 1  # one label map per decoder resolution, 4 .. size
            encoder_cond, decoder_cond, extra = config.label_dim, (config.label_dim,) * resolutions, config.label_dim
        self.encoder = VAEEncoder(spec.target_channels, config.latent_dim, size, width, encoder_cond)
        self.decoder = VAEDecoder(config.latent_dim + extra, spec.target_channels, size, width, decoder_cond)
        self.optimizers = {"vae": torch.optim.Adam(self.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))}

    @property
    def translates_source(self) -> bool:
        """Whether this model is conditioned on a source image (a cvae built for a paired task)."""
        return self.spec.kind == "paired"

    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one latent code z (without the batch dimension)."""
        return (self.config.latent_dim,)

    def sample_from_latents(self, latents: torch.Tensor, labels: torch.Tensor | None = None, **options) -> torch.Tensor:
        """Decode given codes z (B, latent_dim): the walk of `genlab sample --interpolate` (linear for a VAE)."""
        return self.sample(len(latents), labels=labels, z=latents, **options)

    # --- conditioning ----------------------------------------------------------------------------------------
    def condition(
        self, source: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, list[torch.Tensor] | None, torch.Tensor | None]:
        """(encoder condition maps (B, C_c, H, W), decoder maps per resolution, vector to concatenate to z)."""
        if self.source_pyramid is not None:
            if source is None:
                raise GenlabError(f"{self.name} trained on {self.spec.name} needs a source image")
            return source, self.source_pyramid(source), None
        if self.label_conditioning is not None:
            if labels is None:
                raise GenlabError(f"{self.name} trained on {self.spec.name} needs class labels")
            embedded = self.label_conditioning(labels)  # (B, label_dim)
            size = self.spec.image_size
            return (
                self.label_conditioning.maps(embedded, size),
                self.label_conditioning.pyramid(embedded, size),
                embedded,
            )
        return None, None, None

    def decode(self, z: torch.Tensor, maps: list[torch.Tensor] | None, vector: torch.Tensor | None) -> torch.Tensor:
        """Pre-Tanh decoder output (B, C, H, W) for latents z (B, latent_dim) and a condition."""
        return self.decoder.logits(z if vector is None else torch.cat([z, vector], dim=1), maps)

    # --- training ---------------------------------------------------------------------------------------------
    def inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(image to reconstruct, source, labels) of a training batch."""
        if self.translates_source:
            return batch["target"], batch["source"], None
        return batch["image"], None, batch["label"] if self.conditional else None

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.train()
        image, source, labels = self.inputs(batch)  # (B, C, H, W) in [-1, 1]
        with self.autocast():
            encoder_maps, decoder_maps, vector = self.condition(source, labels)
            mu, logvar = self.encoder(image, encoder_maps)  # q(z | x, c), each (B, latent_dim)
            mu, logvar = mu.float(), logvar.float()
            # Reparameterisation (Kingma & Welling eq. 10): z = mu + sigma * eps, eps ~ N(0, I) from the global
            # RNG, which the trainer seeds per run.
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            logits = self.decode(z, decoder_maps, vector)
        reconstruction = reconstruction_loss(logits, image, self.config.reconstruction)
        kl = gaussian_kl(mu, logvar)
        weight = kl_weight(self.step, self.config.beta, self.config.kl_warmup_steps)
        loss = reconstruction + weight * kl
        self.optimize(loss, "vae")
        return {"loss": loss.item(), "reconstruction": reconstruction.item(), "kl": kl.item(), "kl_weight": weight}

    # --- generating -------------------------------------------------------------------------------------------
    def prior_latents(
        self, count: int, generator: Generator | None, z: torch.Tensor | None, temperature: float
    ) -> torch.Tensor:
        """z (count, latent_dim): the given codes, or draws from N(0, temperature^2 I) (sample i from generator i
        of a PerSampleGenerator)."""
        if z is None:
            return temperature * randn((count, *self.latent_shape()), generator, self.device)
        z = torch.as_tensor(z, dtype=torch.float32)
        if tuple(z.shape) != (count, *self.latent_shape()):
            raise GenlabError(f"z: expected latents shaped {(count, *self.latent_shape())}, got {tuple(z.shape)}")
        return z.to(self.device)

    @torch.no_grad()
    def decode_latents(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] for latents z (B, latent_dim) and the model's condition."""
        self.eval()
        with self.autocast():
            _, maps, vector = self.condition(source, labels)
            return torch.tanh(self.decode(z.to(self.device), maps, vector).float())

    @torch.no_grad()
    def reconstruct(
        self, image: torch.Tensor, labels: torch.Tensor | None = None, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode the posterior mean of `image` (B, C, H, W): the autoencoder's reconstruction in [-1, 1]."""
        self.eval()
        image = image.to(self.device)
        with self.autocast():
            encoder_maps, _, _ = self.condition(source, labels)
            mu, _ = self.encoder(image, encoder_maps)
        return self.decode_latents(mu.float(), labels, source)

    def sample(
        self, count: int, labels: torch.Tensor | None = None, generator: Generator | None = None, **options
    ) -> torch.Tensor:
        """`count` images (count, C, H, W) in [-1, 1] decoded from z ~ N(0, I); class-conditional models take
        `labels` (count,) (default: cycling through the classes).

        Options: `z` (count, latent_dim) codes to decode instead of prior draws (latent interpolation walks
        linearly between two codes this way); `temperature` scales the prior draws (default 1).
        """
        self.require("sample")
        z, temperature = options.pop("z", None), float(options.pop("temperature", 1.0))
        if options:
            raise TypeError(f"{self.name}.sample got unknown options: {', '.join(options)}")
        labels = self.check_labels(labels, count)
        return self.decode_latents(self.prior_latents(count, generator, z, temperature), labels)

    def preview(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Paired tasks: source | output | target. Labelled tasks: real images | their reconstructions | samples
        for the same labels. The prior draws come from a fixed generator, so previews compare across steps."""
        generator = torch.Generator().manual_seed(0)
        if self.spec.kind == "paired":
            output = self.translate_batch(batch["source"], generator=generator)
            return {"input": batch["source"], "output": output.cpu(), "target": batch["target"]}
        image = batch["image"].to(self.device)
        labels = batch["label"].to(self.device) if self.conditional else None
        samples = self.sample(len(image), labels=labels, generator=generator)
        reconstruction = self.reconstruct(image, labels).cpu()
        return {"real": batch["image"], "reconstruction": reconstruction, "samples": samples.cpu()}


@register_model
class VAE(VariationalAutoencoder):
    """Unconditional image generation: decode z ~ N(0, I)."""

    name = "vae"
    config_class = VAEConfig
    task_kinds = frozenset({"labelled"})
    abilities = Abilities(samples=True, stochastic=True, interpolation="linear", temperature=True)
    purpose = "variational autoencoder for unconditional image generation"
    presets = {
        # Kingma & Welling 2013 (section 5, appendix C) scaled to a conv net: Bernoulli decoder (bce), the plain
        # ELBO (beta 1), latent size 20, minibatch 100, ~1e7 images seen. Adam replaces their Adagrad.
        "paper": {
            "data.task": "fashion-mnist",
            "data.image_size": 32,
            "net.reconstruction": "bce",
            "net.latent_dim": 20,
            "net.beta": 1.0,
            "net.lr": 1e-3,
            "train.batch_size": 100,
            "train.steps": 100_000,
        },
        # Fashion-MNIST 28 -> 32 px: a few minutes on 2 CPU cores.
        "quick": {
            "data.task": "fashion-mnist",
            "data.image_size": 32,
            "net.width": 32,
            "net.latent_dim": 32,
            "train.batch_size": 64,
            "train.steps": 2000,
            "train.sample_every": 500,
            "train.checkpoint_every": 500,
            "train.preview_count": 10,
        },
    }
    default_preset = "quick"


@register_model
class CVAE(VariationalAutoencoder):
    """Conditional VAE: translation conditioned on a source image (paired tasks), or generation conditioned on
    a class label (labelled tasks with classes; unconditional on tasks without)."""

    name = "cvae"
    config_class = VAEConfig
    task_kinds = frozenset({"paired", "labelled"})
    abilities = Abilities(
        translates=True, samples=True, class_conditional=True, stochastic=True, interpolation="linear", temperature=True
    )
    purpose = "conditional variational autoencoder (source image or class label)"
    presets = {
        # Kingma & Welling 2013 style on facades at 64 px: Gaussian decoder (l2, as their Frey Face model), the
        # plain ELBO (beta 1), latent size 20, minibatch 100. Adam replaces their Adagrad.
        "paper": {
            "data.image_size": 64,
            "net.reconstruction": "l2",
            "net.latent_dim": 20,
            "net.beta": 1.0,
            "net.lr": 1e-3,
            "train.batch_size": 100,
            "train.steps": 100_000,
        },
        # The seed report (000): its CVAE section 3.2 is an outline without settings, so this takes what the
        # report does give: section 3.1's data (facades at 256 px, resized to 300, randomly cropped, flipped;
        # the task is left to --task as in pix2pix's seed preset: `--task facades` for the real set),
        # appendix 3-1's KL to N(0, 1) (beta 1), the L1 pixel loss of eq. 5, and the budget and Adam settings of
        # its Table 3 (batch 1, 80,000 iterations, lr 2e-4, betas 0.5 / 0.999), shared by its other models.
        "seed": {
            "data.image_size": 256,
            "data.flip": True,
            "net.reconstruction": "l1",
            "net.beta": 1.0,
            "net.lr": 2e-4,
            "net.beta1": 0.5,
            "net.beta2": 0.999,
            "train.batch_size": 1,
            "train.steps": 80_000,
        },
        # facades-synth at 64 px, ~3.4M params: about 4 minutes on 2 CPU cores (0.15 s a step). Class-conditional
        # Fashion-MNIST wants its own size and budget: --size 32 --batch-size 64 --steps 3000 (about 5 minutes).
        "quick": {
            "data.task": "facades-synth",
            "data.image_size": 64,
            "net.width": 32,
            "net.latent_dim": 32,
            "train.batch_size": 16,
            "train.steps": 1500,
            "train.sample_every": 250,
            "train.checkpoint_every": 500,
        },
    }
    default_preset = "quick"

    @torch.no_grad()
    def translate_batch(self, source: torch.Tensor, generator: Generator | None = None, **options) -> torch.Tensor:
        """Target images (B, C', H, W) in [-1, 1] for sources (B, C, H, W): z ~ N(0, temperature^2 I) from
        `generator`, so different generators give different outputs. Options: `z` (B, latent_dim), `temperature`."""
        self.require("translate")
        z, temperature = options.pop("z", None), float(options.pop("temperature", 1.0))
        if options:
            raise TypeError(f"{self.name}.translate got unknown options: {', '.join(options)}")
        source = source.to(self.device)
        return self.decode_latents(self.prior_latents(len(source), generator, z, temperature), source=source)
