"""The one small interface every model family implements, and the registry of families.

A model owns its networks, optimisers, LR schedulers and EMA copies, and does its own update order inside
`training_step` (a GAN needs a D step then a G step). The trainer only calls `training_step`, `preview` and
the state methods, so a new family plugs in without touching the trainer.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from genlab.config import PRECISIONS
from genlab.data.tasks import TaskSpec
from genlab.nn.ema import averaged_copy, ema_update, power_ema_decay, power_ema_gamma
from genlab.utils import Generator, GenlabError, to_model_batch


@dataclass(frozen=True)
class Abilities:
    """What a family can do, declared on its class; callers ask it instead of probing attributes.

    >>> Abilities(translates=True).can("translate")
    True
    """

    translates: bool = False  # translate_batch(source) maps a source image to a target image
    samples: bool = False  # sample(count) generates images from noise alone
    class_conditional: bool = False  # sample(count, labels) follows class labels on tasks with classes
    unpaired: bool = False  # trains on unpaired tasks (two image sets, no pairs)
    reverse: bool = False  # translate_batch(..., direction="BtoA") maps target-domain images back
    stochastic: bool = False  # several outputs per input (or per label) differ
    # translate options that turn on the stochastic outputs (pix2pix: dropout at inference); {} = always on
    stochastic_options: dict[str, Any] = field(default_factory=dict)
    # keeps an exponential moving average of its weights (network X's as the submodule ema_X), used for sampling
    # or translating: always (diffusion) or when its config asks (net.ema_length of pix2pix, dcgan and cgan)
    ema: bool = False
    sampler_options: bool = False  # sample/translate take sampler, steps, eta, guidance_scale (diffusion)
    temperature: bool = False  # sample/translate take a temperature that scales the prior draws (VAE families)
    # How `genlab sample --interpolate` walks between two latent codes: linear (VAE), slerp (Gaussian noise).
    interpolation: Literal["none", "linear", "slerp"] = "none"

    def can(self, action: str) -> bool:
        """Whether the family can `translate`, `sample`, `reverse` (translate BtoA) or take `labels`."""
        return {
            "translate": self.translates,
            "sample": self.samples,
            "reverse": self.reverse,
            "labels": self.class_conditional,
            "interpolate": self.interpolation != "none",
        }[action]


# The options of the diffusion families' samplers (Abilities.sampler_options).
DIFFUSION_SAMPLER_OPTIONS = ("sampler", "steps", "eta", "guidance_scale", "guidance_interval", "autoguidance")


def option_name(key: str, flags: bool) -> str:
    """A sampling option as an error names it: the keyword (`guidance_scale`) or, with `flags`, the command-line
    option that sets it (`--guidance`)."""
    return f"--{key.replace('_scale', '').replace('_', '-')}" if flags else key


def linear_decay(progress: float, decay_start: float) -> float:
    """1 until `progress` reaches `decay_start`, then linearly down to 0 at progress 1.

    >>> [linear_decay(p, 0.5) for p in (0.0, 0.5, 0.75, 1.0)], linear_decay(0.9, 1.0)
    ([1.0, 1.0, 0.5, 0.0], 1.0)
    """
    if progress <= decay_start or decay_start >= 1.0:
        return 1.0
    return max(0.0, (1.0 - progress) / (1.0 - decay_start))


def cycle_labels(count: int, num_classes: int) -> torch.Tensor:
    """Labels 0, 1, ..., K-1, 0, 1, ... for `count` samples: every class equally often (int64, (count,))."""
    if num_classes < 1:
        raise GenlabError(f"cycle_labels: need at least one class, got {num_classes}")
    return torch.arange(count, dtype=torch.long) % num_classes


# Averages gradients across processes in place (genlab.train.distributed.Distributed.sync_gradients); the trainer
# passes it in, so this layer knows nothing of process groups.
GradientSync = Callable[[list[nn.Parameter]], None]
OptimizerKernel = Literal["loop", "foreach", "fused"]


@dataclass
class Runtime:
    """Where and how a model computes: set by the trainer (or by `genlab.load`) before use."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None  # None: full fp32
    channels_last: bool = False  # 4-D weights (convolutions) in channels_last memory format
    optimizer_kernel: OptimizerKernel = "loop"  # Adam/AdamW/SGD: for-loop (torch's CPU default), foreach or fused
    gradient_sync: GradientSync | None = None  # several processes: average gradients before each step

    @staticmethod
    def for_device(
        device: torch.device, precision: str = "auto", setting: str = "train.precision", **options: Any
    ) -> Runtime:
        """Resolve a precision name for a device: `auto` is bf16 (or fp16) autocast on CUDA and fp32 elsewhere;
        bf16 autocast also runs on CPUs (fast where they have bf16 instructions, e.g. AVX512-BF16 or AMX); fp16
        needs CUDA (its GradScaler is a CUDA tool). `setting` names where the precision came from, for the
        errors; `options` are the other Runtime fields."""
        if precision not in PRECISIONS:
            raise GenlabError(f"{setting}={precision!r} is not a precision (valid: {', '.join(PRECISIONS)})")
        if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
            return Runtime(device, **options)
        if precision == "fp16" and device.type != "cuda":
            raise GenlabError(
                f"{setting}=fp16 needs a CUDA device (this run uses {device}); use bf16 or fp32 on {device.type}"
            )
        if precision == "bf16" and device.type not in ("cuda", "cpu"):
            raise GenlabError(f"{setting}=bf16 needs a CUDA device or the CPU (this run uses {device})")
        if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
            return Runtime(device, torch.bfloat16, **options)
        return Runtime(device, torch.float16, **options)


class GenerativeModel(nn.Module, ABC):
    """Base class of every family: networks as submodules, optimisers in `self.optimizers`."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    task_kinds: ClassVar[frozenset[str]]  # which TaskSpec.kind values the family supports
    abilities: ClassVar[Abilities] = Abilities()
    purpose: ClassVar[str] = ""  # what the family does, in a few words, for error messages ("translates images")
    # Preset name -> dotted overrides ("train.steps": 2000, "net.width": 32, "data.image_size": 64...).
    presets: ClassVar[dict[str, dict[str, Any]]] = {"quick": {}}
    # Preset name -> task name -> overrides for that task (a 32 px size and its budget for Fashion-MNIST when the
    # preset itself is set up for facades): applied over the preset when the run trains on that task.
    task_presets: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}
    # Preset name -> largest image size -> overrides for runs on images up to that size, whatever the task (the
    # batch at which small maps stop being overhead-bound): applied over the preset, under the task's refinements.
    size_presets: ClassVar[dict[str, dict[int, dict[str, Any]]]] = {}
    default_preset: ClassVar[str] = "quick"
    # Training images `calibrate` is given before each preview and checkpoint (0: the family fits nothing).
    calibration_images: ClassVar[int] = 0
    # The weights' memory layout a loaded run (`genlab.load`: sample, translate, evaluate) gets by default, where
    # benchmarks show it is faster (the diffusion U-Nets: README, speed section).
    inference_channels_last: ClassVar[bool] = False
    # The submodules X with a weight average ema_X kept by `keep_averages` (the GAN families' net.ema_length).
    averaged_networks: tuple[str, ...] = ()

    def __init__(self, config: Any, spec: TaskSpec) -> None:
        super().__init__()
        self.config = config
        self.spec = spec
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.runtime = Runtime(torch.device("cpu"))
        self._scalers: dict[str, torch.amp.GradScaler] = {}
        self.step = 0  # optimisation steps done; saved in the training state
        # Fraction of the training budget spent, set by the trainer before each step (0 outside training).
        self.budget_progress = 0.0

    @classmethod
    def build(cls, config: Any, spec: TaskSpec) -> GenerativeModel:
        """Build the family's networks and optimisers for a task; unsupported task kinds are a clear error."""
        if spec.kind not in cls.task_kinds:
            kinds = ", ".join(sorted(cls.task_kinds))
            raise GenlabError(
                f"model {cls.name!r} does not support {spec.kind} tasks such as {spec.name!r} (it supports: {kinds})"
            )
        return cls(config, spec)

    # --- the interface -------------------------------------------------------------------------------------
    @abstractmethod
    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step (all its sub-steps) on a batch; returns losses for logging."""

    def translate(
        self,
        source: Any,
        generator: Generator | None = None,
        *,
        input_range: str = "[-1,1]",
        output_type: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
        **options,
    ) -> Any:
        """Translate one image or a batch; outputs come back at each input's own size, in the input's form.

        `source`: a PIL image (or a list), a tensor (C, H, W) / (B, C, H, W) (uint8, or float in `input_range`:
        "[-1,1]" (default) or "[0,1]"), or a list of (C, H, W) tensors. Images are resized to the model's size
        (nearest for label maps) and the outputs resized back, as `genlab translate` does; alpha channels are
        refused (`genlab.utils.to_model_batch`). `output_type` "pil", "pt" or "np" picks the output form (default:
        the input's). Diffusion families take diffusers' names: `num_inference_steps` (= `steps`), `eta`,
        `guidance_scale`; `generator` seeds stochastic families.

        >>> photo = model.translate(label_map_pil)  # doctest: +SKIP
        """
        self.require("translate")
        options = self.sampler_arguments(options, num_inference_steps, guidance_scale, eta)
        reverse = options.get("direction") == "BtoA"
        if reverse:
            self.require("reverse")
        field_names = ("target", "b") if reverse else ("source", "a")
        channels = self.spec.target_channels if reverse else self.spec.source_channels
        nearest = any(name in self.spec.label_map_fields for name in field_names)
        output_nearest = any(name in self.spec.label_map_fields for name in ("source", "a") if reverse)
        batch, restore = to_model_batch(
            source, channels, self.spec.image_size, nearest, input_range=input_range, output_nearest=output_nearest
        )
        with torch.no_grad():
            output = self.translate_batch(batch.to(self.device), generator=generator, **options)
        return restore(output, output_type)

    def sampler_arguments(
        self,
        options: dict[str, Any],
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
    ) -> dict[str, Any]:
        """Sampler options with diffusers' names folded into genlab's (`num_inference_steps` -> `steps`); a
        family without a diffusion sampler given any of them is an error."""
        options = dict(options)
        if num_inference_steps is not None:
            if options.get("steps") not in (None, num_inference_steps):
                raise GenlabError("give num_inference_steps or steps, not both")
            options["steps"] = num_inference_steps
        for key, value in (("guidance_scale", guidance_scale), ("eta", eta)):
            if value is not None:
                options[key] = value
        self.check_sampling_options(options)
        return {key: value for key, value in options.items() if value is not None}

    def check_sampling_options(self, options: dict[str, Any], flags: bool = False) -> None:
        """Refuse sampling options this family does not take: the diffusion sampler's (sampler, steps, eta,
        guidance_scale, guidance_interval, autoguidance) and the VAE's temperature. `flags` names them as
        command-line options."""
        given = [key for key in DIFFUSION_SAMPLER_OPTIONS if options.get(key) is not None]
        if given and not self.abilities.sampler_options:
            names = ", ".join(option_name(key, flags) for key in given)
            raise GenlabError(f"{names}: model {self.name!r} has no diffusion sampler; leave them out")
        guided = [key for key in ("guidance_scale", "guidance_interval") if options.get(key) is not None]
        if guided and not self.conditional:
            # Classifier-free guidance mixes the class-conditional and the null-class predictions; without class
            # labels (cddim, an unconditional ddpm, a task without classes) there is nothing to guide.
            names = ", ".join(option_name(key, flags) for key in guided)
            raise GenlabError(
                f"{names}: model {self.name!r} takes no class labels here, so there is no classifier-free guidance "
                "to set; leave them out"
            )
        temperature = options.get("temperature")
        if temperature is not None:
            if not self.abilities.temperature:
                name = option_name("temperature", flags)
                raise GenlabError(f"{name}: model {self.name!r} draws no latent code from a prior; leave it out")
            if not (isinstance(temperature, (int, float)) and 0 <= temperature < float("inf")):
                raise GenlabError(f"temperature must be a number >= 0 (1 = the prior itself), got {temperature!r}")

    def translate_batch(self, source: torch.Tensor, generator: Generator | None = None, **options) -> torch.Tensor:
        """Map source images (B, C, H, W) in [-1, 1] to target images (B, C', H, W) in [-1, 1]."""
        self.require("translate")
        raise NotImplementedError(f"{self.name} declares translates=True but defines no translate_batch")

    def sample(
        self, count: int, labels: torch.Tensor | None = None, generator: Generator | None = None, **options
    ) -> torch.Tensor:
        """Generate `count` images in [-1, 1] (class-conditioned by `labels` when given)."""
        self.require("sample")
        raise NotImplementedError(f"{self.name} declares samples=True but defines no sample")

    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one sample's latent code (noise), for interpolation between codes."""
        self.require("interpolate")
        raise NotImplementedError(f"{self.name} declares interpolation but defines no latent_shape")

    def sample_from_latents(self, latents: torch.Tensor, labels: torch.Tensor | None = None, **options) -> torch.Tensor:
        """Decode given latent codes (B, *latent_shape()) into images (deterministically where the family can)."""
        self.require("interpolate")
        raise NotImplementedError(f"{self.name} declares interpolation but defines no sample_from_latents")

    def sampler_defaults(self) -> dict[str, Any]:
        """The sampler settings used when none are given (families with `sampler_options` override it)."""
        return {}

    def sampler_record(self, given: dict[str, Any]) -> dict[str, Any]:
        """The sampler settings a result records: what sampling with the options `given` really runs."""
        return {**self.sampler_defaults(), **given} if self.abilities.sampler_options else dict(given)

    def can(self, action: str) -> bool:
        """Whether this model can `translate`, `sample`, `reverse`, take `labels` or `interpolate`: the family
        declares it, and the task it was built for allows it (a family that does both does one per task)."""
        if not self.abilities.can(action):
            return False
        if action in ("translate", "reverse"):
            return self.spec.kind in ("paired", "unpaired")
        if action in ("sample", "interpolate"):
            return self.spec.kind == "labelled"
        return action != "labels" or self.conditional

    def require(self, action: str) -> None:
        """Raise one clear error when this model cannot do `action` (see `can`)."""
        if self.can(action):
            return
        verbs = {
            "translate": "translate images",
            "sample": "generate images from noise (it needs a source image: use translate)",
            "reverse": "translate in the reverse direction BtoA (it has no reverse generator)",
            "labels": "follow class labels",
            "interpolate": "interpolate between latent codes",
        }
        if action == "translate" and self.abilities.samples and self.spec.kind == "labelled":
            verbs["translate"] = "translate images (it generates images: use sample)"
        purpose = f" ({self.purpose})" if self.purpose else ""
        raise GenlabError(f"model {self.name!r}{purpose} trained on {self.spec.name} cannot {verbs[action]}")

    @property
    def conditional(self) -> bool:
        """Whether this built model takes class labels: the family can, and the task has classes."""
        return self.abilities.class_conditional and self.spec.num_classes > 0

    def check_labels(self, labels: torch.Tensor | None, count: int) -> torch.Tensor | None:
        """Labels for `count` samples on the model's device: cycled through the classes when None; checked."""
        if not self.conditional:
            if labels is not None:
                raise GenlabError(f"sample: this {self.name} run is unconditional; it takes no labels")
            return None
        labels = cycle_labels(count, self.spec.num_classes) if labels is None else labels
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.dim() != 1 or len(labels) != count:
            raise GenlabError(f"sample: {len(labels.reshape(-1))} labels for {count} images")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.spec.num_classes):
            bad = int(labels[(labels < 0) | (labels >= self.spec.num_classes)][0])
            raise GenlabError(f"sample: label {bad} is outside the classes 0..{self.spec.num_classes - 1}")
        return labels.to(self.device)

    def preview(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Titled rows of images for the training preview grid, in order: {"input": (B, C, H, W), "output": ...,
        "target": ...} for paired tasks, {"real": ..., "samples": ...} for generation."""
        if self.spec.kind == "paired":
            with torch.no_grad():
                output = self.translate_batch(batch["source"].to(self.device))
            return {"input": batch["source"], "output": output, "target": batch["target"]}
        if self.spec.kind == "labelled":
            labels = batch.get("label") if self.spec.num_classes else None
            generator = torch.Generator(device="cpu").manual_seed(0)
            with torch.no_grad():
                samples = self.sample(len(batch["image"]), labels=labels, generator=generator)
            return {"real": batch["image"], "samples": samples}
        raise NotImplementedError(f"{self.name} must define preview() for {self.spec.kind} tasks")

    # --- runtime helpers for the families --------------------------------------------------------------------
    def attach(self, runtime: Runtime) -> GenerativeModel:
        """Move to the runtime's device and enable its mixed precision."""
        self.runtime = runtime
        self.to(runtime.device)
        if runtime.channels_last:  # 4-D tensors only (conv weights); state_dict keys and values are unchanged
            self.to(memory_format=torch.channels_last)
        fused = runtime.optimizer_kernel == "fused"
        for optimizer in self.optimizers.values():  # optimiser state follows the parameters (after resume)
            _choose_kernel(optimizer, runtime.optimizer_kernel)
            for state in optimizer.state.values():
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and (key != "step" or fused):
                        # a fused step keeps its step count on the parameters' device, as float32
                        state[key] = value.to(runtime.device, torch.float32) if key == "step" else value.to(
                            runtime.device
                        )
        return self

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        if self.runtime.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.runtime.device.type, dtype=self.runtime.autocast_dtype)

    def optimize(self, loss: torch.Tensor, optimizer_name: str, max_grad_norm: float | None = None) -> None:
        """zero_grad, backward (scaled in fp16), optional gradient-norm clipping, then step one optimiser."""
        optimizer = self.optimizers[optimizer_name]
        optimizer.zero_grad(set_to_none=True)
        scaler = None
        if self.runtime.autocast_dtype == torch.float16:
            scaler = self._scalers.setdefault(optimizer_name, torch.amp.GradScaler(self.runtime.device.type))
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        else:
            loss.backward()
        if self.runtime.gradient_sync is not None:
            # Several processes: average this optimiser's gradients across ranks here, after backward and before
            # unscaling, clipping and the step. Reducing here rather than wrapping the networks in DDP keeps every
            # family unchanged (a GAN runs D three times and G through a frozen D per step, which DDP's one
            # forward-one backward hooks do not fit) and keeps the state_dict keys free of DDP's "module." prefix,
            # so checkpoints load in a single process.
            self.runtime.gradient_sync([p for group in optimizer.param_groups for p in group["params"]])
        if max_grad_norm is not None:
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            # batched norms where torch has them (CPU and CUDA); its default batches on CUDA only
            foreach = True if self.device.type in ("cpu", "cuda") else None
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm, foreach=foreach)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    def calibrate(self, batches: Iterable[dict[str, torch.Tensor]]) -> None:
        """Refit statistics that sampling reads from the data under the current weights, as BatchNorm's running
        statistics are recalibrated: the trainer calls it before each preview and checkpoint with unjittered
        training batches (the first `calibration_images` items). The VAE families fit their sampling prior here."""

    def check_budget(self, step_budget: int | None) -> None:
        """Called by the trainer before the first step with the step budget (None: minutes only): a family whose
        budget cannot train what it promises says so here, before any time is spent."""

    def decay_learning_rates(self, decay_start: float) -> None:
        """pix2pix's and CycleGAN's schedule over the trainer's budget (steps, images or minutes): the initial
        LR until `decay_start` of the budget is spent, then linearly to zero at its end; 1.0 keeps it constant."""
        factor = linear_decay(self.budget_progress, decay_start)
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])  # saved with the optimiser: resume keeps it
                group["lr"] = group["initial_lr"] * factor

    def end_step(self) -> None:
        """Called by the trainer after each training_step: advance the step count and the LR schedulers."""
        self.step += 1
        for scheduler in self.schedulers.values():
            scheduler.step()

    # --- weight averages (net.ema_length of the GAN families) ------------------------------------------------------
    def keep_averages(self, length: float | None, *names: str) -> None:
        """Keep ema_X, an average of the submodule X's weights and batch-norm statistics, for each name X; with
        length None keep none (ema_X is None and inference uses X itself).

        The average is the power-function EMA of nn/ema.py: its std is the fraction `length` of the training done,
        so it means the same at every budget. Call `update_averages` after each update of the networks, and run
        inference through `inference_network(X)`.
        """
        for name in names:
            setattr(self, f"ema_{name}", None if length is None else averaged_copy(getattr(self, name)))
        self.averaged_networks = () if length is None else names
        self.average_gamma = None if length is None else power_ema_gamma(length)

    def update_averages(self) -> None:
        """Fold the networks' new weights into their averages (self.step: the updates before this one, so the
        first call copies the weights)."""
        if not self.averaged_networks:
            return
        decay = power_ema_decay(self.step, self.average_gamma)
        for name in self.averaged_networks:
            ema_update(getattr(self, f"ema_{name}"), getattr(self, name), decay, average_buffers=True)

    def inference_network(self, name: str) -> nn.Module:
        """The network that translates or samples for the submodule `name`: its average where one is kept."""
        average = getattr(self, f"ema_{name}", None)
        return getattr(self, name) if average is None else average

    # --- state -------------------------------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """Everything needed to resume exactly: networks (and EMA buffers), optimisers, schedulers, step."""
        return {
            "networks": self.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedulers": {name: sched.state_dict() for name, sched in self.schedulers.items()},
            "scalers": {name: scaler.state_dict() for name, scaler in self._scalers.items()},
            "step": self.step,
        }

    def load_training_state(self, state: dict[str, Any], weights_only: bool = False) -> None:
        """Restore `training_state()`; with `weights_only` just the networks (for sampling and evaluation)."""
        self.load_state_dict(state["networks"])
        self.step = int(state.get("step", 0))
        if weights_only:
            return
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        for name, scaler_state in state.get("scalers", {}).items():
            scaler = self._scalers.setdefault(name, torch.amp.GradScaler(self.runtime.device.type))
            scaler.load_state_dict(scaler_state)

    def parameter_counts(self) -> dict[str, int]:
        """Parameter count per top-level network that trains (frozen copies, such as weight averages, left out)."""
        return {
            name: sum(p.numel() for p in module.parameters())
            for name, module in self.named_children()
            if any(p.requires_grad for p in module.parameters())
        }


# The optimisers whose step takes `foreach` and `fused` flags in their param groups.
_KERNEL_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def _choose_kernel(optimizer: torch.optim.Optimizer, kernel: OptimizerKernel) -> None:
    """Set an optimiser's update kernel: "fused" (one kernel for all tensors), "foreach" (batched tensor ops) or
    "loop" (a loop over tensors). Other optimisers keep theirs. The flags live in the param groups, so they are
    set again after a resume restored the saved groups."""
    if not isinstance(optimizer, _KERNEL_OPTIMIZERS):
        return
    for group in optimizer.param_groups:
        group["fused"] = kernel == "fused"
        group["foreach"] = kernel == "foreach"


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Turn off requires_grad for the modules' parameters inside the block (e.g. D during the G step)."""
    flags = [(p, p.requires_grad) for module in modules for p in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


MODELS: dict[str, type[GenerativeModel]] = {}

def register_model(cls: type[GenerativeModel]) -> type[GenerativeModel]:
    """Class decorator adding a family to the registry under `cls.name`."""
    MODELS[cls.name] = cls
    return cls
