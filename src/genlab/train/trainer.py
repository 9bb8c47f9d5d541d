"""The one training loop every family uses: budgets, logging, previews, checkpoints, exact resume, clean stops."""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genlab import checkpoint as ckpt
from genlab.config import RunConfig
from genlab.data.tasks import Task, get_task
from genlab.grid import save_grid
from genlab.models.base import GenerativeModel, Runtime, get_model_class
from genlab.runs import load_run_config
from genlab.train.distributed import require_single_process
from genlab.train.logging import MetricsLog
from genlab.utils import GenlabError, seed_everything, select_device


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    model: GenerativeModel
    steps: int
    seconds: float  # training time of this run, all resumes included
    stopped_by: str  # "budget", "signal"


def build_model(config: RunConfig, task: Task) -> GenerativeModel:
    """The family's model for the task's spec."""
    return get_model_class(config.model).build(config.net, task.spec)


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
    """Train `config` into `run_dir` (or continue it when `resume`), stopping at the step or minute budget."""
    run_dir = Path(run_dir)
    if resume:
        ckpt.require_run_dir(run_dir)
    elif (run_dir / ckpt.CONFIG_FILE).exists():
        raise GenlabError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
    if config.train.step_budget() is None and config.train.minutes is None:
        raise GenlabError("train: set a budget: train.steps, train.images or train.minutes")

    seed_everything(config.seed)
    device = select_device(config.train.device)
    require_single_process()
    task = get_task(config.data)
    model = build_model(config, task)
    runtime = Runtime.for_device(device, config.train.precision)
    model.attach(runtime)

    seconds_before = 0.0
    if resume:
        document = ckpt.load_checkpoint(ckpt.checkpoint_dir(run_dir) / ckpt.LAST)
        model.load_training_state(document["state"])
        model.attach(runtime)  # optimiser state onto the device
        ckpt.restore_rng(document["rng"])
        seconds_before = float(document.get("train_seconds", 0.0))
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / ckpt.CONFIG_FILE)  # on resume it records a raised budget
    if config.train.compile:
        for module in model.children():
            module.compile()  # in place: the state_dict keys (and so the checkpoints) stay the same

    log = MetricsLog(run_dir / "metrics.csv", tensorboard_dir=run_dir / "tensorboard")
    log.truncate_after(model.step)
    preview = _preview_batch(task, config.train.preview_count)
    loop = _Loop(config, run_dir, task, model, log, preview, seconds_before)
    loop.on_checkpoint = on_checkpoint
    try:
        with _StopRequest() as stop:
            stopped_by = loop.run(stop, progress)
    finally:
        log.close()
    return TrainResult(run_dir, model, model.step, loop.total_seconds(), stopped_by)


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
        self.hook_seconds = 0.0  # time spent in on_checkpoint, left out of the training time

    def total_seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started - self.hook_seconds

    def run_hook(self) -> None:
        if self.on_checkpoint is None:
            return
        started = time.perf_counter()
        was_training = self.model.training
        self.on_checkpoint(self.model, self.run_dir)
        self.model.train(was_training)
        self.hook_seconds += time.perf_counter() - started

    def budget_left(self) -> bool:
        train = self.config.train
        step_budget = train.step_budget()
        if step_budget is not None and self.model.step >= step_budget:
            return False
        return train.minutes is None or self.total_seconds() < train.minutes * 60

    def run(self, stop: _StopRequest, progress: bool) -> str:
        train = self.config.train
        sums: dict[str, float] = defaultdict(float)
        count, window_start = 0, time.perf_counter()
        bar = tqdm(
            total=train.step_budget(),
            initial=self.model.step,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
            desc=f"{self.config.model} on {self.config.data.task}",
        )
        stopped_by = "budget"
        while self.budget_left():
            if stop.requested:
                stopped_by = "signal"
                break
            batch = self.task.training_batch(
                self.model.step, train.batch_size, self.config.seed, unpaired=self.model.abilities.unpaired
            )
            batch = {key: value.to(self.model.device, non_blocking=True) for key, value in batch.items()}
            losses = self.model.training_step(batch)
            bad = [key for key, value in losses.items() if not math.isfinite(value)]
            if bad:
                raise GenlabError(
                    f"step {self.model.step}: {bad[0]} is {losses[bad[0]]}; training stopped, the last good "
                    f"checkpoint in {ckpt.checkpoint_dir(self.run_dir)} is kept (try a lower net.lr)"
                )
            self.model.end_step()
            step = self.model.step
            for key, value in losses.items():
                sums[key] += value
            count += 1
            bar.update(1)
            if step % train.log_every == 0 or not self.budget_left():
                elapsed = time.perf_counter() - window_start
                row = {
                    "step": step,
                    "elapsed_s": round(self.total_seconds(), 3),
                    "images_per_s": round(count * train.batch_size / max(elapsed, 1e-9), 3),
                }
                row.update({key: total / count for key, total in sums.items()})
                self.log.write(row)
                bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k not in ("step", "elapsed_s")})
                sums.clear()
                count, window_start = 0, time.perf_counter()
            if step % train.sample_every == 0:
                self.save_preview()
            if step % train.checkpoint_every == 0:
                self.save_checkpoint()
                self.run_hook()
        bar.close()
        self.save_preview()
        self.save_checkpoint()
        self.run_hook()
        if stopped_by == "signal":
            tqdm.write(f"stopped at step {self.model.step}; resume with: genlab train --resume --out {self.run_dir}")
        return stopped_by

    def save_preview(self) -> None:
        was_training = self.model.training
        rows = self.model.preview({k: v.to(self.model.device) for k, v in self.preview.items()})
        self.model.train(was_training)
        save_grid(rows, self.run_dir / "samples" / f"step_{self.model.step:07d}.png")

    def save_checkpoint(self) -> None:
        """Write last.pt, then link it as the numbered checkpoint of this step and prune old ones."""
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
        ckpt.save_checkpoint(last, payload)
        numbered_path = ckpt.numbered_checkpoint(self.run_dir, self.model.step)
        numbered_path.unlink(missing_ok=True)
        try:
            numbered_path.hardlink_to(last)  # same bytes, no second write
        except OSError:
            ckpt.save_checkpoint(numbered_path, payload)
        ckpt.prune_checkpoints(self.run_dir, self.config.train.keep_checkpoints)


def resume_config(run_dir: str | Path) -> RunConfig:
    """The saved config of a run (the budget may then be raised before calling `train(..., resume=True)`)."""
    run_dir = ckpt.require_run_dir(run_dir)
    return load_run_config(run_dir / ckpt.CONFIG_FILE)
