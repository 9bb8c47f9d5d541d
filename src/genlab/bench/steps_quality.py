"""Quality and time versus sampling steps for a trained diffusion run (DDIM at several step counts, DDPM-1000).

    python -m genlab.bench.steps_quality runs/ddpm --steps 10 20 50 100 --ddpm --count 200

Generation runs are scored with the task's domain network (FID, KID, and class accuracy when conditional);
translation runs with PSNR/SSIM against the test targets. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from genlab.api import load_run
from genlab.evaluate import EvalOptions, Judges, evaluate_model
from genlab.results import EvalResult

HEADLINE = ("domain.fid", "domain.kid", "class_accuracy", "worst_class_accuracy", "psnr", "ssim")


def measure(
    run_dir: str,
    settings: list[tuple[str, int]],
    count: int,
    batch_size: int,
    seed: int = 0,
    features: tuple[str, ...] = ("domain",),
) -> list[dict]:
    """One row (sampler, steps, seconds per image, headline scores) per (sampler, steps), scored by the evaluator."""
    scores = SettingScores(load_run(run_dir), count, batch_size, seed, features)
    for sampler, steps in settings:
        scores.score({"sampler": sampler, "steps": steps}, sampler=sampler, steps=steps)
    return scores.rows


def headline_row(result: EvalResult) -> dict[str, float]:
    """The HEADLINE scores a result has (those skipped or not applicable left out)."""
    row = {}
    for metric in HEADLINE:
        score = result.score(metric)
        if score is not None and score.ok:
            row[metric] = score.value
    return row


class SettingScores:
    """Scores one loaded run under setting after setting with the evaluator (one judge and one set of real
    references throughout), printing each row of the table as it is scored: for sweeps over sampling settings
    or over weights put into the model between calls."""

    def __init__(self, loaded, limit: int, batch_size: int, seed: int, features: tuple[str, ...]) -> None:
        self.loaded, self.task = loaded, loaded.task()
        self.options = EvalOptions(
            features=features, lpips=False, diversity_inputs=0, count=limit, limit=limit,
            batch_size=batch_size, seed=seed, progress=False,
        )
        self.judges: Judges | None = None
        self.rows: list[dict] = []

    def score(self, setting: dict, **sampler) -> dict:
        """`setting` (the row's first columns) plus seconds per image and the headline scores, with `sampler`
        options (EvalOptions fields such as autoguidance or steps) for this call."""
        options = replace(self.options, **sampler)
        self.judges = self.judges or Judges(self.task, options)
        loaded = self.loaded
        result = evaluate_model(loaded.model, self.task, options, run=str(loaded.run_dir), step=loaded.step,
                                judges=self.judges)
        row = {**setting, "seconds_per_image": result.extra["seconds_per_image"], **headline_row(result)}
        self.rows.append(row)
        print(markdown_table([row], header=len(self.rows) == 1), flush=True)
        return row


def markdown_table(rows: list[dict], header: bool = True) -> str:
    """Rows of one shape as a Markdown table (floats to 4 significant digits); `header` false: the rows alone."""
    keys = list(rows[0])
    lines = []
    if header:
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{value:.4g}" if isinstance(value, float) else str(value) for value in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a ddpm, cddim or ldm run directory")
    parser.add_argument(
        "--steps", type=int, nargs="*", default=[10, 20, 50, 100], help="DDIM step counts (none: skip DDIM)"
    )
    parser.add_argument("--ddpm", action="store_true", help="also the DDPM ancestral sampler at all T steps")
    parser.add_argument("--count", type=int, default=200, help="images per setting")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)
    settings = [("ddim", steps) for steps in args.steps]
    if args.ddpm:
        settings.append(("ddpm", load_run(args.run).config.net.timesteps))
    measure(args.run, settings, args.count, args.batch_size)


if __name__ == "__main__":
    main()
