"""Diffusion families: `ddpm` (unconditional or class-conditional with classifier-free guidance) and `cddim`
(image-conditional translation, the source concatenated to x_t as in the seed report's conditional DDIM).

DDIM is a sampler, not a family: a `ddpm` run samples with `sampler="ddim"` (the default), any step count
and eta. The network is a plain `DiffusionUNet(x_t, t, cond)`; the process (schedule, loss) and the samplers
live in `genlab.diffusion` and are handed the network.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch

from genlab.config import non_negative, positive, ranged, unit_interval
from genlab.diffusion.decode import decode_levels, level_histogram, posterior_mean_table
from genlab.diffusion.process import (
    diffusion_loss,
    log_normal_level_probabilities,
    model_output_to_x0_eps,
    q_sample,
)
from genlab.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    check_noise_interval,
    evenly_spaced_timesteps,
    interval_guidance_scales,
    sample_loop,
)
from genlab.diffusion.schedules import NoiseSchedule
from genlab.models.base import Abilities, GenerativeModel, linear_decay, option_name, register_model
from genlab.nn.diffusion_unet import (
    DiffusionUNet,
    DiffusionUNetConfig,
    ddpm_unet_config,
    quick_unet_config,
    seed_unet_config,
)
from genlab.nn.ema import averaged_copy, ema_decay, ema_update, first_capped_update, power_ema_gamma
from genlab.nn.embeddings import drop_labels
from genlab.utils import GenlabError, randn


@dataclass
class DiffusionConfig:
    """Diffusion settings. Defaults suit short CPU runs; the presets set the papers' values."""

    network: Literal["quick", "ddpm", "seed"] = "quick"  # quick: ~2M params; ddpm: Ho et al.; seed: table 4
    base_width: int | None = positive(None)  # None: the network preset's
    channel_mults: tuple[int, ...] | None = ranged(None, 1, 64)
    num_res_blocks: int | None = positive(None)
    dropout: float | None = unit_interval(None, high_open=True)
    schedule: Literal["linear", "cosine", "cosine-angle"] = "linear"
    timesteps: int = ranged(1000, 2, 100_000)
    prediction: Literal["eps", "x0", "v"] = "eps"
    class_conditional: bool = True  # for labelled tasks with classes; False trains an unconditional model
    # labels replaced by the null label this often, so one net learns both (CFG)
    label_dropout: float = unit_interval(0.1, high_open=True)
    optimizer: Literal["adam", "adamw"] = "adam"
    # 1e-3 with warm-up trains a small net in a few thousand steps; DDPM's 2e-4 is for 800k-step runs.
    lr: float = positive(1e-3)
    weight_decay: float = non_negative(0.0)
    warmup_steps: int = non_negative(200)  # linear LR warm-up keeps the high LR from blowing up the first steps
    # then constant until this fraction of the training budget (steps, images or minutes, so --minutes decays
    # too), and linearly to zero at its end; 1.0 = constant after the warm-up.
    lr_decay_start: float = unit_interval(1.0)
    grad_clip: float | None = positive(1.0)
    # Min-SNR-gamma loss weighting (Hang et al. 2023; they use gamma 5): None = DDPM's unweighted L_simple.
    min_snr_gamma: float | None = positive(None)
    # The noise levels trained on: None = t uniform over the T levels (DDPM); (mean, std) = ln sigma ~ N(mean,
    # std^2) put on the T levels (EDM's log-normal, Karras et al. 2022: (-1.2, 1.2) for data of std 0.5); the
    # std must also be > 0. On the ddpm quick preset, (0, 1.5) lifted the worst class on 2 seeds (89% vs 78%
    # and 84%) and (1, 1.5) on 3 (86/90/83% vs 78/84/72%), but the domain FID went both ways for each (1, 1.5:
    # 6.17/6.33/7.65 vs 5.99/7.96/6.82): off by default (README). cddim on edges2fashion trains with (0.5, 1.0):
    # (0.5, 1.5) lowered its domain FID on 3 seeds of 3, and the narrower width kept that FID at a weaker
    # autoguidance, with higher SSIM and PSNR (its task refinement below).
    log_sigma_normal: tuple[float, float] | None = ranged(None, -10, 10)
    # Self-conditioning (Chen et al. 2023, "Analog Bits"): the denoiser also reads its own clean-image estimate,
    # from a gradient-free first pass on half the training batches and from the previous step when sampling.
    # Half the steps run one more forward pass: 1.14x the step time on the ddpm quick preset, where at equal wall
    # time its domain FID lost on 2 seeds of 3 (6.11/5.70/7.68 vs 5.99/7.96/6.82) while lifting the worst class's
    # floor (79% vs 72%): off by default (README, "DDPM: self-conditioning").
    self_condition: bool = False
    # EMA of the weights, used for sampling: the power-function average of EDM2 (Karras et al. 2024), decay
    # (1 - 1/(n+1))^(gamma+1) at update n, which weighs the weights of training time t by t^gamma. ema_length is
    # that average's std as a fraction of the training done, so it means the same at every budget (a fixed
    # 0.9999 would stay near the initialisation for a CPU-sized run). ema_decay caps the decay (None: no cap);
    # with ema_warmup false the decay is ema_decay from the first update (Ho et al.).
    ema_length: float = ranged(0.09, 0, 0.28, low_open=True)
    ema_decay: float | None = unit_interval(None, high_open=True)  # below 1: a decay of 1 never moves it
    ema_warmup: bool = True
    # Sampling defaults (each can be overridden per call): DDIM-50 is ~20x faster than DDPM-1000.
    sampler: Literal["ddpm", "ddim"] = "ddim"
    sample_steps: int = positive(50)
    eta: float = unit_interval(0.0)
    # classifier-free guidance (class-conditional only); 1 = plain conditional
    guidance_scale: float = non_negative(3.0)
    # Guidance only where the noise level sigma = sqrt((1 - abar) / abar) lies in (low, high] (Kynkaanniemi
    # et al. 2024), plain conditional elsewhere; None = at every level.
    guidance_interval: tuple[float, float] | None = non_negative(None)
    ddpm_variance: Literal["beta", "posterior"] = "beta"
    # Autoguidance (Karras et al. 2024): keep a frozen copy of the weight average as it stands when this fraction
    # of the training budget is spent, a weaker version of the final network to guide sampling with; None = none.
    autoguide_at: float | None = ranged(None, 0, 1, low_open=True, high_open=True)
    # The autoguidance weight w when sampling (1 = none; needs a run trained with autoguide_at): the output is
    # cond + (guidance_scale - 1) (cond - uncond) + (w - 1) (cond - guide), at every level.
    autoguidance: float = ranged(1.0, 1)
    preview_steps: int = positive(20)  # DDIM steps for the training preview grids (cheap)
    # Read each pixel of a sample under the training images' histogram of 8-bit levels (diffusion/decode.py):
    # the posterior mean of its level given the sample's, with the error std the network's x0 estimate has at
    # the sampler's last level (measured at each checkpoint: the histogram on the first 1024 training images,
    # the error on 256 of them). Where the data has a point mass (a black background) it takes off the haze of
    # 1-8 levels a sampled image carries there; elsewhere it changes nothing. ddpm and cddim (pixels), not ldm.
    # Measured, not universal: cddim's garments 0.50-0.65 -> 0.31-0.32 domain FID (3 seeds), the fashion-mnist
    # DDPM 1.13 -> 1.66 (seed 0), so it is on only in the garment refinement (README).
    value_prior: bool = False


class DiffusionModel(GenerativeModel):
    """What ddpm and cddim share: the network and its EMA copy, the schedule, the loss and the samplers."""

    config: DiffusionConfig
    # DDIM sampling on 2 CPU cores, quick U-Net at 32 px: 1.28-1.38x the NCHW rate at batch 64, 1.21-1.31x at 8.
    inference_channels_last = True

    def __init__(self, config: DiffusionConfig, spec) -> None:
        if config.guidance_interval is not None:
            try:
                check_noise_interval(config.guidance_interval)
            except ValueError as error:
                raise GenlabError(f"net.guidance_interval: {error}") from None
        super().__init__(config, spec)
        if not config.ema_warmup and config.ema_decay is None:
            raise GenlabError("net.ema_warmup false keeps the decay at net.ema_decay from the first step: set one")
        self.network = DiffusionUNet(self.unet_config(config, spec))
        self.ema_gamma = power_ema_gamma(config.ema_length)
        if self.guides_an_untrained_null_label(config.guidance_scale):
            raise GenlabError(
                f"net.guidance_scale={config.guidance_scale:g} needs net.label_dropout > 0: guidance steers away from "
                "the null label's prediction, which only labels dropped in training teach; set "
                "net.guidance_scale=1 or a label dropout such as 0.1"
            )
        self.ema_network = averaged_copy(self.network)
        self.guide_network = None if config.autoguide_at is None else averaged_copy(self.network)
        # Whether guide_network holds the average yet (saved with the weights, so a resumed run knows).
        self.register_buffer("guide_taken", torch.tensor(False), persistent=config.autoguide_at is not None)
        if config.autoguidance != 1 and config.autoguide_at is None:
            raise GenlabError(
                f"net.autoguidance={config.autoguidance:g} needs a guide network: set net.autoguide_at (e.g. 0.25, "
                "the weight average a quarter of the way through training) or net.autoguidance=1"
            )
        self.schedule = NoiseSchedule(config.schedule, config.timesteps)
        # The value prior's statistics (calibrate); saved with the weights when net.value_prior is on, so a
        # loaded run decodes as it was scored. All zeros: not measured yet, nothing decoded.
        channels = self.network.config.out_channels
        self.register_buffer("value_histogram", torch.zeros(channels, 256), persistent=config.value_prior)
        self.register_buffer("value_error_std", torch.zeros(()), persistent=config.value_prior)
        self.level_probabilities = None
        if config.log_sigma_normal is not None:
            try:
                levels = log_normal_level_probabilities(self.schedule, *config.log_sigma_normal)
            except ValueError as error:
                raise GenlabError(f"net.log_sigma_normal: {error} (its second value)") from None
            self.level_probabilities = levels.float()
        optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        optimizer = optimizer_class(self.network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.optimizers = {"network": optimizer}
        warmup = max(1, config.warmup_steps)
        # The factor for step n + 1 is computed after step n, from the budget spent when step n began (the
        # trainer sets budget_progress before each step), so it is the same in a resumed run.
        self.schedulers = {
            "network": torch.optim.lr_scheduler.LambdaLR(
                optimizer,
                lambda n: min(1.0, (n + 1) / warmup) * linear_decay(self.budget_progress, config.lr_decay_start),
            )
        }

    def sampler_defaults(self) -> dict[str, Any]:
        config = self.config
        steps = config.timesteps if config.sampler == "ddpm" else config.sample_steps
        defaults = {"sampler": config.sampler, "steps": steps, "eta": config.eta}
        if self.conditional:
            defaults["guidance_scale"] = config.guidance_scale
            if config.guidance_interval is not None:
                defaults["guidance_interval"] = config.guidance_interval
        if self.guide_network is not None:
            defaults["autoguidance"] = self.default_autoguidance
        return defaults

    @property
    def default_autoguidance(self) -> float:
        """net.autoguidance once training has taken the guide network; 1 (none) before, as in early previews."""
        return self.config.autoguidance if bool(self.guide_taken) else 1.0

    def sampler_record(self, given: dict[str, Any]) -> dict[str, Any]:
        record = super().sampler_record(given)
        if record.get("sampler") == "ddpm":
            record.pop("eta", None)  # DDIM's, unused
            if "steps" not in given:
                record["steps"] = self.config.timesteps  # the ancestral sampler runs every level by default
        if self.decodes_values:
            record["value_prior_error_std"] = round(float(self.value_error_std), 4)  # the outputs were decoded
        return record

    def check_sampling_options(self, options: dict[str, Any], flags: bool = False) -> None:
        super().check_sampling_options(options, flags)
        if options.get("guidance_scale") is not None and self.guides_an_untrained_null_label(options["guidance_scale"]):
            raise GenlabError(
                f"{option_name('guidance_scale', flags)}: this run was trained with net.label_dropout=0, so its null "
                "label (what guidance steers away from) was never trained; sample with guidance 1"
            )
        autoguidance = options.get("autoguidance")
        if autoguidance is not None:
            name = option_name("autoguidance", flags)
            if not autoguidance >= 1:
                raise GenlabError(f"{name} must be 1 (none) or more, got {autoguidance}")
            if autoguidance != 1 and self.guide_network is None:
                raise GenlabError(
                    f"{name}: this run keeps no guide network (it was trained without net.autoguide_at); sample "
                    "with autoguidance 1, or train with --set net.autoguide_at=0.25"
                )
        sampler = options.get("sampler") or self.config.sampler
        if options.get("eta") is not None and sampler == "ddpm":
            # eta is DDIM's noise level; the ancestral DDPM sampler has its own (net.ddpm_variance)
            name = option_name("eta", flags)
            raise GenlabError(f"{name}: the ddpm sampler takes no eta (DDIM's); leave it out or sample with ddim")

    def guides_an_untrained_null_label(self, guidance_scale: float) -> bool:
        """Whether guiding at `guidance_scale` would steer from a null label that no dropped label trained."""
        return guidance_scale != 1 and self.conditional and self.config.label_dropout == 0

    def sample_from_latents(self, latents, labels=None, **options):
        """Images from given x_T (pixels for ddpm, latents for ldm) with DDIM eta 0 (deterministic), so a walk
        between codes is smooth."""
        options.update(sampler="ddim", eta=0.0)
        return self.sample(len(latents), labels=labels, x_T=latents, **options)

    @property
    def preview_steps(self) -> int:
        """DDIM steps of the preview grids (never more than the schedule has)."""
        return min(self.config.preview_steps, self.config.timesteps)

    # --- what differs between the families -----------------------------------------------------------------
    def unet_size_and_channels(self, spec) -> tuple[int, int, int, int]:
        """(image size, image channels, condition channels, classes) of the denoiser."""
        raise NotImplementedError

    def inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x0, cond) of a training batch (labels with their guidance dropout)."""
        return self.clean_inputs(batch)

    def clean_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x0, cond) of a batch as it is: no label dropout, no draw from any random stream."""
        raise NotImplementedError

    def unet_config(self, config: DiffusionConfig, spec) -> DiffusionUNetConfig:
        size, channels, cond_channels, classes = self.unet_size_and_channels(spec)
        if config.network == "seed":
            unet = seed_unet_config(channels, cond_channels, size, classes)
        elif config.network == "ddpm":
            unet = ddpm_unet_config(channels, size, cond_channels, classes)
        else:
            unet = quick_unet_config(channels, size, cond_channels, classes)
        overrides: dict[str, Any] = {
            key: getattr(config, key)
            for key in ("base_width", "channel_mults", "num_res_blocks", "dropout")
            if getattr(config, key) is not None
        }
        if config.self_condition:
            overrides["in_channels"] = 2 * unet.in_channels  # x_t and the clean-image estimate beside it
        unet = DiffusionUNetConfig(**{**unet.__dict__, **overrides, "num_timesteps": config.timesteps})
        # Changed channel_mults change the level sizes: keep attention only where a level still exists.
        level_sizes = {unet.resolution(level) for level in range(unet.levels)}
        attention = tuple(size for size in unet.attention_resolutions if size in level_sizes)
        unet = DiffusionUNetConfig(**{**unet.__dict__, "attention_resolutions": attention})
        unet.validate()
        return unet

    # --- training ---------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.network.train()
        x0, cond = self.inputs(batch)
        with self.autocast():
            losses = diffusion_loss(
                self.network,
                self.schedule,
                x0,
                cond,
                self.config.prediction,
                min_snr_gamma=self.config.min_snr_gamma,
                level_probabilities=self.level_probabilities,
                self_condition=self.config.self_condition,
            )
        self.optimize(losses["loss"], "network", max_grad_norm=self.config.grad_clip)
        config = self.config
        ema_update(self.ema_network, self.network, self.average_decay(self.ema_updates))
        if self.guide_network is not None and not self.guide_taken and self.budget_progress >= config.autoguide_at:
            self.guide_network.load_state_dict(self.ema_network.state_dict())
            self.guide_taken.fill_(True)
        return {"loss": losses["loss"].item(), "image_loss": losses["image_loss"].item()}

    def average_decay(self, update: int) -> float:
        """The decay of the weight average's update number `update` (0-based): the power function's, capped at
        net.ema_decay, or net.ema_decay throughout without the warm-up."""
        config = self.config
        return ema_decay(update, self.ema_gamma, config.ema_decay) if config.ema_warmup else config.ema_decay

    @property
    def ema_updates(self) -> int:
        """Updates of the weight average before this one: the steps trained so far (ldm: of its diffusion stage)."""
        return self.step

    def check_budget(self, step_budget: int | None) -> None:
        config = self.config
        if step_budget is None or config.ema_decay is None or not config.ema_warmup:
            return
        capped_from = first_capped_update(self.ema_gamma, config.ema_decay)
        if capped_from >= step_budget:
            warnings.warn(
                f"net.ema_decay={config.ema_decay:g} changes nothing in this run: the power-function average's decay "
                f"stays below it until update {capped_from}, after the budget's {step_budget} steps; "
                f"net.ema_length={config.ema_length:g} alone sets the average's width here",
                stacklevel=2,
            )

    def sampling_levels(self, sampler: str, steps: int | None) -> list[int]:
        """The descending levels `sampler` visits in `steps` steps (None: DDPM every level, DDIM net.sample_steps)."""
        config = self.config
        steps = steps or (config.timesteps if sampler == "ddpm" else config.sample_steps)
        if not 1 <= steps <= config.timesteps:
            raise GenlabError(f"sampling steps must be between 1 and {config.timesteps}, got {steps}")
        return evenly_spaced_timesteps(config.timesteps, steps)

    # --- the value prior (net.value_prior) --------------------------------------------------------------------
    # The value prior's error is measured on the first 256 of the calibration images (262k pixels at 32 px; the
    # whole calibration takes about 0.5 s per checkpoint on 2 CPU cores, 19 times in a 15-minute garment run);
    # its histogram, which costs next to nothing, on all 1024.
    value_error_images = 256

    @property
    def calibration_images(self) -> int:
        """Training images the value prior's histogram is measured on (none when it is off)."""
        return 1024 if self.config.value_prior else 0

    def calibrate(self, batches) -> None:
        """The value prior's statistics under the current weight average: the training images' histogram of
        levels, and the RMS error (in levels) of the average's x0 estimate at the last level the run's default
        sampler visits, from the first `value_error_images` of them noised to that level (fixed noise, so the
        same weights measure alike)."""
        if not self.config.value_prior:
            return
        network = self.ema_network.eval()
        config = self.config
        # DDIM's net.sample_steps may exceed a short schedule's T (a sampling call then names its steps)
        steps = min(config.sample_steps, config.timesteps) if config.sampler == "ddim" else None
        last_level = self.sampling_levels(config.sampler, steps)[-1]
        generator = torch.Generator().manual_seed(0)  # a CPU one: the same noise on every device
        histogram, squared_error, count, measured = torch.zeros_like(self.value_histogram), 0.0, 0, 0
        for batch in batches:
            x0, cond = self.clean_inputs(batch)
            x0, cond = x0.to(self.device), None if cond is None else cond.to(self.device)
            histogram += level_histogram(x0).to(histogram)
            if measured >= self.value_error_images:
                continue
            keep = min(len(x0), self.value_error_images - measured)
            x0, cond = x0[:keep], None if cond is None else cond[:keep]
            measured += keep
            t = torch.full((len(x0),), last_level, device=self.device, dtype=torch.long)
            x_t = q_sample(self.schedule, x0, t, randn(x0.shape, generator, self.device))
            with self.autocast():
                output = network(x_t, t, cond)
            x0_estimate, _ = model_output_to_x0_eps(self.schedule, output.float(), x_t, t, config.prediction)
            squared_error += float((x0_estimate.clamp(-1, 1) - x0).mul(127.5).square().sum())
            count += x0.numel()
        if count:
            self.value_histogram.copy_(histogram)
            # at least half a level, the quantisation's own error: a table needs an error std above 0
            self.value_error_std.fill_(max(math.sqrt(squared_error / count), 0.5))

    @property
    def decodes_values(self) -> bool:
        """Whether samples are read under the value prior: net.value_prior is on and its statistics measured."""
        return self.config.value_prior and bool(self.value_histogram.sum() > 0)

    def decoded(self, images: torch.Tensor) -> torch.Tensor:
        """Samples in [-1, 1] read under the value prior (net.value_prior, once measured); as they are else."""
        if not self.decodes_values:
            return images
        table = posterior_mean_table(self.value_histogram.double().cpu(), float(self.value_error_std))
        return decode_levels(images, table)

    # --- class conditioning -----------------------------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        """Whether the denoiser takes class labels (then the null label `num_classes` means "no class")."""
        return self.network.config.num_classes > 0

    def training_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels with classifier-free-guidance dropout: each replaced by the null label with label_dropout."""
        return drop_labels(labels, self.spec.num_classes, self.config.label_dropout)

    def sample_items(self, count: int, item_shape: tuple[int, ...], labels, generator, options: dict) -> torch.Tensor:
        """Generate `count` items of `item_shape`, class-conditioned (with guidance) when the model is conditional.

        Labels default to cycling through the classes; they are checked against the task's classes.
        """
        self.check_sampling_options(options)
        guidance = options.pop("guidance_scale", self.config.guidance_scale)
        interval = options.pop("guidance_interval", self.config.guidance_interval)
        cond = self.check_labels(labels, count)
        null = None if cond is None else torch.full_like(cond, self.spec.num_classes)
        guidance = guidance if cond is not None else 1.0
        return self.generate(
            (count, *item_shape), cond, null, generator, guidance_scale=guidance, guidance_interval=interval, **options
        )

    # --- sampling ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        shape: tuple[int, ...],
        cond: torch.Tensor | None = None,
        null_cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        x_T: torch.Tensor | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        guidance_scale: float = 1.0,
        guidance_interval: tuple[float, float] | None = None,
        autoguidance: float | None = None,
        use_ema: bool = True,
        progress: bool = False,
    ) -> torch.Tensor:
        """Run the reverse process from x_T (drawn from `generator` unless given) to images (B, C, H, W).

        `guidance_interval` (low, high): guide only at noise levels sigma in (low, high]; None: at every level.
        `autoguidance` w (None: net.autoguidance, or 1 before the guide is taken): guide with the network kept at
        net.autoguide_at as well."""
        config = self.config
        if autoguidance is None:  # the run's default, once training has taken the guide (not in early previews)
            autoguidance = self.default_autoguidance
        autoguidance = float(autoguidance)
        guide = None
        if autoguidance != 1:
            self.check_sampling_options({"autoguidance": autoguidance})
            if not self.guide_taken:
                raise GenlabError(
                    f"autoguidance: this run has not reached net.autoguide_at={config.autoguide_at:g} of its training "
                    "yet, so its guide network is not taken; train it further or sample with autoguidance 1"
                )
            guide = self.guide_network.eval()
        sampler = sampler or config.sampler
        levels = self.sampling_levels(sampler, steps)
        if sampler == "ddim":
            step_rule = DDIMSampler(self.schedule, eta=config.eta if eta is None else eta)
        elif sampler == "ddpm":
            step_rule = DDPMSampler(self.schedule, variance=config.ddpm_variance)
        else:
            raise GenlabError(f"unknown sampler {sampler!r} (valid: ddpm, ddim)")
        if x_T is None:
            x_T = randn(shape, generator, self.device)
        network = self.ema_network if use_ema else self.network
        network.eval()
        try:
            scales = interval_guidance_scales(self.schedule, levels, guidance_scale, guidance_interval)
        except ValueError as error:
            raise GenlabError(f"net.guidance_interval: {error}") from None
        with self.autocast():
            images = sample_loop(
                network,
                step_rule,
                levels,
                x_T.to(self.device),
                cond=cond,
                generator=generator,
                progress=progress,
                guidance_scale=scales,
                null_cond=null_cond,
                prediction=config.prediction,
                self_condition=config.self_condition,
                guide_fn=guide,
                guide_weight=autoguidance,
            )
        return images.float().clamp(-1.0, 1.0)


@register_model
class DDPM(DiffusionModel):
    """Image generation by denoising diffusion (Ho et al. 2020); class-conditional with CFG on labelled tasks."""

    name = "ddpm"
    config_class = DiffusionConfig
    task_kinds = frozenset({"labelled"})
    abilities = Abilities(
        samples=True, class_conditional=True, stochastic=True, ema=True, sampler_options=True, interpolation="slerp"
    )
    purpose = "denoising diffusion for image generation"
    presets = {
        # Ho et al. 2020 on CIFAR-10: 35.7M-param net, linear schedule, lr 2e-4, batch 128, 800k steps, EMA 0.9999.
        "paper": {
            "data.image_size": 32,
            "net.network": "ddpm",
            "net.lr": 2e-4,
            "net.warmup_steps": 5000,
            "net.ema_decay": 0.9999,
            "train.batch_size": 128,
            "train.steps": 800_000,
            "net.sampler": "ddpm",
        },
        # Fashion-MNIST 28 -> 32 px, ~1M-param net, 3000 steps of 32: about 7 minutes on 2 CPU cores. The LR
        # decays to zero over the second half of the budget (so a --minutes run decays too): at 6000 steps
        # (14 min), 86.1% of DDIM-50 samples read as their class against 84.1% at a constant LR, domain FID
        # 8.15 against 8.77. Guidance 7 (swept 1-7): 95.7% read as their class, the worst class (shirt) 78%,
        # FID 7.86, at half the recall of guidance 3 (README, DDPM section). DDIM with eta 1 (fresh noise at
        # every step) lowers the domain FID about 10% against eta 0 on the two runs scored both ways (6.91 vs
        # 7.66, 7.08 vs 7.86), class accuracy a tie (README, "Min-SNR weighting and stochastic DDIM").
        # Guidance only at the low-noise levels sigma <= 2.9 (the last 23 of DDIM-50), on two trained networks:
        # domain FID 5.99 vs 6.91 and 7.97 vs 9.13, recall 2.3-3.2x, worst class 78% vs 72% and 84% vs 84%, class
        # accuracy a tie, sampling 20% faster (README, "Guidance in a limited interval of noise levels").
        "quick": {
            "data.task": "fashion-mnist",
            "data.image_size": 32,
            "net.lr_decay_start": 0.5,
            # Guidance 2 since Fashion-MNIST trains without the crop jitter (its test garments are never
            # cropped): on training seeds 0-2, domain FID 1.13/1.06/1.16, 93.8-96.1% read as their class, the
            # worst class 69-81%; guidance 3: FID 1.67/1.64/1.69, 95.9-98.2%, worst 76-90%; the old 7: FID
            # 3.31/3.46/3.26 (README, "The training jitter"). The older figures below were measured with the jitter.
            "net.guidance_scale": 2.0,
            "net.guidance_interval": (0.0, 2.9),
            "net.eta": 1.0,
            # Autoguidance with the weight average a quarter of the way through training: domain FID 5.53/6.23/
            # 5.01 against 5.99/7.96/6.82 on training seeds 0-2, precision up on each; class accuracy 94.9-97.5%
            # (96.8-97.1% without), the worst class 64-88% (72-84%). w = 4 lowered the FID more but left seed 0's
            # shirts at exactly 60% through the shipped path; README, "Autoguidance".
            "net.autoguide_at": 0.25,
            "net.autoguidance": 3.0,
            "train.batch_size": 32,
            "train.steps": 3000,
            "train.sample_every": 500,
            "train.checkpoint_every": 500,
            "train.preview_count": 10,
        },
    }

    def unet_size_and_channels(self, spec) -> tuple[int, int, int, int]:
        classes = spec.num_classes if self.config.class_conditional else 0
        return spec.image_size, spec.target_channels, 0, classes

    def inputs(self, batch):
        image, labels = self.clean_inputs(batch)
        return image, None if labels is None else self.training_labels(labels)

    def clean_inputs(self, batch):
        return batch["image"], batch["label"] if self.conditional else None

    def sample(self, count, labels=None, generator=None, **options):
        """`count` images; class-conditional models take `labels` (B,) (default: cycling through the classes)."""
        item_shape = (self.spec.target_channels, self.spec.image_size, self.spec.image_size)
        return self.decoded(self.sample_items(count, item_shape, labels, generator, options))

    def latent_shape(self) -> tuple[int, ...]:
        return (self.spec.target_channels, self.spec.image_size, self.spec.image_size)

    def preview(self, batch):
        labels = batch["label"] if self.conditional else None
        generator = torch.Generator().manual_seed(0)
        samples = self.sample(
            len(batch["image"]), labels=labels, generator=generator, steps=self.preview_steps, sampler="ddim"
        )
        return {"real": batch["image"], "samples": samples}


@register_model
class ConditionalDDIM(DiffusionModel):
    """Image-to-image diffusion: the denoiser sees x_t with the source image concatenated (seed report, DDIM)."""

    name = "cddim"
    config_class = DiffusionConfig
    task_kinds = frozenset({"paired"})
    abilities = Abilities(translates=True, stochastic=True, ema=True, sampler_options=True)
    purpose = "image-conditional diffusion for translation"
    presets = {
        # The seed report (tables 4-6): its network, the cosine-angle schedule, AdamW 1e-4 wd 5e-5, batch 2, 64 px.
        "seed": {
            "data.image_size": 64,
            "net.network": "seed",
            "net.schedule": "cosine-angle",
            "net.lr": 1e-4,
            "net.optimizer": "adamw",
            "net.weight_decay": 5e-5,
            "train.batch_size": 2,
            "train.steps": 80_000,
            "net.guidance_scale": 1.0,
        },
        "paper": {
            "data.image_size": 64,
            "net.network": "ddpm",
            "net.lr": 2e-4,
            "train.batch_size": 16,
            "train.steps": 200_000,
            "net.guidance_scale": 1.0,
        },
        # facades-synth at 64 px, ~2.2M-param net, 3000 steps of 8: about 25 minutes on one CPU core.
        # v-prediction: at 1.5 min of training (the benchmark's budget) it reaches test SSIM 0.312 and FCN mIoU
        # 0.360 where eps-prediction reaches 0.193 and 0.207 (and lr 2e-3 or batch 4 stay near eps's); see
        # the README's cddim sweep for the command.
        "quick": {
            "data.image_size": 64,
            "train.batch_size": 8,
            "train.steps": 3000,
            "train.sample_every": 500,
            "train.checkpoint_every": 500,
            "net.guidance_scale": 1.0,
            "net.prediction": "v",
            # DDIM eta 1 beat eta 0 on every score, on the three networks scored both ways (edges2fashion at
            # 32 px, two of them: PSNR +0.4 and +0.9 dB, domain FID 5.96 vs 6.57 and 4.77 vs 5.97; facades-synth
            # at 64 px: mIoU 0.272 vs 0.239); README, "Min-SNR weighting and stochastic DDIM".
            "net.eta": 1.0,
            # Autoguidance with the weight average a quarter of the way through training, on edges2fashion (32
            # px, 40k images, seeds 0-2, without the crop jitter): domain FID 2.60/2.61/2.80 against 3.01/2.87/
            # 3.03, SSIM 0.006-0.023 and PSNR 0.2-0.3 dB lower; at 15 minutes (seed 0, batch 8) FID 1.17
            # against 1.45, SSIM 0.668 against 0.674. On facades-synth (64 px, 1.5 min, 3 seeds) a trade: domain
            # FID 0.36 vs 0.61 and FCN mIoU 0.43 vs 0.39, PSNR 11.5 vs 13.2 dB; README, "Autoguidance".
            "net.autoguide_at": 0.25,
            "net.autoguidance": 2.0,
        },
    }
    # Garments at 32 px: the net's step is so short that at batch 8 the cores wait between small kernels (234
    # images/s; batch 32: 365), so at a fixed budget batch 32 sees 1.6x the images. In 15 minutes on 2 CPU cores
    # (seeds 0-2) batch 32 at lr 1.4e-3 lowered the domain FID from 1.12-1.22 to 0.72-0.82 and raised SSIM from
    # 0.664-0.669 to 0.679-0.685; lr 2e-3 and 3e-3 and batch 64 at lr 2.8e-3 did less well (README, "cddim: batch size
    # and learning rate at the budget"). Then lr 1e-3 with the guide from half-way through training, on networks
    # of 300k images (about 15 minutes; seeds 0-2, the guides from their checkpoints): SSIM 0.686-0.691 and PSNR
    # 19.44-19.47 dB against 0.679-0.685 and 19.15-19.29 for lr 1.4e-3 with the guide at a quarter, the domain
    # FID and class accuracy a tie (0.74-0.78 against 0.72-0.82, 84.1-85.1% against 84.6-85.7%); lr 1e-3 alone
    # ties 1.4e-3, and earlier guides (0.11, 0.16) or a later one (0.75) did less well (README, "cddim: a lower
    # learning rate, the guide's age and the weight average's width"). Then EDM's log-normal noise levels, N(0.5,
    # 1.5^2) in ln sigma, at the same 300k images (seeds 0-2): domain FID 0.60/0.64/0.64 against 0.74/0.78/0.75
    # at autoguidance 2, SSIM 0.691-0.693 against 0.686-0.691, PSNR within 0.05 dB; with them autoguidance 3
    # lowers the FID on every seed again (0.54/0.60/0.58) for 0.012-0.015 SSIM and 0.26 dB, and 3.5 no further
    # (seed 0: 0.55). README, "cddim: the noise levels trained on". Then a narrower N(0.5, 1.0^2) at autoguidance 2
    # (seeds 0-2): domain FID 0.51/0.59/0.62, the same mean (0.575) as N(0.5, 1.5^2) at w 3, with SSIM 0.692-0.697
    # against 0.678-0.681 and PSNR 19.46-19.56 against 19.15-19.20 dB; at w 3 it was worse on seeds 1-2 (0.65,
    # 0.72), and N(0.5, 0.75^2) worse again (seed 0: 0.73 at w 3, 0.82 at w 2). README, "cddim: the guide's age and
    # the sampler at the log-normal levels".
    # These settings apply to any pairs up to 32 px, not only edges2fashion's (README, "Pix2Pix on a garment folder
    # built outside genlab"): on a garment folder built outside genlab (Canny edges), seeds 0-2 at equal images,
    # they beat batch 32 alone on PSNR, SSIM and domain FID on every seed (FID 0.49-0.58 against 1.20-1.43). On
    # facades-synth photos at 32 px (1.5 min, seeds 0-2) a trade: PSNR +1.0 dB (separate intervals), SSIM and the
    # FCN-scores a little higher (overlapping), domain FID 0.45 against 0.31 (separate intervals).
    size_presets = {
        "quick": {
            32: {
                "train.batch_size": 32,
                "net.autoguide_at": 0.5,  # at the family's lr 1e-3
                # Noise levels ln sigma ~ N(0.5, 1.0^2) instead of uniform t: 4% of the training at sigma > 10
                # (uniform: 32%), where x_t is nearly pure noise and the condition alone sets the prediction.
                "net.log_sigma_normal": (0.5, 1.0),
                "net.autoguidance": 2.0,
                # The garments' black background is 46% of their pixels; sampled as they are, 54% of it carries
                # a haze of 1-8 levels (the sampled image's error), which the domain network reads. On a smooth
                # histogram (photos) the prior's posterior mean of a level is the level itself.
                "net.value_prior": True,
            }
        }
    }
    task_presets = {"quick": {"edges2fashion": {"data.image_size": 32}}}

    def unet_size_and_channels(self, spec) -> tuple[int, int, int, int]:
        return spec.image_size, spec.target_channels, spec.source_channels, 0

    def clean_inputs(self, batch):
        return batch["target"], batch["source"]

    def translate_batch(self, source, generator=None, **options):
        self.check_sampling_options(options)  # an image condition is used in full: no guidance to set
        shape = (len(source), self.spec.target_channels, self.spec.image_size, self.spec.image_size)
        return self.decoded(self.generate(shape, source.to(self.device), None, generator, **options))

    def preview(self, batch):
        generator = torch.Generator().manual_seed(0)
        output = self.translate_batch(batch["source"], generator=generator, steps=self.preview_steps)
        return {"input": batch["source"], "output": output, "target": batch["target"]}
