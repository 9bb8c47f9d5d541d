"""genlab's SSIM and PSNR beside torchmetrics' on the same batch: the same values (1e-4) and the throughput ratio.

    python -m genlab.bench.compare_torchmetrics --images 64 --size 64 --rounds 7

Rounds run A B A B (genlab, torchmetrics) after one untimed call of each; the ratio printed is the median of the
per-round ratios, so drift of a shared machine cancels. Exit status 1 when a value differs by more than 1e-4.

SSIM is timed with border="reflect", torchmetrics 1.x's convention (the mean over every pixel, the window
reflected at the borders), so both compute the same number; genlab's default ("valid", scikit-image's
convention) is printed beside it with its gap and its own speed ratio.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence

import torch

from genlab.bench.speed import interleaved
from genlab.metrics.pixel import psnr, ssim
from genlab.utils import make_generator

TOLERANCE = 1e-4


def interleaved_ratio(a: Callable[[], object], b: Callable[[], object], rounds: int) -> tuple[float, float, float]:
    """(median seconds of A, of B, median of B/A per round), run A B A B ... after one untimed call of each."""
    times_a, times_b = interleaved(a, b, rounds)
    ratio = statistics.median(tb / ta for ta, tb in zip(times_a, times_b))
    return statistics.median(times_a), statistics.median(times_b), ratio


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    generator = make_generator(0)
    target = torch.rand(args.images, 3, args.size, args.size, generator=generator)
    pred = (target + 0.1 * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    cases = {
        "SSIM": (
            lambda: ssim(pred, target, data_range=1.0, border="reflect"),
            # per image then the mean, as genlab reduces (torchmetrics' "elementwise_mean" is the same here)
            lambda: structural_similarity_index_measure(pred, target, data_range=1.0, reduction="elementwise_mean"),
        ),
        "SSIM (genlab's default border='valid', scikit-image's convention)": (
            lambda: ssim(pred, target, data_range=1.0),
            lambda: structural_similarity_index_measure(pred, target, data_range=1.0, reduction="elementwise_mean"),
        ),
        "PSNR": (
            lambda: psnr(pred, target, data_range=1.0),
            lambda: peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3)).mean(),
        ),
    }
    print(f"{args.images} images of 3x{args.size}x{args.size}, {torch.get_num_threads()} CPU threads, "
          f"{args.rounds} interleaved rounds")
    status = 0
    for name, (ours, theirs) in cases.items():
        value_ours, value_theirs = float(ours()), float(theirs())
        gap = abs(value_ours - value_theirs)
        seconds_ours, seconds_theirs, ratio = interleaved_ratio(ours, theirs, args.rounds)
        convention_differs = "valid" in name  # another definition: its gap is reported, not failed
        if gap <= TOLERANCE:
            same = "same value"
        else:
            same = "another border convention" if convention_differs else f"VALUES DIFFER (> {TOLERANCE:g})"
        status |= gap > TOLERANCE and not convention_differs
        print(
            f"{name}: genlab {value_ours:.6f} vs torchmetrics {value_theirs:.6f} (|diff| {gap:.1e}, {same}); "
            f"genlab {args.images / seconds_ours:.0f} images/s, torchmetrics {args.images / seconds_theirs:.0f} "
            f"images/s: genlab = {ratio:.2f}x torchmetrics' throughput"
        )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
