"""Probe (issue 10): DDIM-50 with its levels spaced otherwise than genlab's trailing spacing, on one trained
ddpm/cddim run with its guide taken half-way. Not a sampler option: on the edges2fashion network it was run on,
every other spacing raised the domain FID (README, "cddim: the noise levels trained on...").

    python scripts/probes/cddim_step_spacing.py RUN [--limit 1000]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch

import genlab.models.diffusion as diffusion
from genlab.bench.guide_sweep import guided_at
from genlab.bench.steps_quality import SettingScores

Spacing = Callable[[int, int], list[int]]


def power_spacing(power: float) -> Spacing:
    """t_i = round((T - 1) ((n - i) / n)^power), descending and unique: power 2 is DDIM's quadratic spacing."""
    return lambda T, n: sorted({round((T - 1) * ((n - i) / n) ** power) for i in range(n)}, reverse=True)


def edm_spacing(sigmas: list[float], rho: float) -> Spacing:
    """EDM's sigma_i = (a + i / (n - 1) (b - a))^rho from sigma(T - 1) down to sigma(0), each on its nearest level."""

    def spacing(T: int, n: int) -> list[int]:
        a, b = sigmas[-1] ** (1 / rho), sigmas[0] ** (1 / rho)
        targets = [(a + i / (n - 1) * (b - a)) ** rho for i in range(n)]
        return sorted({min(range(T), key=lambda t: abs(math.log(sigmas[t] / s))) for s in targets}, reverse=True)

    return spacing


@torch.no_grad()
def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a ddpm or cddim run trained with net.autoguide_at, its checkpoints kept")
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args(argv)
    loaded = guided_at(args.run, 0.5)  # the guide half-way, as the garments' preset takes it
    model = loaded.model
    T = model.config.timesteps
    sigmas = [math.sqrt((1 - model.schedule.alpha_bar(t)) / model.schedule.alpha_bar(t)) for t in range(T)]
    trailing = diffusion.evenly_spaced_timesteps
    spacings = {"trailing (genlab's)": trailing, "power 2": power_spacing(2), "power 1.5": power_spacing(1.5),
                "EDM rho 7": edm_spacing(sigmas, 7), "EDM rho 3": edm_spacing(sigmas, 3)}
    scores = SettingScores(loaded, args.limit, 100, 0, ("domain",))
    try:
        for name, spacing in spacings.items():
            diffusion.evenly_spaced_timesteps = spacing  # the levels DiffusionModel.sample walks through
            scores.score({"spacing": name})
    finally:
        diffusion.evenly_spaced_timesteps = trailing
    return scores.rows


if __name__ == "__main__":
    main()
