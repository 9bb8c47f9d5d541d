"""The one training loop every family uses: budgets, logging, previews, checkpoints, exact resume, clean stops."""

from __future__ import annotations

import dataclasses
import math
import signal
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genlab import checkpoint as ckpt
from genlab.config import RESUME_SAFE_KEYS, RunConfig, flatten_config, resume_changes, validate_config
from genlab.data.tasks import Task, get_task, label_map_legend
from genlab.grid import image_grid, save_preview_grid
from genlab.models import GenerativeModel, Runtime, get_model_class
from genlab.runs import load_run_config
from genlab.train.distributed import Distributed
from genlab.train.logging import MetricsLog
from genlab.utils import GenlabError, remove_stale_temporaries, seed_everything


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    model: GenerativeModel
    steps: int
    seconds: float  # training time of this run, all resumes included
    stopped_by: str  # "budget", "signal"


def build_model(config: RunConfig, task: Task) -> GenerativeModel:
    """The family's model for the task's spec; a size the networks cannot take is a GenlabError naming it."""
    try:
        return get_model_class(config.model).build(config.net, task.spec)
    except ValueError as error:  # the networks' own size checks (U-Net, ResNet generator) raise ValueError
        raise GenlabError(f"data.image_size={task.spec.image_size}: {config.model} cannot be built ({error})") from None


class _StopRequest:
    """Turns the first SIGINT/SIGTERM into a polite stop request; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# Called with the model after each checkpoint (e.g. the benchmark's validation scores); its time is not counted
# in the training budget. The trainer knows nothing of evaluation: a higher layer passes this in.
CheckpointHook = Callable[[GenerativeModel, Path], None]


def train(
    config: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_checkpoint: CheckpointHook | None = None,
) -> TrainResult:
    """Train `config` into `run_dir` (or continue it when `resume`), stopping at the step or minute budget.

    One process at a time writes into a run directory (RUN/.lock); a folder whose set-up failed before its first
    checkpoint is started over; a NaN/Inf loss or weight stops the run or rolls it back (`train.on_nan`).
    Launched in several processes (`accelerate launch` / `torchrun`), rank 0 alone checks the folder, holds the
    lock and writes; see genlab.train.distributed.
    """
    run_dir = Path(run_dir)
    validate_config(config)
    if config.train.step_budget() is None and config.train.minutes is None:
        raise GenlabError("train: set a budget: train.steps, train.images or train.minutes")
    dist = Distributed.from_environment(config.train.device)
    dist.local_batch_size(config.train.batch_size)  # an uneven split is refused before anything is written
    if not dist.is_main:  # the other ranks only read the run folder (the checkpoint, on resume)
        if resume:
            ckpt.require_run_dir(run_dir)
        return _train_locked(config, run_dir, resume, progress, on_checkpoint, dist)
    if resume:
        ckpt.require_run_dir(run_dir)
    created = not run_dir.exists()
    try:
        # The lock first: a live writer is named (pid) before anything else is said or written.
        with ckpt.RunLock.acquire(run_dir) as lock:
            if not resume and (run_dir / ckpt.CONFIG_FILE).exists() and not ckpt.unfinished_setup(run_dir):
                raise GenlabError(
                    f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out"
                )
            if lock.stale_message:
                tqdm.write(lock.stale_message)
            return _train_locked(config, run_dir, resume, progress, on_checkpoint, dist)
    except BaseException:
        # A run refused before it wrote anything (a model that does not fit the task, say) leaves no empty
        # folder behind, so the next default --out is not numbered past it.
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise


def _train_locked(
    config: RunConfig,
    run_dir: Path,
    resume: bool,
    progress: bool,
    on_checkpoint: CheckpointHook | None,
    dist: Distributed,
) -> TrainResult:
    if dist.is_main:
        _prepare_run_dir(run_dir, resume)
    seed_everything(config.seed)  # the same seed on every rank: identical initial weights
    task = get_task(config.data)
    config.data.load_scale = task.load_scale  # the task's jitter, recorded in config.yaml and the checkpoints
    if dist.is_main and progress and task.load_scale_note:  # a folder's jitter, read off its images
        tqdm.write(task.load_scale_note)
    model = build_model(config, task)
    model.check_budget(config.train.step_budget())  # e.g. ldm: a budget that ends before its diffusion stage
    if dist.is_main:
        _warn_if_batch_norm_sees_one_image(model, dist.local_batch_size(config.train.batch_size))
    runtime = runtime_for(config, dist)
    model.attach(runtime)

    seconds_before = 0.0
    if resume:
        last = ckpt.checkpoint_dir(run_dir) / ckpt.LAST
        document = ckpt.load_checkpoint(last)
        check_resumable(document, config, task, last)
        load_state(model, document, last)
        model.attach(runtime)  # optimiser state onto the device
        ckpt.restore_rng(document["rng"])
        seconds_before = float(document.get("train_seconds", 0.0))
    dist.broadcast_parameters(model)
    dist.seed_rank(config.seed, model.step)
    if dist.is_main:
        config.save(run_dir / ckpt.CONFIG_FILE)  # on resume it records a raised budget
    if config.train.compile:
        for module in model.children():
            module.compile()  # in place: the state_dict keys (and so the checkpoints) stay the same

    log = MetricsLog(run_dir / "metrics.csv", config.train.logger, run_dir) if dist.is_main else None
    if log is not None:
        log.truncate_after(model.step)
    preview = _preview_batch(task, config.train.preview_count) if dist.is_main else {}
    loop = _Loop(config, run_dir, task, model, log, preview, seconds_before)
    loop.on_checkpoint = on_checkpoint
    loop.dist = dist
    try:
        with _StopRequest() as stop:
            stopped_by = loop.run(stop, progress and dist.is_main)
    finally:
        if log is not None:
            log.close()
    return TrainResult(run_dir, model, model.step, loop.total_seconds(), stopped_by)


def calibration_batches(task: Task, count: int, device: torch.device | str, chunk: int = 256):
    """The first `count` training items without jitter, as model batches on `device`, `chunk` at a time: what
    `GenerativeModel.calibrate` is given."""
    split = task.split("train")
    count = min(count, len(split))
    for start in range(0, count, chunk):
        items = split.subset(torch.arange(start, min(start + chunk, count)))
        yield {key: value.to(device) for key, value in task.prepare(items).items()}


def _warn_if_batch_norm_sees_one_image(model: GenerativeModel, images_per_step: int) -> None:
    """Batch norm on 1 image per step (per process) normalises each image by its own statistics while training,
    but by their running averages when sampling or translating (eval mode): the scored network is not the one
    trained. pix2pix, cyclegan and the GAN families offer instance norm instead (pix2pix's choice at batch 1)."""
    if images_per_step == 1 and any(isinstance(module, torch.nn.BatchNorm2d) for module in model.modules()):
        warnings.warn(
            f"{model.name}: batch norm with 1 image per step (per process) normalises each image by its own "
            "statistics while training but by running averages when sampling or translating; use a larger "
            "--batch-size, or instance norm where the family offers it (--set net.norm=instance)",
            stacklevel=3,
        )


def runtime_for(config: RunConfig, dist: Distributed) -> Runtime:
    """The Runtime the train section asks for on this rank's device."""
    train = config.train
    return Runtime.for_device(
        dist.device,
        train.precision,
        channels_last=train.channels_last,
        optimizer_kernel=optimizer_kernel(train.fused_optimizer, dist.device),
        gradient_sync=dist.sync_gradients if dist.several else None,
    )


def optimizer_kernel(choice: str, device: torch.device) -> str:
    """train.fused_optimizer resolved: auto is the fused Adam/AdamW/SGD step on CUDA and on CPUs (one kernel over
    every tensor: torch's for-loop default costs a visible share of a small model's CPU step), else foreach."""
    if choice != "auto":
        return choice
    return "fused" if device.type in ("cuda", "cpu") else "foreach"


def _prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Rank 0, holding the lock: remove what killed saves left, and restart a set-up that never checkpointed."""
    for temporary in remove_stale_temporaries(run_dir):  # the lock says no live process is writing them
        tqdm.write(f"removed {temporary}, left by a save that was killed")
    if not resume and (run_dir / ckpt.CONFIG_FILE).exists():
        if not ckpt.unfinished_setup(run_dir):  # another process finished a set-up while we checked
            raise GenlabError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
        tqdm.write(f"{run_dir}: an earlier set-up stopped before the first checkpoint; starting it over")
        for leftover in (ckpt.CONFIG_FILE, "metrics.csv"):
            (run_dir / leftover).unlink(missing_ok=True)


def check_resumable(document: dict, config: RunConfig, task: Task, path: Path) -> None:
    """Refuse a checkpoint that another family, config or task wrote, before load_state_dict sees it."""
    stored = document.get("config") if isinstance(document.get("config"), dict) else {}
    stored_model = document.get("model") or stored.get("model")
    if stored_model != config.model:
        raise GenlabError(f"{path}: a {stored_model} checkpoint, but the config is for {config.model}")
    changed = [key for key in resume_changes(stored, config) if key not in RESUME_SAFE_KEYS] if stored else []
    if changed:
        old, new = flatten_config(stored), flatten_config(config.to_dict())
        details = ", ".join(f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in changed[:4])
        raise GenlabError(
            f"{path}: the config differs from the checkpoint's in what the model or data depend on ({details}); "
            "these cannot change on resume"
        )
    stored_spec = document.get("spec")
    if isinstance(stored_spec, dict):
        current = _plain_spec(dataclasses.asdict(task.spec))
        stored_spec = _plain_spec(stored_spec)
        for key, value in current.items():  # fields an older genlab did not record (palette) cannot differ
            if key in stored_spec and stored_spec[key] != value:
                raise GenlabError(
                    f"{path}: written for a task with {key}={stored_spec.get(key)!r}, this one has {key}={value!r}; "
                    "the checkpoint does not fit"
                )


def _plain_spec(values: dict) -> dict:
    def plain(value):
        return [plain(item) for item in value] if isinstance(value, (list, tuple)) else value

    return {key: plain(value) for key, value in values.items()}


def load_state(model: GenerativeModel, document: dict, path: Path, weights_only: bool = False) -> None:
    """model.load_training_state with a mismatch reported as a GenlabError naming the file, not a traceback."""
    try:
        model.load_training_state(document["state"], weights_only=weights_only)
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise GenlabError(f"{path}: does not fit this {model.name} model ({type(error).__name__}: {reason})") from None


def _preview_batch(task: Task, count: int) -> dict[str, torch.Tensor]:
    """A fixed batch of held-out items shown in every preview grid."""
    split = task.split("test")
    return task.prepare(split.subset(list(range(min(count, len(split))))))


class _Loop:
    """The loop state of one invocation of `train`."""

    def __init__(self, config, run_dir, task, model, log, preview, seconds_before) -> None:
        self.config, self.run_dir, self.task, self.model = config, run_dir, task, model
        self.log, self.preview, self.seconds_before = log, preview, seconds_before
        self.started = time.perf_counter()
        self.on_checkpoint: CheckpointHook | None = None
        self.calibrated_step: int | None = None  # the step the model's sampling statistics were last refit at
        self.dist = Distributed(model.device)  # the trainer sets the real one
        self.hook_seconds = 0.0  # time spent in on_checkpoint, left out of the training time

    def total_seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started - self.hook_seconds

    def run_hook(self) -> None:
        if self.on_checkpoint is None or not self.dist.is_main:  # evaluation runs on rank 0 only
            return
        started = time.perf_counter()
        was_training = self.model.training
        self.on_checkpoint(self.model, self.run_dir)
        self.model.train(was_training)
        self.hook_seconds += time.perf_counter() - started

    def budget_fraction(self) -> float:
        """How much of the budget is spent, in [0, 1]: steps (or images) done, or minutes used, whichever is
        further. Families with an LR decay define it over this, so a --minutes run decays too."""
        train = self.config.train
        fractions = [0.0]
        step_budget = train.step_budget()
        if step_budget:
            fractions.append(self.model.step / step_budget)
        if train.minutes:
            fractions.append(self.total_seconds() / (train.minutes * 60))
        return min(1.0, max(fractions))

    def budget_left(self) -> bool:
        train = self.config.train
        step_budget = train.step_budget()
        if step_budget is not None and self.model.step >= step_budget:
            return False
        return train.minutes is None or self.total_seconds() < train.minutes * 60

    def run(self, stop: _StopRequest, progress: bool) -> str:
        train = self.config.train
        self.sums: dict[str, float] = defaultdict(float)
        self.count, self.window_start = 0, time.perf_counter()
        self.rollbacks = 0
        bar = tqdm(
            total=train.step_budget(),
            initial=self.model.step,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
            desc=f"{self.config.model} on {self.config.data.task}",
        )
        # Every rank takes the same decision (budgets by minutes and signals can differ between processes).
        while self.dist.all_agree(self.budget_left() and not stop.requested):
            try:
                self.one_step(bar)
            except ckpt.NonFiniteError as fault:
                self.recover(fault)
                bar.reset(total=train.step_budget())
                bar.update(self.model.step)
        bar.close()
        stopped_by = "signal" if self.budget_left() else "budget"  # the loop ends at the budget or on a stop
        try:
            self.require_finite_weights()
            self.save_preview()
            self.save_checkpoint()
        except ckpt.NonFiniteError as fault:
            self.stop_for(fault)
        self.run_hook()
        if stopped_by == "signal":
            tqdm.write(f"stopped at step {self.model.step}; resume with: genlab train --resume --out {self.run_dir}")
        return stopped_by

    def one_step(self, bar) -> None:
        """One optimisation step with its logging, preview and checkpoint; NonFiniteError on a NaN/Inf."""
        train = self.config.train
        batch = self.task.training_batch(
            self.model.step,
            train.batch_size,
            self.config.seed,
            unpaired=self.model.abilities.unpaired,
            device=self.model.device,  # jitter runs there, on uint8 rows moved first
            pin_memory=train.pin_memory,
        )
        batch = self.dist.shard(batch, train.batch_size)  # this rank's rows of the step's global batch
        batch = {key: self.to_device(value) for key, value in batch.items()}
        try:
            self.model.budget_progress = self.budget_fraction()
            losses = self.model.training_step(batch)
        except RuntimeError as error:
            if self.model.step > 0:
                raise
            # A network that builds but cannot run at this size fails in its first step (shape mismatch).
            reason = str(error).splitlines()[0][:200]
            raise GenlabError(
                f"data.image_size={self.task.spec.image_size}: the {self.config.model} networks fail at this size "
                f"({reason}); try a power of two such as 32, 64 or 256"
            ) from None
        # Losses are checked every step (they are floats already); weights only at log, preview and checkpoint
        # steps, because reducing every tensor of every network each step would cost a noticeable share of a
        # small model's step time. save_checkpoint checks the whole state again, so no non-finite one is saved.
        losses = self.dist.mean_losses(losses)
        bad = [key for key, value in losses.items() if not math.isfinite(value)]
        if bad:
            raise ckpt.NonFiniteError(f"step {self.model.step}: {bad[0]} is {losses[bad[0]]}", bad)
        self.model.end_step()
        self.dist.broadcast_norm_statistics(self.model)
        step = self.model.step
        for key, value in losses.items():
            self.sums[key] += value
        self.count += 1
        bar.update(1)
        at_log = step % train.log_every == 0 or not self.budget_left()
        at_sample, at_checkpoint = step % train.sample_every == 0, step % train.checkpoint_every == 0
        if at_log or at_sample or at_checkpoint:
            self.require_finite_weights()
        if at_log:
            elapsed = time.perf_counter() - self.window_start
            row = {
                "step": step,
                "elapsed_s": round(self.total_seconds(), 3),
                "images_per_s": round(self.count * train.batch_size / max(elapsed, 1e-9), 3),
            }
            row.update({key: total / self.count for key, total in self.sums.items()})
            if self.log is not None:
                self.log.write(row)
            postfix = {k: f"{v:.3g}" for k, v in row.items() if k not in ("step", "elapsed_s")}
            if self.config.train.minutes:  # a time budget: say how much of it is left
                left = max(0.0, self.config.train.minutes * 60 - self.total_seconds())
                postfix["left"] = f"{int(left // 60)}m{int(left % 60):02d}s"
            bar.set_postfix(postfix)
            self.sums.clear()
            self.count, self.window_start = 0, time.perf_counter()
        if at_sample:
            self.save_preview()
        if at_checkpoint:
            self.save_checkpoint()
            self.run_hook()

    def to_device(self, value: torch.Tensor) -> torch.Tensor:
        """A batch field on the model's device: page-locked first for an asynchronous copy to CUDA
        (train.pin_memory), image batches in channels_last when the weights are (train.channels_last)."""
        device = self.model.device
        if self.config.train.pin_memory and device.type == "cuda" and value.device.type == "cpu":
            value = value.pin_memory()
        value = value.to(device, non_blocking=True)
        if self.model.runtime.channels_last and value.dim() == 4:
            value = value.contiguous(memory_format=torch.channels_last)
        return value

    def require_finite_weights(self) -> None:
        ckpt.require_finite(self.model.state_dict(), f"step {self.model.step}: weights")

    def last_good(self) -> tuple[Path, int] | None:
        """last.pt and its step, if one was written (every written checkpoint is finite)."""
        last = ckpt.checkpoint_dir(self.run_dir) / ckpt.LAST
        if not last.is_file():
            return None
        return last, int(ckpt.load_checkpoint(last)["step"])

    def stop_for(self, fault: ckpt.NonFiniteError) -> None:
        """Stop the run with a message naming the fault and the checkpoint kept (or that none exists)."""
        good = self.last_good()
        kept = (
            f"the last finite checkpoint, {good[0]} (step {good[1]}), is kept"
            if good
            else "no checkpoint had been saved yet, so none is kept"
        )
        hint = "lower net.lr" if self.config.train.on_nan == "rollback" else "lower net.lr, or pass --on-nan rollback"
        raise GenlabError(f"{fault}; training stopped: {kept} (try a {hint})") from None

    def recover(self, fault: ckpt.NonFiniteError) -> None:
        """train.on_nan=rollback: reload last.pt with every learning rate lowered; otherwise stop."""
        train = self.config.train
        good = self.last_good()
        if train.on_nan != "rollback" or good is None or self.rollbacks >= train.max_rollbacks:
            if train.on_nan == "rollback" and good is not None:
                fault = ckpt.NonFiniteError(f"{fault} (after {self.rollbacks} rollbacks, the most allowed)", [])
            self.stop_for(fault)
        path, step = good
        document = ckpt.load_checkpoint(path)
        load_state(self.model, document, path)
        self.model.attach(self.model.runtime)
        ckpt.restore_rng(document["rng"])
        self.dist.seed_rank(self.config.seed, step)
        changes = scale_learning_rates(self.model, train.nan_lr_factor)
        self.rollbacks += 1
        if self.log is not None:
            self.log.truncate_after(step)
        self.sums.clear()
        self.count, self.window_start = 0, time.perf_counter()
        tqdm.write(
            f"{fault}; rolled back to {path} (step {step}), learning rates x{train.nan_lr_factor:g}: {changes} "
            f"(rollback {self.rollbacks} of at most {train.max_rollbacks})"
        )

    def calibrate_model(self) -> None:
        """Let the model refit what it samples from (the VAE's prior) to its current weights, once per step,
        on the first `calibration_images` training items without jitter (rank 0, which previews and saves)."""
        if self.model.calibration_images == 0 or self.calibrated_step == self.model.step:
            return
        batches = calibration_batches(self.task, self.model.calibration_images, self.model.device)
        was_training = self.model.training
        with torch.no_grad():
            self.model.calibrate(batches)
        self.model.train(was_training)
        self.calibrated_step = self.model.step

    def save_preview(self) -> None:
        if not self.dist.is_main:
            return
        self.calibrate_model()
        was_training = self.model.training
        rows = self.model.preview({k: v.to(self.model.device) for k, v in self.preview.items()})
        self.model.train(was_training)
        if self.log is not None and self.log.sends_images:
            self.log.log_image("preview", image_grid(list(rows.values())), self.model.step)  # uint8 (3, H, W)
        save_preview_grid(
            list(rows.values()),
            list(rows),
            self.run_dir / "samples" / f"step_{self.model.step:07d}.png",
            f"{self.config.model} on {self.config.data.task}, step {self.model.step}",
            legend=label_map_legend(self.task.spec),
        )

    def save_checkpoint(self) -> None:
        """Write last.pt, then link it as the numbered checkpoint of this step and prune old ones (rank 0)."""
        if not self.dist.is_main:
            return
        self.calibrate_model()
        payload = {
            "model": self.config.model,
            "config": self.config.to_dict(),
            "spec": dataclasses.asdict(self.task.spec),
            "state": self.model.training_state(),
            "rng": ckpt.capture_rng(),
            "step": self.model.step,
            "train_seconds": self.total_seconds(),
        }
        last = ckpt.checkpoint_dir(self.run_dir) / ckpt.LAST
        ckpt.require_finite(payload["state"], f"step {self.model.step}: checkpoint not saved")
        ckpt.save_checkpoint(last, payload, check_finite=False)  # just checked
        numbered_path = ckpt.numbered_checkpoint(self.run_dir, self.model.step)
        numbered_path.unlink(missing_ok=True)
        try:
            numbered_path.hardlink_to(last)  # same bytes, no second write
        except OSError:
            ckpt.save_checkpoint(numbered_path, payload)
        ckpt.prune_checkpoints(self.run_dir, self.config.train.keep_checkpoints)


def scale_learning_rates(model: GenerativeModel, factor: float) -> str:
    """Multiply the learning rate of every optimiser (and the base rates its LR scheduler scales) by `factor`;
    returns "name old -> new" for each optimiser, for the message."""
    changes = []
    for name, optimizer in model.optimizers.items():
        before = optimizer.param_groups[0]["lr"]
        for group in optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
        for scheduler in model.schedulers.values():
            if getattr(scheduler, "optimizer", None) is optimizer and hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [rate * factor for rate in scheduler.base_lrs]
        changes.append(f"{name} {before:.3g} -> {optimizer.param_groups[0]['lr']:.3g}")
    return ", ".join(changes)


def resume_config(run_dir: str | Path) -> RunConfig:
    """The saved config of a run (the budget may then be raised before calling `train(..., resume=True)`)."""
    run_dir = ckpt.require_run_dir(run_dir)
    return load_run_config(run_dir / ckpt.CONFIG_FILE)
