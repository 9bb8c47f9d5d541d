"""Probe (issue 10): one trained ddpm/cddim run scored as it samples and with its samples read under the value
prior (`net.value_prior`, diffusion/decode.py), the prior measured here as training would have measured it
(so runs trained before the option can be read too). Prints the two rows, the measured error std and the share
of the outputs' pixels at exactly the darkest level, beside the references'.

    python scripts/probes/diffusion_value_prior.py RUN [--autoguidance W] [--limit 1000] [--black]
"""

from __future__ import annotations

import argparse

import torch

from genlab.api import load_run
from genlab.bench.steps_quality import SettingScores
from genlab.evaluate import limited, model_translator, translate_split
from genlab.train.trainer import calibration_batches


def black_share(model, task, limit: int, options: dict) -> tuple[float, float]:
    """The share of the first `limit` test outputs' pixels at level 0, and of their references'."""
    data = limited(task.split("test"), limit)
    outputs = translate_split(model_translator(model, 0, **options), data.fields["source"], 100)
    return float((outputs == 0).float().mean()), float((data.fields["target"] == 0).float().mean())


@torch.no_grad()
def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a ddpm or cddim run")
    parser.add_argument("--autoguidance", type=float, default=None, help="default: the run's")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--black", action="store_true", help="also count the outputs' black pixels (translation)")
    args = parser.parse_args(argv)
    loaded = load_run(args.run)
    model, task = loaded.model, loaded.task()
    sampler = {} if args.autoguidance is None else {"autoguidance": args.autoguidance}
    scores = SettingScores(loaded, args.limit, 100, 0, ("domain",))
    model.config.value_prior = False
    scores.score({"decoder": "as sampled"}, **sampler)
    model.config.value_prior = True
    model.calibrate(calibration_batches(task, model.calibration_images, model.device))
    error_std = float(model.value_error_std)
    scores.score({"decoder": f"value prior, error std {error_std:.2f} levels"}, **sampler)
    if args.black:
        for value_prior in (False, True):
            model.config.value_prior = value_prior
            share, real = black_share(model, task, args.limit, sampler)
            print(f"value prior {value_prior}: {share:.3f} of the outputs' pixels at level 0 (references: {real:.3f})")
    return scores.rows


if __name__ == "__main__":
    main()
