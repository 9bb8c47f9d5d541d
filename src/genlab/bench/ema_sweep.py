"""Weight-average widths of a trained diffusion run, swept without retraining (EDM2's post-hoc EMA).

    python -m genlab.bench.ema_sweep runs/cddim --lengths 0.05 0.09 0.15 0.2 --limit 1000

ddpm and cddim sample from a power-function average of their weights whose width is `net.ema_length` (a
fraction of the run). Every numbered checkpoint holds that average as it stood then, and each is a known mix
of the weights of every step (`genlab.nn.ema.average_coefficients`), so a mix of the checkpoints' averages
rebuilds, by least squares, the average any other width would have kept (Karras et al. 2024, "Analyzing and
improving the training dynamics of diffusion models", sec. 3.2). For each width given this rebuilds it from the
run's checkpoints (keep them all with `--set train.keep_checkpoints=100`), samples with it as the run's average
(the autoguidance guide, if any, stays the one trained) and scores it with the evaluator itself. The residual
column is the share of the target profile's mass the mix misplaces (a sawtooth at the checkpoint spacing).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from genlab import checkpoint as ckpt
from genlab.api import load_run
from genlab.bench.guide_sweep import numbered_checkpoints, stored_average
from genlab.bench.steps_quality import SettingScores
from genlab.models.diffusion import DiffusionModel
from genlab.models.latent_diffusion import LatentDiffusion
from genlab.nn.ema import average_coefficients, ema_decay, posthoc_average_weights, power_ema_gamma
from genlab.utils import GenlabError


class SnapshotAverages:
    """The weight averages a run's checkpoints hold, and the mix of them that rebuilds another width."""

    def __init__(self, run_dir: str | Path, model: DiffusionModel, final_step: int) -> None:
        checkpoints = numbered_checkpoints(run_dir)
        self.steps = sorted(step for step in checkpoints if step < final_step) + [final_step]
        paths = checkpoints | {final_step: ckpt.checkpoint_dir(Path(run_dir)) / ckpt.LAST}
        self.parameter_names = [name for name, _ in model.ema_network.named_parameters()]
        self.averages = [stored_average(paths[step]) for step in self.steps]  # each {name: tensor}
        decays = [model.average_decay(update) for update in range(final_step)]  # as training applied them
        self.coefficients = np.stack(  # (snapshots, updates): the weight of each step's weights in each average
            [np.pad(average_coefficients(decays[:step]), (0, final_step - step)) for step in self.steps]
        )
        self.final_step = final_step

    def rebuild(self, length: float) -> tuple[dict[str, torch.Tensor], float]:
        """The power-function average of relative width `length` over the whole run (uncapped), and the residual."""
        gamma = power_ema_gamma(length)
        target = average_coefficients([ema_decay(update, gamma) for update in range(self.final_step)])
        weights, residual = posthoc_average_weights(self.coefficients, target)
        # Parameters are mixed (in float64); buffers (batch norm's statistics) are the last average's, as the
        # average copies them rather than averaging them.
        mixed = dict(self.averages[-1])
        for name in self.parameter_names:
            mixed[name] = sum(float(w) * average[name].double() for w, average in zip(weights, self.averages))
        return mixed, residual


def sweep(
    run_dir: str | Path,
    lengths: list[float],
    limit: int,
    batch_size: int = 100,
    seed: int = 0,
    features: tuple[str, ...] = ("domain",),
) -> list[dict]:
    """A row (width, residual, seconds per image, headline scores) per average width, scored in `features`."""
    loaded = load_run(run_dir)
    model = loaded.model
    if not isinstance(model, DiffusionModel) or isinstance(model, LatentDiffusion):
        raise GenlabError(f"{run_dir}: a {loaded.config.model} run has no pixel-space diffusion average to rebuild "
                          "(ddpm, cddim)")
    snapshots = SnapshotAverages(run_dir, model, loaded.step)
    if len(snapshots.steps) < 2:
        raise GenlabError(f"{run_dir}: no numbered checkpoints besides last.pt; train with "
                          "--set train.keep_checkpoints=100 to keep the averages this rebuilds from")
    scores = SettingScores(loaded, limit, batch_size, seed, features)
    for length in lengths:
        average, residual = snapshots.rebuild(length)
        model.ema_network.load_state_dict(average)  # copied into the existing float32 tensors (their layout stays)
        scores.score({"ema_length": length, "residual": residual})
    return scores.rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a ddpm or cddim run whose numbered checkpoints were kept")
    parser.add_argument("--lengths", type=float, nargs="+", default=[0.05, 0.09, 0.15, 0.2],
                        help="relative widths of the power-function average (net.ema_length)")
    parser.add_argument("--limit", type=int, default=1000, help="test items translated (or samples drawn)")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    sweep(args.run, args.lengths, args.limit, args.batch_size)


if __name__ == "__main__":
    main()
