"""Quality and time versus sampling steps for a trained diffusion run (DDIM at several step counts, DDPM-1000).

    python -m genlab.bench.steps_quality runs/ddpm --steps 10 20 50 100 --ddpm --count 200

Generation runs are scored with the task's domain network (FID, KID, and class accuracy when conditional);
translation runs with PSNR/SSIM against the test targets. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch

from genlab.api import load_run
from genlab.evaluate import EvalOptions, feature_network, model_translator, translate_split
from genlab.metrics import suite
from genlab.sample import sample_images
from genlab.utils import signed_to_uint8


def measure(run_dir: str, settings: list[tuple[str, int]], count: int, batch_size: int, seed: int = 0) -> list[dict]:
    """One row per (sampler, steps): seconds per image and the quality scores."""
    loaded = load_run(run_dir)
    model, task = loaded.model, loaded.task()
    test = task.split("test")
    rows = []
    if task.spec.kind == "labelled":
        extractor, network = feature_network("domain", task, EvalOptions())
        real = suite.features_of(extractor, test.fields["image"][:count])
        conditional = bool(getattr(model, "conditional", False))
        labels = torch.arange(count) % task.spec.num_classes if conditional else None
    for sampler, steps in settings:
        started = time.perf_counter()
        if task.spec.kind == "labelled":
            images = signed_to_uint8(
                sample_images(model, count, labels, seed, batch_size, sampler=sampler, steps=steps)
            ).cpu()
            seconds = time.perf_counter() - started
            fake = suite.features_of(extractor, images)
            scores = suite.distribution_scores(fake, real, extractor, network, ("fid", "kid"))
            row = {"fid": scores["fid"]["value"], "kid": scores["kid"]["value"]}
            if conditional:
                row["class_accuracy"] = float((fake["probs"].argmax(dim=1) == labels).double().mean())
        else:
            translator = model_translator(model, seed, sampler=sampler, steps=steps)
            outputs = translate_split(translator, test.fields["source"][:count], batch_size)
            seconds = time.perf_counter() - started
            scores = suite.paired_scores(outputs, test.fields["target"][:count], ("psnr", "ssim"))
            row = {"psnr": scores["psnr"]["value"], "ssim": scores["ssim"]["value"]}
        rows.append({"sampler": sampler, "steps": steps, "seconds_per_image": seconds / count, **row})
        print(_markdown(rows[-1:], header=len(rows) == 1), flush=True)
    return rows


def _markdown(rows: list[dict], header: bool = True) -> str:
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
