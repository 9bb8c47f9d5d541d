"""Latent diffusion (Rombach et al. 2022) by composition: a KL autoencoder, then the same diffusion code on its
scaled latents. `autoencoder` trains the autoencoder alone; `ldm` trains it as stage one (or loads one from
an autoencoder run) and then the diffusion model, frozen autoencoder and all, in one run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from genlab import checkpoint
from genlab.config import dataclass_from_dict, non_negative, positive, ranged, unit_interval
from genlab.data.tasks import TaskSpec
from genlab.models.base import Abilities, GenerativeModel, register_model
from genlab.models.diffusion import DiffusionConfig, DiffusionModel
from genlab.models.losses import gaussian_kl
from genlab.nn.autoencoder import KLAutoencoder, reconstruction_loss
from genlab.utils import GenlabError


@dataclass
class AutoencoderConfig:
    """The KL autoencoder and its training."""

    factor: int = ranged(4, 1, 64)  # spatial downsampling: 4 or 8
    width: int = positive(64)
    latent_channels: int = positive(4)
    # KL weight relative to the per-element reconstruction loss (LDM's 1e-6 keeps latents near-deterministic).
    kl_weight: float = non_negative(1e-6)
    reconstruction: Literal["l1", "l2"] = "l1"
    lr: float = positive(1e-3)


def image_field(spec) -> str:
    """The images an autoencoder learns: garments of a labelled task, photos (targets) of a paired one."""
    return "image" if spec.kind == "labelled" else "target"


def autoencoder_step(model: GenerativeModel, autoencoder: KLAutoencoder, images: torch.Tensor, config) -> dict:
    """One reconstruction + KL step of the autoencoder, on the model's "autoencoder" optimiser."""
    autoencoder.train()
    with model.autocast():
        reconstruction, mu, logvar = autoencoder(images)
    rec = reconstruction_loss(reconstruction, images, config.reconstruction)
    kl = gaussian_kl(mu.float(), logvar.float()) / images[0].numel()  # per image element, as LDM's weight
    model.optimize(rec + config.kl_weight * kl, "autoencoder")
    return {"ae_reconstruction": rec.item(), "ae_kl": kl.item()}


@register_model
class Autoencoder(GenerativeModel):
    """Trains the latent-diffusion autoencoder on a task's images (use its run as `ldm`'s net.autoencoder_run)."""

    name = "autoencoder"
    config_class = AutoencoderConfig
    task_kinds = frozenset({"labelled", "paired"})
    abilities = Abilities()  # it reconstructs; it neither samples nor translates
    purpose = "the latent-diffusion autoencoder: it only reconstructs images; use its run as ldm's net.autoencoder_run"
    presets = {
        "quick": {
            "data.image_size": 32,
            "train.batch_size": 32,
            "train.steps": 1500,
            "net.width": 32,
            "train.sample_every": 500,
            "train.checkpoint_every": 500,
        },
        "paper": {"train.batch_size": 16, "train.steps": 100_000, "net.lr": 4.5e-6 * 16},
    }

    def __init__(self, config: AutoencoderConfig, spec) -> None:
        super().__init__(config, spec)
        self.autoencoder = KLAutoencoder(spec.target_channels, config.latent_channels, config.factor, config.width)
        self.optimizers = {"autoencoder": torch.optim.Adam(self.autoencoder.parameters(), lr=config.lr)}

    def training_step(self, batch):
        return autoencoder_step(self, self.autoencoder, batch[image_field(self.spec)], self.config)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: the autoencoder's deterministic reconstruction."""
        self.autoencoder.eval()
        return self.autoencoder.decode(self.autoencoder.encode(images.to(self.device))[0]).clamp(-1, 1)

    def preview(self, batch):
        images = batch[image_field(self.spec)]
        return {"real": images, "reconstruction": self.reconstruct(images)}


@dataclass
class LatentDiffusionConfig(DiffusionConfig):
    """Diffusion settings plus the autoencoder's (prefixed ae_) and how stage one is obtained."""

    ae_factor: int = ranged(4, 1, 64)
    ae_width: int = positive(64)
    ae_latent_channels: int = positive(4)
    ae_kl_weight: float = non_negative(1e-6)
    ae_reconstruction: Literal["l1", "l2"] = "l1"
    ae_lr: float = positive(1e-3)
    # Stage one inside this run: a number of steps, or None for a fraction of the training budget (so a --minutes
    # or --images budget always leaves time for the diffusion stage); 0 when the autoencoder comes from a run.
    autoencoder_steps: int | None = non_negative(None)
    autoencoder_fraction: float = unit_interval(0.3)
    autoencoder_run: str | None = None  # an `autoencoder` run directory to take the (frozen) autoencoder from

    def autoencoder_config(self) -> AutoencoderConfig:
        return AutoencoderConfig(
            self.ae_factor,
            self.ae_width,
            self.ae_latent_channels,
            self.ae_kl_weight,
            self.ae_reconstruction,
            self.ae_lr,
        )


@register_model
class LatentDiffusion(DiffusionModel):
    """Diffusion on autoencoder latents: class-conditional generation or image-conditional translation
    (the source resized to the latent size and concatenated, like cddim)."""

    name = "ldm"
    config_class = LatentDiffusionConfig
    task_kinds = frozenset({"labelled", "paired"})
    # Generation on labelled tasks, translation on paired ones (`can` checks the task kind).
    abilities = Abilities(
        translates=True,
        samples=True,
        class_conditional=True,
        stochastic=True,
        ema=True,
        sampler_options=True,
        interpolation="slerp",
    )
    purpose = "latent diffusion"
    presets = {
        "quick": {
            "data.image_size": 64,
            "train.batch_size": 16,
            "train.steps": 3000,
            "net.ae_width": 32,
            "train.sample_every": 500,
            "train.checkpoint_every": 500,
        },
        # LDM-4 as in Rombach et al.: f = 4, 3 latent channels, lr 1e-4 on the diffusion model.
        "paper": {
            "data.image_size": 256,
            "net.ae_factor": 4,
            "net.ae_latent_channels": 3,
            "net.network": "ddpm",
            "net.lr": 1e-4,
            "train.batch_size": 16,
            "train.steps": 400_000,
            "net.autoencoder_steps": 100_000,
        },
    }

    def __init__(self, config: LatentDiffusionConfig, spec) -> None:
        if spec.image_size % config.ae_factor:
            raise GenlabError(f"net.ae_factor {config.ae_factor} must divide data.image_size {spec.image_size}")
        if config.autoguide_at is not None:
            # The fraction would count the autoencoder's stage too, and the guide could be taken before the
            # diffusion stage trained at all.
            raise GenlabError("net.autoguide_at: ldm keeps no autoguidance network (ddpm and cddim do); leave it unset")
        if config.value_prior:
            # Its samples are latents, which have no 8-bit levels; the decoder's images are not sampled.
            raise GenlabError("net.value_prior: ldm samples latents, which have no pixel levels (ddpm and cddim "
                              "take it); leave it off")
        super().__init__(config, spec)
        ae_config = config.autoencoder_config()
        self.autoencoder = KLAutoencoder(
            spec.target_channels, ae_config.latent_channels, ae_config.factor, ae_config.width
        )
        self.optimizers["autoencoder"] = torch.optim.Adam(self.autoencoder.parameters(), lr=ae_config.lr)
        # 1 / std of the latents, measured on the first diffusion batch (CompVis `scale_by_std`); 0 = not yet.
        self.register_buffer("latent_scale", torch.zeros(()))
        # The step at which the diffusion stage began (-1: not yet): saved, so a resume never re-decides it.
        self.register_buffer("stage_two_step", torch.tensor(-1, dtype=torch.long))
        self.stage_one_steps = config.autoencoder_steps
        if config.autoencoder_run:
            self._load_autoencoder(config.autoencoder_run)
            self.stage_one_steps = 0

    def _load_autoencoder(self, run_dir: str) -> None:
        """Take the (frozen) autoencoder of an `autoencoder` run, read from its checkpoint alone."""
        path = checkpoint.checkpoint_dir(checkpoint.require_run_dir(run_dir)) / checkpoint.LAST
        document = checkpoint.load_checkpoint(path)
        if document.get("model") != Autoencoder.name:
            kind = document.get("model")
            raise GenlabError(f"net.autoencoder_run: {run_dir} is a {kind} run, not an autoencoder run")
        stored = dataclass_from_dict(AutoencoderConfig, document["config"]["net"], f"{path} (stored config): net")
        model = Autoencoder(stored, TaskSpec.from_dict(document["spec"]))
        model.load_training_state(document["state"], weights_only=True)
        theirs, ours = model.config, self.config.autoencoder_config()
        for key in ("factor", "width", "latent_channels"):
            if getattr(theirs, key) != getattr(ours, key):
                raise GenlabError(
                    f"net.autoencoder_run: {run_dir} has {key}={getattr(theirs, key)}, this run "
                    f"asks for net.ae_{key}={getattr(ours, key)}"
                )
        self.autoencoder = model.autoencoder

    def unet_size_and_channels(self, spec):
        size = spec.image_size // self.config.ae_factor
        cond_channels = spec.source_channels if spec.kind == "paired" else 0
        classes = spec.num_classes if spec.kind == "labelled" and self.config.class_conditional else 0
        return size, self.config.ae_latent_channels, cond_channels, classes

    @property
    def latent_size(self) -> int:
        return self.spec.image_size // self.config.ae_factor

    def end_step(self) -> None:
        if self.in_stage_one():  # the denoiser's optimiser has not stepped yet, so its LR warm-up waits too
            self.step += 1
            return
        super().end_step()

    def in_stage_one(self) -> bool:
        """Whether the autoencoder is still training: before net.autoencoder_steps, or (None) until
        net.autoencoder_fraction of the trainer's budget is spent."""
        if self.stage_two_step >= 0:
            return self.step < int(self.stage_two_step)
        if self.stage_one_steps is not None:
            return self.step < self.stage_one_steps
        return self.budget_progress < self.config.autoencoder_fraction

    def check_budget(self, step_budget: int | None) -> None:
        if self.stage_one_steps and step_budget is not None and step_budget <= self.stage_one_steps:
            raise GenlabError(
                f"ldm: the budget of {step_budget} steps ends before the diffusion stage, which starts after "
                f"net.autoencoder_steps={self.stage_one_steps}; raise the budget, lower net.autoencoder_steps, or "
                "set it to null (stage one then takes net.autoencoder_fraction of the budget)"
            )
        if step_budget is not None:
            stage_one = self.stage_one_steps
            if stage_one is None:
                stage_one = round(self.config.autoencoder_fraction * step_budget)
            super().check_budget(step_budget - stage_one)

    @property
    def ema_updates(self) -> int:
        """The weight average starts with the diffusion stage: counting stage one's steps too would start it at a
        decay near 1, keeping the random initial weights in it."""
        return self.step - int(self.stage_two_step) if self.stage_two_step >= 0 else 0

    # --- training ---------------------------------------------------------------------------------------------
    def training_step(self, batch):
        images = batch[image_field(self.spec)]
        if not self.in_stage_one() and self.stage_two_step < 0:
            self.stage_two_step.fill_(self.step)
        if self.in_stage_one():
            return autoencoder_step(self, self.autoencoder, images, self.config.autoencoder_config())
        self.autoencoder.eval().requires_grad_(False)  # frozen from stage two on
        return super().training_step(batch)

    def inputs(self, batch):
        with torch.no_grad():
            mu, logvar = self.autoencoder.encode(batch[image_field(self.spec)])
            latents = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            if self.latent_scale == 0:
                self.latent_scale.fill_(1.0 / latents.float().std().clamp(min=1e-6))
            latents = latents * self.latent_scale
        if self.spec.kind == "paired":
            return latents, self._source_condition(batch["source"])
        return latents, self.training_labels(batch["label"]) if self.conditional else None

    def _source_condition(self, source: torch.Tensor) -> torch.Tensor:
        size = (self.latent_size, self.latent_size)
        return F.interpolate(source, size=size, mode="bilinear", align_corners=False, antialias=True)

    # --- sampling ---------------------------------------------------------------------------------------------
    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.latent_scale == 0:
            raise GenlabError("this ldm run has not reached its diffusion stage yet; train it longer")
        return self.autoencoder.decode(latents / self.latent_scale).clamp(-1.0, 1.0)

    def _latent_shape(self, count: int) -> tuple[int, int, int, int]:
        return (count, self.config.ae_latent_channels, self.latent_size, self.latent_size)

    def sample(self, count, labels=None, generator=None, **options):
        self.require("sample")
        latents = self.sample_items(count, self._latent_shape(1)[1:], labels, generator, options)
        return self._decode(latents)

    def latent_shape(self) -> tuple[int, ...]:
        return self._latent_shape(1)[1:]

    def translate_batch(self, source, generator=None, **options):
        self.require("translate")
        self.check_sampling_options(options)  # an image condition is used in full: no guidance to set
        cond = self._source_condition(source.to(self.device))
        return self._decode(self.generate(self._latent_shape(len(source)), cond, None, generator, **options))

    def preview(self, batch):
        images = batch[image_field(self.spec)]
        if self.in_stage_one() or self.latent_scale == 0:
            with torch.no_grad():
                self.autoencoder.eval()
                reconstruction = self.autoencoder.decode(self.autoencoder.encode(images)[0]).clamp(-1, 1)
            return {"real": images, "reconstruction (stage one)": reconstruction}
        generator = torch.Generator().manual_seed(0)
        if self.spec.kind == "paired":
            output = self.translate_batch(batch["source"], generator, steps=self.preview_steps)
            return {"input": batch["source"], "output": output, "target": images}
        labels = batch["label"] if self.conditional else None
        return {"real": images, "samples": self.sample(len(images), labels, generator, steps=self.preview_steps)}
