"""Variational autoencoders (Kingma & Welling 2013): `vae` generates images from z ~ N(0, I); `cvae` is the
conditional VAE (Sohn et al. 2015), conditioned on a source image (translation on paired tasks) or on a
class label (generation on labelled tasks with classes).

The loss is the negative ELBO per image, with a KL weight (beta-VAE, Higgins et al. 2017):
    loss = E_q[-log p(x | z, c)] + beta * KL(q(z | x, c) || N(0, I))
with the reconstruction term summed over the pixels of an image (C * H * W values) and the KL summed over
the latent dimensions; both are averaged over the batch. beta = 1 is then the plain ELBO: a Laplace (l1),
Gaussian (l2, variance 1/2) or Bernoulli (bce) decoder likelihood up to constants, whatever the image size.
`ssim_l1` replaces the likelihood by a perceptual distance (Zhao et al.'s SSIM + L1 mix, as Snell et al. 2017
trained VAEs with SSIM): no longer an ELBO, but it keeps the thin lines and edges that a pixel likelihood
averages into blur, which is what tells a coat from a pullover (the class-conditional CVAE's preset, README).

Sampling prior. Training pulls each posterior towards N(0, I), but the codes the decoder learned to draw from
(the aggregate posterior q(z | c) = E_x q(z | x, c) of each class) are not N(0, I): a class-conditional
encoder still puts class information into z, so a standard-normal draw decoded with label c often lands where
the decoder saw another class, or nothing (measured: 54% of Fashion-MNIST samples read as the requested class
against 74% for the decoder's reconstructions). With `net.sampling_prior=aggregate` (the default for
generation) the model fits a Gaussian to each class's aggregate posterior (the mean of mu, and of
mu mu^T + diag(sigma^2)) over the first `calibration_images` training images, under its current weights, and
samples from it: ex-post density estimation (Ghosh et al. 2020, section 4). The trainer refits it before each
preview and checkpoint (`calibrate`), as BatchNorm statistics are recalibrated; a running average during
training lagged too far behind the moving encoder (63.6% against 77.7% for the refit, same weights). The
training objective is unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from genlab.config import non_negative, positive, unit_interval
from genlab.metrics.pixel import SSIM_WINDOW, ssim_maps
from genlab.models.base import Abilities, GenerativeModel, register_model
from genlab.models.losses import gaussian_kl
from genlab.nn.vae import LabelConditioning, SourcePyramid, VAEDecoder, VAEEncoder, vae_depth
from genlab.utils import Generator, GenlabError, randn

ReconstructionKind = Literal["l1", "l2", "bce", "ssim_l1"]
RECONSTRUCTIONS: tuple[str, ...] = get_args(ReconstructionKind)
# Zhao et al. 2017 ("Loss functions for image restoration with neural networks"): the SSIM share of the mix.
SSIM_SHARE = 0.84
SamplingPrior = Literal["standard", "aggregate"]


@dataclass
class VAEConfig:
    """VAE / CVAE settings; defaults suit short CPU runs, the presets set the papers' and the seed's values."""

    latent_dim: int = positive(64)
    width: int = positive(32)  # channels at full resolution; doubles with each halving up to 8x
    label_dim: int = positive(16)  # class-label embedding size (class-conditional cvae only)
    beta: float = non_negative(1.0)  # KL weight; 1 = the plain ELBO (see the module docstring for the scales)
    reconstruction: ReconstructionKind = "l1"  # bce compares images in [0, 1]; ssim_l1: see reconstruction_loss
    lr: float = positive(1e-3)
    beta1: float = unit_interval(0.9, high_open=True)
    beta2: float = unit_interval(0.999, high_open=True)
    kl_warmup_steps: int = non_negative(0)  # linear KL annealing from 0 to beta over this many steps (0 = off)
    # LR: constant, then linear to zero from this fraction of the training budget on (steps, images or
    # minutes, so --minutes decays too); 1.0 = constant.
    lr_decay_start: float = unit_interval(1.0)
    # where generation draws z: a Gaussian fit of each class's aggregate posterior (see `calibrate`), or N(0, I)
    sampling_prior: SamplingPrior = "aggregate"


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, kind: ReconstructionKind) -> torch.Tensor:
    """-log p(target | z) up to constants, summed over C, H, W and averaged over the batch.

    `logits` are the decoder's pre-Tanh outputs (B, C, H, W): the image is tanh(logits) in [-1, 1].
    l1: sum |x_hat - x|; l2: sum (x_hat - x)^2; bce: sum of the binary cross-entropy between the images in
    [0, 1], (x + 1) / 2 against (x_hat + 1) / 2 = sigmoid(2 * logits) (computed from the logits, so stable).
    ssim_l1: sum of 0.84 (1 - SSIM) + 0.16 |x_hat - x| per pixel, Zhao et al. 2017's mix, with the SSIM map of
    genlab's metric (11x11 Gaussian window, borders reflected so every pixel has a value). Not a likelihood:
    SSIM compares local means, contrasts and structure, so it weighs the thin lines and edges that a pixel
    likelihood averages away (a VAE trained with it draws sharper images: Snell et al. 2017). Images need
    11 px or more.
    """
    logits, target = logits.float(), target.float()
    if kind == "l1":
        per_pixel = (torch.tanh(logits) - target).abs()
    elif kind == "l2":
        per_pixel = (torch.tanh(logits) - target).pow(2)
    elif kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(2.0 * logits, (target + 1.0) / 2.0, reduction="none")
    elif kind == "ssim_l1":
        output = torch.tanh(logits)
        ssim_map, _ = ssim_maps(output, target, data_range=2.0, border="reflect")  # (B, C, H, W)
        per_pixel = SSIM_SHARE * (1.0 - ssim_map) + (1.0 - SSIM_SHARE) * (output - target).abs()
    else:
        valid = ", ".join(RECONSTRUCTIONS)
        raise GenlabError(f"net.reconstruction={kind!r} is not a reconstruction loss (valid: {valid})")
    return per_pixel.flatten(1).sum(dim=1).mean()


def aggregate_moment_sums(
    mu: torch.Tensor, logvar: torch.Tensor, classes: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class sums of a batch of posteriors N(mu_i, diag sigma_i^2), to be added up over batches.

    Each posterior has E[z] = mu_i and E[z z^T] = mu_i mu_i^T + diag sigma_i^2, so the aggregate posterior of a
    class (their mixture) has moments sum E[z] / n and sum E[z z^T] / n.

    Args: mu, logvar (B, D); classes (B,) in 0..num_classes-1.
    Returns: counts (K,), sums of mu (K, D) and of E[z z^T] (K, D, D), float64.
    """
    mu, variance = mu.detach().double(), logvar.detach().double().exp()
    counts = torch.bincount(classes, minlength=num_classes).double()  # (K,)
    sums = torch.zeros(num_classes, mu.shape[1], dtype=torch.float64, device=mu.device).index_add_(0, classes, mu)
    outer = mu[:, :, None] * mu[:, None, :] + torch.diag_embed(variance)  # (B, D, D)
    second_sums = torch.zeros(num_classes, *outer.shape[1:], dtype=torch.float64, device=mu.device)
    return counts, sums, second_sums.index_add_(0, classes, outer)


def gaussian_factors(mean: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """A factor F_k with F_k F_k^T = Cov_k = second_k - mean_k mean_k^T for each class (K, D, D), float32.

    From the symmetric eigendecomposition with negative rounding clamped to 0, so a singular covariance is fine.
    """
    mean64, second64 = mean.double(), second.double()
    covariance = second64 - mean64[:, :, None] * mean64[:, None, :]
    covariance = 0.5 * (covariance + covariance.transpose(1, 2))
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    return (eigenvectors * eigenvalues.clamp_min(0.0).sqrt()[:, None, :]).float()


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
        if config.reconstruction not in RECONSTRUCTIONS:
            raise GenlabError(f"net.reconstruction={config.reconstruction!r} (valid: {', '.join(RECONSTRUCTIONS)})")
        if config.reconstruction == "ssim_l1" and spec.image_size < SSIM_WINDOW:
            raise GenlabError(
                f"net.reconstruction=ssim_l1 needs images of at least {SSIM_WINDOW} px (the SSIM window), "
                f"got data.image_size={spec.image_size}; use l1, l2 or bce"
            )
        if config.sampling_prior not in ("standard", "aggregate"):
            raise GenlabError(f"net.sampling_prior={config.sampling_prior!r} (valid: standard, aggregate)")
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
        if not self.translates_source:
            # The moments of each class's aggregate posterior (one "class" when unconditional), N(0, I) until
            # `calibrate` fits them; saved with the weights, so a resumed run and a loaded model sample alike.
            classes, dim = max(spec.num_classes, 1) if self.conditional else 1, config.latent_dim
            self.register_buffer("aggregate_mean", torch.zeros(classes, dim))
            self.register_buffer("aggregate_second", torch.eye(dim).repeat(classes, 1, 1))

    @property
    def calibration_images(self) -> int:
        """Training images the sampling prior is fitted on (none for translation, which samples N(0, I))."""
        return 0 if self.translates_source else 10_000

    @property
    def translates_source(self) -> bool:
        """Whether this model is conditioned on a source image (a cvae built for a paired task)."""
        return self.spec.kind == "paired"

    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one latent code z (without the batch dimension)."""
        return (self.config.latent_dim,)

    def sample_from_latents(self, latents: torch.Tensor, labels: torch.Tensor | None = None, **options) -> torch.Tensor:
        """Decode standard-normal noise (B, latent_dim) through the sampling prior: the walk of `genlab sample
        --interpolate` (linear for a VAE; `from_noise` is affine, so the walk stays linear in z)."""
        labels = self.check_labels(labels, len(latents))
        return self.sample(len(latents), labels=labels, z=self.from_noise(torch.as_tensor(latents), labels), **options)

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
        self.decay_learning_rates(self.config.lr_decay_start)
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
        self,
        count: int,
        generator: Generator | None,
        z: torch.Tensor | None,
        temperature: float,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z (count, latent_dim): the given codes, or noise eps ~ N(0, temperature^2 I) (sample i from generator i
        of a PerSampleGenerator) mapped through the sampling prior (`from_noise`)."""
        if z is None:
            noise = temperature * randn((count, *self.latent_shape()), generator, self.device)
            return self.from_noise(noise, labels)
        z = torch.as_tensor(z, dtype=torch.float32)
        if tuple(z.shape) != (count, *self.latent_shape()):
            raise GenlabError(f"z: expected latents shaped {(count, *self.latent_shape())}, got {tuple(z.shape)}")
        return z.to(self.device)

    def load_training_state(self, state: dict, weights_only: bool = False) -> None:
        """As the base class; a checkpoint written before genlab fitted the aggregate prior loads with the
        starting fit, N(0, I), and a warning."""
        networks = state["networks"]
        missing = [key for key in ("aggregate_mean", "aggregate_second") if hasattr(self, key) and key not in networks]
        if missing:
            warnings.warn(
                f"{self.name}: this checkpoint holds no fit of the aggregate posterior (it predates it); "
                "generation samples from N(0, I)",
                stacklevel=2,
            )
            start = {"aggregate_mean": torch.zeros_like(self.aggregate_mean),
                     "aggregate_second": torch.eye(self.config.latent_dim).expand_as(self.aggregate_second)}
            state = {**state, "networks": {**networks, **{key: start[key] for key in missing}}}
        super().load_training_state(state, weights_only)

    @torch.no_grad()
    def calibrate(self, batches) -> None:
        """Fit each class's aggregate posterior to the given (unjittered training) batches: the sampling prior.
        A class with no image in them keeps N(0, I)."""
        if self.translates_source:
            return
        self.eval()
        classes_count = self.aggregate_mean.shape[0]
        totals = None
        for batch in batches:
            image, _, labels = self.inputs(batch)
            with self.autocast():
                encoder_maps, _, _ = self.condition(None, labels)
                mu, logvar = self.encoder(image.to(self.device), encoder_maps)
            classes = labels if labels is not None else torch.zeros(len(mu), dtype=torch.long, device=mu.device)
            sums = aggregate_moment_sums(mu, logvar, classes.to(mu.device), classes_count)
            totals = sums if totals is None else tuple(a + b for a, b in zip(totals, sums))
        if totals is None:
            return
        counts, first, second = totals
        seen = counts > 0
        self.aggregate_mean[seen] = (first[seen] / counts[seen, None]).float()
        self.aggregate_second[seen] = (second[seen] / counts[seen, None, None]).float()

    @property
    def uses_aggregate_prior(self) -> bool:
        """Whether generation draws from the fit of the aggregate posterior (not for translation)."""
        return not self.translates_source and self.config.sampling_prior == "aggregate"

    def from_noise(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latent codes for standard-normal noise (B, latent_dim): the noise itself under the standard prior,
        mean_c + F_c noise under the aggregate one (class c = the label, or the one class when unconditional).
        An affine map, so a linear walk between two noises is a linear walk between their codes."""
        if not self.uses_aggregate_prior:
            return noise
        classes = labels if labels is not None else torch.zeros(len(noise), dtype=torch.long)
        classes = classes.to(self.device)
        factors = gaussian_factors(self.aggregate_mean, self.aggregate_second)  # (K, D, D)
        return self.aggregate_mean[classes] + (factors[classes] @ noise.to(self.device)[:, :, None]).squeeze(2)

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
        """`count` images (count, C, H, W) in [-1, 1] decoded from prior draws of z (the aggregate posterior's fit
        or N(0, I), see `net.sampling_prior`); class-conditional models take `labels` (count,) (default: cycling
        through the classes).

        Options: `z` (count, latent_dim) codes to decode as they are instead of prior draws; `temperature` scales
        the noise of the prior draws (default 1; 0 gives each class's mean code).
        """
        self.require("sample")
        z, temperature = options.pop("z", None), float(options.pop("temperature", 1.0))
        if options:
            raise TypeError(f"{self.name}.sample got unknown options: {', '.join(options)}")
        labels = self.check_labels(labels, count)
        return self.decode_latents(self.prior_latents(count, generator, z, temperature, labels), labels)

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
        # Fashion-MNIST has its own size and budget below (task_presets).
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
    # Class-conditional Fashion-MNIST at 32 px: 3000 steps of 64 (6-13 minutes on 2 CPU cores). The SSIM + L1
    # reconstruction keeps the thin lines that tell a coat from a pullover and a shirt from a T-shirt, which the
    # L1 likelihood blurred; a 128-d code at beta 0.1 holds what they need (about 250 nats), and the aggregate
    # prior keeps the samples near the codes the decoder learned (README, CVAE section: the sweep, 3 seeds).
    task_presets = {
        "quick": {
            "fashion-mnist": {
                "data.image_size": 32,
                "train.batch_size": 64,
                "train.steps": 3000,
                "net.reconstruction": "ssim_l1",
                "net.latent_dim": 128,
                "net.beta": 0.1,
                "train.sample_every": 500,
                "train.checkpoint_every": 500,
                "train.preview_count": 10,
            }
        }
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
