"""The bf16 loss curve beside fp32's: the same model, seed and batches, trained twice, compared window by window.

    python -m genlab.bench.precision_curve --model pix2pix --size 32 --steps 300 --window 50

Prints each run's median loss over consecutive windows of `--window` steps and the largest relative gap
|bf16 - fp32| / |fp32| between the window medians; bf16 is acceptable where that gap stays small (a few %).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

import torch

from genlab.bench.speed import speed_config
from genlab.data.tasks import get_task
from genlab.train.distributed import Distributed
from genlab.train.trainer import build_model, runtime_for


def loss_curve(model_name: str, precision: str, size: int, batch_size: int, steps: int, sets: list[str]) -> dict:
    """Per-step losses of `steps` training steps at `precision` (fp32 or bf16), from the same seed and batches."""
    config = speed_config(model_name, size=size, batch_size=batch_size, precision=precision, assignments=sets)
    torch.manual_seed(config.seed)
    task = get_task(config.data)
    model = build_model(config, task)
    model.attach(runtime_for(config, Distributed(torch.device("cpu"))))
    curves: dict[str, list[float]] = {}
    for step in range(steps):
        batch = task.training_batch(step, batch_size, config.seed, unpaired=model.abilities.unpaired)
        for key, value in model.training_step(batch).items():
            curves.setdefault(key, []).append(value)
        model.end_step()
    return curves


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pix2pix")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--loss", default="loss_g_l1", help="the loss to compare (default pix2pix's L1 term)")
    parser.add_argument("--set", action="append", default=["net.width=16", "train.device=cpu"], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    runs = {p: loss_curve(args.model, p, args.size, args.batch_size, args.steps, args.set) for p in ("fp32", "bf16")}
    fp32, bf16 = runs["fp32"][args.loss], runs["bf16"][args.loss]
    print(f"{args.model} {args.size} px, batch {args.batch_size}, {args.steps} steps: median {args.loss} per window")
    print(f"{'steps':>12}{'fp32':>12}{'bf16':>12}{'rel. gap':>10}")
    gaps = []
    for start in range(0, args.steps, args.window):
        window = slice(start, start + args.window)
        a, b = statistics.median(fp32[window]), statistics.median(bf16[window])
        gaps.append(abs(b - a) / abs(a))
        print(f"{start:>5}-{start + args.window - 1:<6}{a:>12.4f}{b:>12.4f}{gaps[-1]:>9.1%}")
    print(f"max relative gap between window medians: {max(gaps):.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
