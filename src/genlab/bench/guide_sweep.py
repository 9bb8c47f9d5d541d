"""Autoguidance settings of a trained diffusion run, swept without retraining: which guide, and how strong.

    python -m genlab.bench.guide_sweep runs/cddim --at 0.1 0.25 0.4 --weights 1.5 2 3 --limit 1000

A run trained with `net.autoguide_at=F` guides its sampling with its weight average as it stood when the
fraction F of the budget was spent. That average is also in every numbered checkpoint the run kept (keep them
all with `--set train.keep_checkpoints=100`), so the guide of any other F is at hand: for each fraction given
this takes the checkpoint nearest F x the run's steps, puts its weight average in as the guide, and scores
translations (or samples) at each autoguidance weight with the evaluator itself, on the same inputs and noise.
Prints a Markdown table, a row per setting as it is scored.

With `--guide-run OTHER` the guides come from another run's checkpoints instead (the fractions are of that run):
a smaller network trained on the same task, say (the autoguidance paper's best guides, Karras et al. 2024, are
smaller as well as younger; on the garments a quarter-size guide did worse than the network's own history, see
the README). It must read and predict what the guided run does (same model,
task, image size, prediction, noise schedule); its width and depth are free.

    python -m genlab.bench.guide_sweep runs/cddim --guide-run runs/cddim-width16 --at 0.5 1 --weights 2 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from genlab import checkpoint as ckpt
from genlab.api import LoadedRun, load_run
from genlab.bench.steps_quality import SettingScores
from genlab.config import flatten_config
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


def guide_from_checkpoint(model: DiffusionModel, path: Path, network: nn.Module | None = None) -> None:
    """Make the weight average stored in checkpoint `path` the model's autoguidance guide. `network`: load it
    into that network instead (another run's, of that run's architecture) and guide with it."""
    if network is not None:
        model.guide_network = network
    if model.guide_network is None:
        raise GenlabError(
            f"{path.parent.parent}: this run keeps no guide network; train it with --set net.autoguide_at=0.25 "
            "(and --set train.keep_checkpoints=100 to keep the averages a sweep can take)"
        )
    model.guide_network.load_state_dict(stored_average(path))  # copies into the existing tensors: layout stays
    model.guide_taken.fill_(True)


def guided_at(run_dir: str | Path, fraction: float) -> LoadedRun:
    """The run loaded with its guide taken from the kept checkpoint nearest `fraction` of its steps."""
    loaded = load_run(run_dir)
    checkpoints = numbered_checkpoints(run_dir)
    guide_from_checkpoint(loaded.model, checkpoints[nearest_step(sorted(checkpoints), fraction * loaded.step)])
    return loaded


# What a guide from another run must share with the guided one: it reads the same inputs and predicts the same
# quantity on the same noise levels (the network's width, depth and training are free).
GUIDE_MUST_MATCH = ("model", "data.task", "data.image_size", "data.direction", "net.prediction", "net.schedule",
                    "net.timesteps", "net.class_conditional", "net.self_condition")


def check_guide_run(guided: LoadedRun, guide: LoadedRun) -> None:
    """Refuse a guide run whose network does not read or predict what the guided run's does."""
    our_settings, their_settings = (flatten_config(run.config.to_dict()) for run in (guided, guide))
    for field in GUIDE_MUST_MATCH:
        ours, theirs = our_settings[field], their_settings[field]
        if ours != theirs:
            raise GenlabError(
                f"{guide.run_dir}: cannot guide {guided.run_dir}: its {field} is {theirs!r}, the guided run's is "
                f"{ours!r} (a guide must read the same inputs and predict the same quantity)"
            )


def sweep(
    run_dir: str | Path,
    fractions: list[float],
    weights: list[float],
    limit: int,
    batch_size: int = 100,
    seed: int = 0,
    sampler_options: dict | None = None,
    features: tuple[str, ...] = ("domain",),
    guide_run: str | Path | None = None,
    at_step: int | None = None,
) -> list[dict]:
    """A row (guide step, its fraction of the run, weight, seconds per image, headline scores) per (fraction,
    weight), scored in the `features` spaces (pixel metrics always). `guide_run`: take the guides from that
    run's checkpoints (the fractions are of its steps) instead of the guided run's own. `at_step`: score the
    network of that numbered checkpoint instead of the last (fractions then of that step): with a constant
    learning rate, the run a budget of that many steps would have trained."""
    kept = numbered_checkpoints(run_dir)
    if at_step is not None and at_step not in kept:
        raise GenlabError(f"{run_dir}: no checkpoint of step {at_step} (kept: {', '.join(map(str, sorted(kept)))})")
    loaded = load_run(run_dir, checkpoint=None if at_step is None else str(kept[at_step]))
    model = loaded.model
    if not isinstance(model, DiffusionModel):
        raise GenlabError(f"{run_dir}: a {loaded.config.model} run has no diffusion sampler to autoguide (ddpm, cddim)")
    source, guide_network = loaded, None
    if guide_run is not None:
        source = load_run(guide_run, device=str(model.device))
        check_guide_run(loaded, source)
        kept, guide_network = numbered_checkpoints(guide_run), source.model.ema_network
    checkpoints = {step: path for step, path in kept.items() if step <= source.step}
    scores = SettingScores(loaded, limit, batch_size, seed, features)
    for fraction in fractions:
        step = nearest_step(sorted(checkpoints), fraction * source.step)
        guide_from_checkpoint(model, checkpoints[step], guide_network)
        for weight in weights:
            row = {"guide_step": step, "guide_fraction": step / source.step, "weight": weight}
            scores.score(row, autoguidance=weight, **(sampler_options or {}))
    return scores.rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a ddpm or cddim run trained with net.autoguide_at, its numbered checkpoints kept")
    parser.add_argument("--guide-run", help="take the guides from this run's numbered checkpoints (e.g. a smaller "
                        "network trained on the same task) instead of the run's own")
    parser.add_argument("--at", type=float, nargs="+", default=[0.1, 0.25, 0.4],
                        help="fractions of the run whose weight average guides (the nearest checkpoint's)")
    parser.add_argument("--weights", type=float, nargs="+", default=[2.0], help="autoguidance weights (1 = none)")
    parser.add_argument("--limit", type=int, default=1000, help="test items translated (or samples drawn)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--checkpoint", type=int, metavar="STEP",
                        help="score the network of this numbered checkpoint (default: the last)")
    parser.add_argument("--steps", type=int, help="DDIM steps (default: the run's)")
    parser.add_argument("--eta", type=float, help="DDIM eta (default: the run's)")
    args = parser.parse_args(argv)
    sampler = {key: value for key, value in (("steps", args.steps), ("eta", args.eta)) if value is not None}
    torch.set_grad_enabled(False)
    sweep(args.run, args.at, args.weights, args.limit, args.batch_size, sampler_options=sampler,
          guide_run=args.guide_run, at_step=args.checkpoint)


if __name__ == "__main__":
    main()
