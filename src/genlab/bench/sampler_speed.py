"""Seconds per sample batch of DDPM (1000 steps) against DDIM (50 / 20 / 10 steps) on a small diffusion U-Net.

    python -m genlab.bench.sampler_speed --size 32 --batch 8

The network is untrained: the cost of a step does not depend on the weights, and the point is the number of
network evaluations each sampler needs (DDIM with S steps costs S forwards, DDPM T).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from genlab.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    Sampler,
    StepOutput,
    evenly_spaced_timesteps,
    sample_loop,
)
from genlab.diffusion.schedules import NoiseSchedule
from genlab.nn.diffusion_unet import DiffusionUNet, quick_unet_config
from genlab.utils import format_count, make_generator, select_device

MIN_DDIM50_SPEEDUP = 10.0


@dataclass(frozen=True)
class SamplerTiming:
    """Wall-clock seconds of one batch, and of each of its steps (network forward + sampler step)."""

    wall_seconds: float
    step_seconds: list[float]

    @property
    def median_estimate(self) -> float:
        """steps x the median step time: the batch's cost with the spikes of a shared machine filtered out."""
        return len(self.step_seconds) * statistics.median(self.step_seconds)


def time_sampler(
    network: DiffusionUNet,
    sampler: Sampler,
    timesteps: Sequence[int],
    shape: tuple[int, ...],
    device: torch.device,
    seed: int = 0,
) -> SamplerTiming:
    """Draw one batch of `shape` with `sampler` over `timesteps`, timing the whole and every step."""
    generator = make_generator(seed, device)
    x_T = torch.randn(shape, generator=generator, device=device)
    step_ends: list[float] = []

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def record_step(t: int, output: StepOutput) -> None:
        synchronize()
        step_ends.append(time.perf_counter())

    synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        sample_loop(network, sampler, timesteps, x_T, generator=generator, callback=record_step)
    synchronize()
    wall = time.perf_counter() - start
    steps = [end - begin for begin, end in zip([start, *step_ends[:-1]], step_ends, strict=True)]
    return SamplerTiming(wall, steps)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the timing table; exit status 1 when DDIM-50 is less than 10x faster than DDPM-1000."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="image size in pixels")
    parser.add_argument("--batch", type=int, default=8, help="samples per batch")
    parser.add_argument("--channels", type=int, default=3, help="image channels")
    parser.add_argument("--timesteps", type=int, default=1000, help="T, the DDPM step count")
    parser.add_argument("--ddim-steps", type=int, nargs="+", default=[50, 20, 10])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    torch.manual_seed(0)
    network = DiffusionUNet(quick_unet_config(args.channels, args.size)).to(device).eval()
    schedule = NoiseSchedule("linear", args.timesteps).to(device)
    shape = (args.batch, args.channels, args.size, args.size)
    parameters = sum(p.numel() for p in network.parameters())
    print(f"device {device} ({torch.get_num_threads()} CPU threads), image {args.channels}x{args.size}x{args.size}, "
          f"batch {args.batch}, "
          f"quick U-Net {format_count(parameters)} parameters, T = {args.timesteps}")

    # One short warm-up so allocator and kernel selection are not charged to the first sampler.
    time_sampler(network, DDIMSampler(schedule), evenly_spaced_timesteps(args.timesteps, 2), shape, device)
    rows: list[tuple[str, int, SamplerTiming]] = []
    ddpm = time_sampler(
        network, DDPMSampler(schedule), evenly_spaced_timesteps(args.timesteps, args.timesteps), shape, device
    )
    rows.append((f"DDPM-{args.timesteps}", args.timesteps, ddpm))
    for steps in args.ddim_steps:
        timing = time_sampler(
            network, DDIMSampler(schedule, eta=0.0), evenly_spaced_timesteps(args.timesteps, steps), shape, device
        )
        rows.append((f"DDIM-{steps}", steps, timing))

    # "s/batch" is steps x median step time (robust to other jobs on a shared machine); "wall" is as measured.
    print(f"{'sampler':<12}{'steps':>7}{'s/batch':>10}{'wall s':>10}{'ms/step':>10}{'speed-up':>10}")
    for name, steps, timing in rows:
        estimate = timing.median_estimate
        print(
            f"{name:<12}{steps:>7}{estimate:>10.3f}{timing.wall_seconds:>10.3f}"
            f"{1000 * estimate / steps:>10.2f}{ddpm.median_estimate / estimate:>9.1f}x"
        )
    ddim50 = next((timing for name, _, timing in rows if name == "DDIM-50"), None)
    if ddim50 is None:
        return 0
    ratio = ddpm.median_estimate / ddim50.median_estimate
    wall_ratio = ddpm.wall_seconds / ddim50.wall_seconds
    verdict = "ok" if ratio >= MIN_DDIM50_SPEEDUP else f"FAIL (needs >= {MIN_DDIM50_SPEEDUP:.0f}x)"
    print(f"DDPM-{args.timesteps} / DDIM-50 = {ratio:.1f}x (wall {wall_ratio:.1f}x)  {verdict}")
    return 0 if ratio >= MIN_DDIM50_SPEEDUP else 1


if __name__ == "__main__":
    raise SystemExit(main())
