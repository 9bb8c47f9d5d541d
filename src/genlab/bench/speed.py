"""`genlab speed`: seconds per training step, images/s, FLOPs and achieved FLOP/s against the machine's peak.

    genlab speed pix2pix --preset paper --precision bf16 --set train.channels_last=true
    genlab speed ddpm --size 32 --batch-size 16 --json

What it measures, on the device the run would use:
- the training step: the median of `--steps` timed steps after `--warmup` untimed ones (the first steps pay for
  allocations, oneDNN kernel choice and torch.compile); FLOPs per step counted once with
  `torch.utils.flop_counter.FlopCounterMode` on a copy of the model (forward and backward of every network: the
  matmuls and convolutions, not the element-wise work), so the timed model is never traced;
- the machine's peak: a timed square matmul in fp32 and in bf16 (the median of a few), so the ratio
  achieved / peak says how much of what the chip does on the ideal workload the step gets;
- the data path: the median time of `Task.training_batch` for the same batch (gather + jitter + flip), as the rate
  it could feed beside the rate the step consumes;
- sampling (generators) or translation (translators) per image: the median of a few calls, with its FLOPs.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from genlab.config import RunConfig
from genlab.models.base import GenerativeModel
from genlab.runs import build_run_config
from genlab.train.distributed import Distributed
from genlab.train.trainer import build_model, runtime_for
from genlab.utils import GenlabError, select_device


@dataclass
class SpeedReport:
    """What `genlab speed` prints (and writes with --json)."""

    model: str
    task: str
    image_size: int
    batch_size: int
    precision: str  # the autocast dtype in effect: fp32 or bf16/fp16
    channels_last: bool
    optimizer_kernel: str
    compile: bool
    device: str
    threads: int
    step_seconds: float  # median over the timed steps
    step_seconds_spread: tuple[float, float]  # min, max of the timed steps
    images_per_second: float
    flops_per_step: float
    achieved_gflops: float
    peak_fp32_gflops: float
    peak_bf16_gflops: float | None
    peak_ratio: float  # achieved / the peak of the precision in effect
    data_seconds_per_batch: float
    data_to_step_ratio: float  # how many times faster the data path is than the step consuming it
    inference: str  # "translate", "sample" or "none"
    inference_seconds_per_image: float | None = None
    inference_flops_per_image: float | None = None
    inference_gflops: float | None = None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(action: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Run `action` `warmup` times untimed, then `repeats` times timed; the per-call seconds."""
    for _ in range(warmup):
        action()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The machine's measured matmul rate: the median of `repeats` timed (size x size) @ (size x size) in `dtype`
    (2 size^3 FLOPs each), after one untimed call."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    seconds = median_seconds(lambda: a @ b, repeats, warmup=1, device=device)
    return 2 * size**3 / statistics.median(seconds) / 1e9


def interleaved(a: Callable[[], object], b: Callable[[], object], rounds: int) -> tuple[list[float], list[float]]:
    """Seconds of A and of B, run A B A B ... after one untimed call of each (so drift hits both alike)."""
    times = interleaved_all({"a": a, "b": b}, rounds)
    return times["a"], times["b"]


def interleaved_all(actions: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each action per round, the actions run in turn (A B C A B C ...) after one untimed call each."""
    for action in actions.values():
        action()
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(rounds):
        for name, action in actions.items():
            start = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - start)
    return times


def count_flops(action: Callable[[], object]) -> float:
    """FLOPs of one call of `action` (matmuls and convolutions, forward and backward), by FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        action()
    return float(counter.get_total_flops())


def speed_config(
    model: str,
    preset: str | None = None,
    task: str | None = None,
    size: int | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    assignments: list[str] | None = None,
) -> RunConfig:
    """The run config the speed test builds its model from (as `genlab train` resolves it)."""
    values = {"data.task": task, "data.image_size": size, "train.batch_size": batch_size, "train.precision": precision}
    return build_run_config(model, preset, {k: v for k, v in values.items() if v is not None}, assignments or [])


def measure(
    config: RunConfig,
    steps: int = 10,
    warmup: int = 3,
    inference_repeats: int = 3,
    sample_steps: int | None = None,
    peak_size: int = 2048,
) -> SpeedReport:
    """Time `config`'s training step, data path and inference; see the module docstring."""
    if steps < 1 or warmup < 0:
        raise GenlabError("speed: --steps must be at least 1 and --warmup at least 0")
    from genlab.data.tasks import get_task

    torch.manual_seed(config.seed)
    dist = Distributed(select_device(config.train.device))
    task = get_task(config.data)
    model = build_model(config, task)
    runtime = runtime_for(config, dist)
    model.attach(runtime)
    device, batch_size, unpaired = runtime.device, config.train.batch_size, model.abilities.unpaired

    def batch_for(step: int) -> dict[str, torch.Tensor]:
        batch = task.training_batch(step, batch_size, config.seed, unpaired=unpaired)
        batch = {key: value.to(device) for key, value in batch.items()}
        if runtime.channels_last:
            layout = torch.channels_last
            batch = {key: v.contiguous(memory_format=layout) if v.dim() == 4 else v for key, v in batch.items()}
        return batch

    flops = _training_flops(model, batch_for(0))
    if config.train.compile:
        for module in model.children():
            module.compile()
    batches = [batch_for(step) for step in range(warmup + steps)]
    position = iter(range(len(batches)))

    def one_step() -> None:
        model.training_step(batches[next(position)])
        model.end_step()

    step_times = median_seconds(one_step, steps, warmup, device)
    step_seconds = statistics.median(step_times)
    data_times = median_seconds(
        lambda: task.training_batch(7, batch_size, config.seed, unpaired=unpaired), repeats=5, warmup=1, device=device
    )
    data_seconds = statistics.median(data_times)
    peak_fp32 = matmul_peak_gflops(device, torch.float32, peak_size)
    peak_bf16 = _bf16_peak(device, peak_size)
    dtype = runtime.autocast_dtype
    peak = peak_bf16 if dtype is torch.bfloat16 and peak_bf16 else peak_fp32
    achieved = flops / step_seconds / 1e9
    report = SpeedReport(
        model=config.model,
        task=config.data.task,
        image_size=task.spec.image_size,
        batch_size=batch_size,
        precision={None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
        channels_last=runtime.channels_last,
        optimizer_kernel=runtime.optimizer_kernel,
        compile=config.train.compile,
        device=str(device),
        threads=torch.get_num_threads(),
        step_seconds=step_seconds,
        step_seconds_spread=(min(step_times), max(step_times)),
        images_per_second=batch_size / step_seconds,
        flops_per_step=flops,
        achieved_gflops=achieved,
        peak_fp32_gflops=peak_fp32,
        peak_bf16_gflops=peak_bf16,
        peak_ratio=achieved / peak,
        data_seconds_per_batch=data_seconds,
        data_to_step_ratio=step_seconds / data_seconds,
        inference="none",
    )
    _measure_inference(report, model, batches[0], inference_repeats, sample_steps)
    return report


def _training_flops(model: GenerativeModel, batch: dict[str, torch.Tensor]) -> float:
    """FLOPs of one training step, counted on a deep copy (the timed model keeps its state and is never traced)."""
    twin = copy.deepcopy(model)
    return count_flops(lambda: twin.training_step(batch))


def _bf16_peak(device: torch.device, size: int) -> float | None:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return None
    if device.type not in ("cuda", "cpu"):
        return None
    return matmul_peak_gflops(device, torch.bfloat16, size)


def _measure_inference(
    report: SpeedReport, model: GenerativeModel, batch: dict[str, torch.Tensor], repeats: int, sample_steps: int | None
) -> None:
    """Seconds and FLOPs per image of translate_batch (translators) or sample (generators), in eval mode."""
    options = {"steps": sample_steps} if sample_steps is not None and model.abilities.sampler_options else {}
    if model.can("translate"):
        source = batch["source"] if "source" in batch else batch["a"]
        count = len(source)

        def action() -> object:
            return model.translate_batch(source, **options)

        report.inference = "translate"
    elif model.can("sample"):
        count = report.batch_size

        def action() -> object:
            return model.sample(count, generator=torch.Generator(device="cpu").manual_seed(0), **options)

        report.inference = "sample"
    else:
        return
    model.eval()
    with torch.no_grad():
        flops = count_flops(action)
        seconds = statistics.median(median_seconds(action, repeats, warmup=1, device=report_device(report)))
    report.inference_seconds_per_image = seconds / count
    report.inference_flops_per_image = flops / count
    report.inference_gflops = flops / seconds / 1e9


def report_device(report: SpeedReport) -> torch.device:
    return torch.device(report.device)


def format_report(report: SpeedReport) -> str:
    """The human-readable lines of `genlab speed`."""
    peak_name = "bf16" if report.precision == "bf16" and report.peak_bf16_gflops else "fp32"
    bf16 = f"{report.peak_bf16_gflops:.0f}" if report.peak_bf16_gflops else "n/a"
    lines = [
        f"{report.model} on {report.task}, {report.image_size} px, batch {report.batch_size}, {report.precision}, "
        f"channels_last={report.channels_last}, optimizer={report.optimizer_kernel}, compile={report.compile}, "
        f"{report.device} ({report.threads} threads)",
        f"training step:   {report.step_seconds:.4f} s median (min {report.step_seconds_spread[0]:.4f}, "
        f"max {report.step_seconds_spread[1]:.4f}), {report.images_per_second:.2f} images/s",
        f"FLOPs per step:  {report.flops_per_step / 1e9:.2f} GFLOP -> {report.achieved_gflops:.1f} GFLOP/s achieved",
        f"matmul peak:     fp32 {report.peak_fp32_gflops:.0f} GFLOP/s, bf16 {bf16} GFLOP/s; achieved / "
        f"{peak_name} peak = {report.peak_ratio:.2f}",
        f"data path:       {report.data_seconds_per_batch * 1e3:.2f} ms per batch = {report.data_to_step_ratio:.0f}x "
        "the rate the step consumes",
    ]
    if report.inference_seconds_per_image is not None:
        lines.append(
            f"{report.inference + ':':<16} {report.inference_seconds_per_image:.4f} s per image, "
            f"{report.inference_flops_per_image / 1e9:.2f} GFLOP per image, {report.inference_gflops:.1f} GFLOP/s"
        )
    return "\n".join(lines)

