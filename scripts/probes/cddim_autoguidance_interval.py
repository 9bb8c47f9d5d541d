"""Probe (issue 10): autoguidance only at noise levels sigma in (low, high], on one trained ddpm/cddim run with
its guide taken half-way; elsewhere the guide is replaced by the network itself, so (cond - guide) = 0 there.
Not a sampler option: on the edges2fashion network it was run on, no interval beat guiding at every level by
more than the noise (README, "cddim: the noise levels trained on...").

    python scripts/probes/cddim_autoguidance_interval.py RUN --settings 0,2.9,3 2.9,1e9,3 [--limit 1000]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from genlab.bench.guide_sweep import guided_at
from genlab.bench.steps_quality import SettingScores
from genlab.diffusion.schedules import NoiseSchedule


class GuideInInterval(nn.Module):
    """The guide where the level's sigma lies in (low, high], `network` (the guided one) elsewhere."""

    def __init__(self, guide: nn.Module, network: nn.Module, schedule: NoiseSchedule, low: float, high: float):
        super().__init__()
        self.guide, self.network, self.schedule, self.low, self.high = guide, network, schedule, low, high

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        abar = self.schedule.alpha_bar(int(t[0]))  # the sampler gives every item the same level
        inside = self.low < math.sqrt((1 - abar) / abar) <= self.high
        return (self.guide if inside else self.network)(x, t, cond)


@torch.no_grad()
def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a ddpm or cddim run trained with net.autoguide_at, its checkpoints kept")
    parser.add_argument("--settings", nargs="+", default=["0,2.9,3", "2.9,1e9,3", "0.28,5.42,3"],
                        help="LOW,HIGH,WEIGHT: guide at that weight where LOW < sigma <= HIGH")
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args(argv)
    loaded = guided_at(args.run, 0.5)  # the guide half-way, as the garments' preset takes it
    model = loaded.model
    guide = model.guide_network
    scores = SettingScores(loaded, args.limit, 100, 0, ("domain",))
    for setting in args.settings:
        low, high, weight = (float(value) for value in setting.split(","))
        model.guide_network = GuideInInterval(guide, model.ema_network, model.schedule, low, high)
        scores.score({"low": low, "high": high, "weight": weight}, autoguidance=weight)
    return scores.rows


if __name__ == "__main__":
    main()
