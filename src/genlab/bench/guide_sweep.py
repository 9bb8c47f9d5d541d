"""Autoguidance settings of a trained diffusion run, swept without retraining: which guide, and how strong.

    python -m genlab.bench.guide_sweep runs/cddim --at 0.1 0.25 0.4 --weights 1.5 2 3 --limit 1000

A run trained with `net.autoguide_at=F` guides its sampling with its weight average as it stood when the
fraction F of the budget was spent. That average is also in every numbered checkpoint the run kept (keep them
all with `--set train.keep_checkpoints=100`), so the guide of any other F is at hand: for each fraction given
this takes the checkpoint nearest F x the run's steps, puts its weight average in as the guide, and scores
translations (or samples) at each autoguidance weight with the evaluator itself, on the same inputs and noise.
Prints a Markdown table, a row per setting as it is scored.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from genlab import checkpoint as ckpt
from genlab.api import load_run
from genlab.bench.steps_quality import SettingScores
from genlab.models.diffusion import DiffusionModel
from genlab.utils import GenlabError

AVERAGE_PREFIX = "ema_network."  # the weight average's keys in a diffusion model's state dict


def numbered_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """The run's numbered checkpoints by step (last.pt left out)."""
    paths = sorted(ckpt.checkpoint_dir(Path(run_dir)).glob("step_*.pt"))
    return {int(path.stem.removeprefix("step_")): path for path in paths}


def nearest_step(steps: list[int], target: float) -> int:
    """The step of `steps` nearest `target` (the earlier one on a tie)."""
    if not steps:
        raise GenlabError("no numbered checkpoints to take a guide from: train with --set train.keep_checkpoints=100")
    return min(steps, key=lambda step: (abs(step - target), step))


def stored_average(path: Path) -> dict[str, torch.Tensor]:
    """The weight average a diffusion checkpoint holds, as a state dict of the averaged network."""
    networks = ckpt.load_checkpoint(path)["state"]["networks"]
    return {key.removeprefix(AVERAGE_PREFIX): value for key, value in networks.items()
            if key.startswith(AVERAGE_PREFIX)}


def guide_from_checkpoint(model: DiffusionModel, path: Path) -> None:
    """Make the weight average stored in checkpoint `path` the model's autoguidance guide."""
    if model.guide_network is None:
        raise GenlabError(
            f"{path.parent.parent}: this run keeps no guide network; train it with --set net.autoguide_at=0.25 "
            "(and --set train.keep_checkpoints=100 to keep the averages a sweep can take)"
        )
    model.guide_network.load_state_dict(stored_average(path))  # copies into the existing tensors: layout stays
    model.guide_taken.fill_(True)


def sweep(
    run_dir: str | Path,
    fractions: list[float],
    weights: list[float],
    limit: int,
    batch_size: int = 100,
    seed: int = 0,
    sampler_options: dict | None = None,
    features: tuple[str, ...] = ("domain",),
) -> list[dict]:
    """A row (guide step, its fraction of the run, weight, seconds per image, headline scores) per (fraction,
    weight), scored in the `features` spaces (pixel metrics always)."""
    loaded = load_run(run_dir)
    model = loaded.model
    if not isinstance(model, DiffusionModel):
        raise GenlabError(f"{run_dir}: a {loaded.config.model} run has no diffusion sampler to autoguide (ddpm, cddim)")
    checkpoints = numbered_checkpoints(run_dir)
    scores = SettingScores(loaded, limit, batch_size, seed, features)
    for fraction in fractions:
        step = nearest_step(sorted(checkpoints), fraction * loaded.step)
        guide_from_checkpoint(model, checkpoints[step])
        for weight in weights:
            setting = {"guide_step": step, "guide_fraction": step / loaded.step, "weight": weight}
            scores.score(setting, autoguidance=weight, **(sampler_options or {}))
    return scores.rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a ddpm or cddim run trained with net.autoguide_at, its numbered checkpoints kept")
    parser.add_argument("--at", type=float, nargs="+", default=[0.1, 0.25, 0.4],
                        help="fractions of the run whose weight average guides (the nearest checkpoint's)")
    parser.add_argument("--weights", type=float, nargs="+", default=[2.0], help="autoguidance weights (1 = none)")
    parser.add_argument("--limit", type=int, default=1000, help="test items translated (or samples drawn)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, help="DDIM steps (default: the run's)")
    parser.add_argument("--eta", type=float, help="DDIM eta (default: the run's)")
    args = parser.parse_args(argv)
    sampler = {key: value for key, value in (("steps", args.steps), ("eta", args.eta)) if value is not None}
    torch.set_grad_enabled(False)
    sweep(args.run, args.at, args.weights, args.limit, args.batch_size, sampler_options=sampler)


if __name__ == "__main__":
    main()
