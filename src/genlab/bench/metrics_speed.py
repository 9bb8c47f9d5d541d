"""Throughput of genlab's metric math beside torchmetrics on the same inputs.

Run as `python -m genlab.bench.metrics_speed [--device cpu] [--images 64] [--size 64]`. Prints one table:
images/s for PSNR, SSIM and MS-SSIM, features/s for FID and KID computed from ready-made feature vectors,
and both libraries' values so that a fast wrong answer shows. torchmetrics is optional ("n/a" without it).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from genlab.metrics.distribution import fid, kid
from genlab.metrics.pixel import MS_SSIM_MIN_SIZE, ms_ssim, psnr, ssim
from genlab.utils import format_count, make_generator, select_device


def _seconds(function: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """Best wall time of `repeats` calls after one warm-up call, and the last result."""
    result = function()  # warm-up: kernels, caches, lazy imports
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def _scalar(value: Any) -> float:
    """A metric result (tensor, or (mean, std) pair) -> its headline float."""
    if isinstance(value, tuple):
        value = value[0]
    return float(value)


class _Passthrough(torch.nn.Module):
    """A 'feature extractor' that returns its input, so torchmetrics' FID/KID run on given features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _torchmetrics_functions(features_dim: int, kid_subsets: int, kid_subset_size: int) -> dict[str, Callable] | None:
    """The torchmetrics counterparts, keyed like genlab's rows; None when torchmetrics is not installed."""
    try:
        from torchmetrics.functional.image import (
            multiscale_structural_similarity_index_measure,
            peak_signal_noise_ratio,
            structural_similarity_index_measure,
        )
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError:
        return None

    def tm_fid(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        metric = FrechetInceptionDistance(feature=_Passthrough(features_dim)).to(real.device)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return metric.compute()

    def tm_kid(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "KID will save all extracted features in buffer"
            metric = KernelInceptionDistance(
                feature=_Passthrough(features_dim), subsets=kid_subsets, subset_size=kid_subset_size
            ).to(real.device)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return metric.compute()

    return {
        # Per-image PSNR averaged, like genlab (torchmetrics' default pools the MSE over the whole batch).
        "PSNR": lambda p, t: peak_signal_noise_ratio(p, t, data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)),
        "SSIM": lambda p, t: structural_similarity_index_measure(p, t, data_range=1.0),
        "MS-SSIM": lambda p, t: multiscale_structural_similarity_index_measure(p, t, data_range=1.0),
        "FID": tm_fid,
        "KID": tm_kid,
    }


def _row(name: str, shape: str, count: int, unit: str, ours: tuple[float, Any], theirs: tuple[float, Any] | None):
    def rate(seconds: float) -> str:
        return f"{format_count(count / seconds)} {unit}/s"

    their_rate = "n/a" if theirs is None else rate(theirs[0])
    their_value = "n/a" if theirs is None else f"{_scalar(theirs[1]):.6g}"
    return [name, shape, rate(ours[0]), their_rate, f"{_scalar(ours[1]):.6g}", their_value]


def main(argv: list[str] | None = None) -> None:
    """Parse the options, time every metric and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument("--images", type=int, default=64, help="images per batch")
    parser.add_argument("--size", type=int, default=64, help="image side (MS-SSIM uses at least 176)")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--features", type=int, default=2000, help="feature vectors per set for FID/KID")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension for FID/KID")
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per metric (best is kept)")
    args = parser.parse_args(argv)

    device = select_device(args.device)
    generator = make_generator(0, device)
    torchmetrics = _torchmetrics_functions(args.dim, args.kid_subsets, args.kid_subset_size)
    rows = []

    for name, function, size in (
        ("PSNR", psnr, args.size),
        ("SSIM", ssim, args.size),
        ("MS-SSIM", ms_ssim, max(args.size, MS_SSIM_MIN_SIZE)),
    ):
        shape = (args.images, args.channels, size, size)
        target = torch.rand(shape, generator=generator, device=device)
        pred = (target + 0.05 * torch.randn(shape, generator=generator, device=device)).clamp(0, 1)
        ours = _seconds(lambda f=function, p=pred, t=target: f(p, t, data_range=1.0), device, args.repeats)
        theirs = None
        if torchmetrics is not None:
            theirs = _seconds(lambda f=torchmetrics[name], p=pred, t=target: f(p, t), device, args.repeats)
        label = f"{args.images} x {args.channels}x{size}x{size}"
        rows.append(_row(name, label, args.images, "img", ours, theirs))

    real = torch.randn(args.features, args.dim, generator=generator, device=device)
    fake = 1.1 * torch.randn(args.features, args.dim, generator=generator, device=device) + 0.05
    label = f"2 x {args.features} x {args.dim}"
    feature_repeats = max(1, args.repeats // 3)  # eigendecompositions of D x D matrices are slow on a CPU
    ours = _seconds(lambda: fid(real, fake), device, feature_repeats)
    theirs = (
        None if torchmetrics is None else _seconds(lambda: torchmetrics["FID"](real, fake), device, feature_repeats)
    )
    rows.append(_row("FID", label, 2 * args.features, "feat", ours, theirs))

    kid_generator = make_generator(1, device)
    ours = _seconds(
        lambda: kid(real, fake, args.kid_subsets, args.kid_subset_size, generator=kid_generator),
        device,
        feature_repeats,
    )
    theirs = (
        None if torchmetrics is None else _seconds(lambda: torchmetrics["KID"](real, fake), device, feature_repeats)
    )
    rows.append(_row(f"KID {args.kid_subsets}x{args.kid_subset_size}", label, 2 * args.features, "feat", ours, theirs))

    header = ["metric", "input", "genlab", "torchmetrics", "genlab value", "torchmetrics value"]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for row in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(
        "notes: SSIM and MS-SSIM values differ by design (genlab averages over the valid region like scikit-image, "
        "torchmetrics over a reflect-padded image); KID values differ because the random subsets do (genlab works "
        "in float64). Timings on a shared machine are noisy."
    )


if __name__ == "__main__":
    main()
