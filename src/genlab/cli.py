"""The `genlab` command. Thin: it parses arguments, builds configs and calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from genlab import __version__
from genlab.config import PRECISIONS
from genlab.utils import GenlabError

EPILOG = """examples:
  genlab benchmark --out bench/                # the main job: compare the translation families on facades-synth
  genlab data list
  genlab train pix2pix --task facades-synth --preset quick --out runs/p2p
  genlab evaluate runs/p2p --baselines
  genlab translate runs/p2p labels/*.png --out translated/
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the subcommand; user errors print one line and exit with code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except GenlabError as error:
        print(f"genlab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genlab",
        description="Train, sample, evaluate and compare generative image models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"genlab {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_data(commands)
    _add_train(commands)
    _add_sample(commands)
    _add_translate(commands)
    _add_evaluate(commands)
    _add_score(commands)
    _add_plot(commands)
    _add_export(commands)
    _add_benchmark(commands)
    _add_report(commands)
    _add_speed(commands)
    _add_weights(commands)
    return parser


# --- data ---------------------------------------------------------------------------------------------------
def _add_data(commands) -> None:
    data = commands.add_parser(
        "data",
        help="list, show and export datasets",
        description="Datasets (tasks): list the registered tasks and whether they work offline, save a grid of "
        "examples to look at, or export a paired task as pix2pix A|B images. Any folder of your own images is a "
        "task too: folder:PATH.",
        epilog="examples:\n  genlab data list\n  genlab data show facades-synth --out facades.png --count 8\n"
        "  genlab data export facades-synth --out facades_ab/ --size 64",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = data.add_subparsers(title="actions", metavar="ACTION")

    listing = actions.add_parser("list", help="list the tasks, their kind, size and offline availability")
    listing.add_argument("--data-root", help="folder searched first for on-disk datasets")
    listing.set_defaults(handler=_data_list)

    show = actions.add_parser("show", help="save a grid of examples of a task as PNG")
    show.add_argument("task", help="task name (see `genlab data list`) or folder:PATH")
    show.add_argument("--out", required=True, help="PNG file to write")
    show.add_argument("--split", default="train", choices=["train", "val", "test"], help="split (default train)")
    show.add_argument("--count", type=int, default=8, help="items to show (default 8)")
    show.add_argument("--size", type=int, default=None, help="image size in pixels (default: the task's)")
    show.add_argument("--data-root", help="folder searched first for on-disk datasets")
    show.set_defaults(handler=_data_show)

    export = actions.add_parser("export", help="write a paired task as pix2pix aligned A|B PNGs")
    export.add_argument("task", help="a paired task, e.g. facades-synth")
    export.add_argument("--out", required=True, help="folder to write train/ val/ test/ into")
    export.add_argument("--size", type=int, default=None, help="image size in pixels (default: the task's)")
    export.add_argument("--data-root", help="folder searched first for on-disk datasets")
    export.set_defaults(handler=_data_export)
    data.set_defaults(handler=lambda args: data.print_help() or 2)


def _data_config(task: str, size: int | None, data_root: str | None):
    from genlab.config import DataConfig
    from genlab.data.tasks import task_entries

    entry = task_entries().get(task)
    default_size = 64 if entry is None or entry.native_size is None else entry.native_size
    return DataConfig(task=task, image_size=size or default_size, data_root=data_root)


def _data_list(args) -> int:
    from genlab.data.tasks import task_entries

    config = _data_config("facades-synth", None, args.data_root)
    print(f"{'task':<24} {'kind':<9} {'size':>5}  {'offline':<8} description")
    for entry in task_entries().values():
        config.task = entry.name
        available = "yes" if entry.available(config) else "no"
        size = "any" if entry.native_size is None else str(entry.native_size)
        print(f"{entry.name:<24} {entry.kind:<9} {size:>5}  {available:<8} {entry.description}")
    print(
        f"{'folder:PATH':<24} {'any':<9} {'any':>5}  {'yes':<8} "
        "your images: aligned A|B, trainA/trainB, or class folders"
    )
    return 0


def _data_show(args) -> int:
    from genlab.data.tasks import FIELDS, get_task
    from genlab.grid import save_grid

    task = get_task(_data_config(args.task, args.size, args.data_root))
    split = task.split(args.split)
    count = min(args.count, len(split))
    image_keys = [key for key in FIELDS[task.spec.kind] if split.fields[key].dim() == 4]
    rows = [task.prepare({key: split.fields[key][:count]})[key] for key in image_keys]
    save_grid(rows, args.out, scale=max(1, 128 // task.spec.image_size))
    print(f"wrote {args.out}: {count} {args.split} items of {task.spec.name} ({' | '.join(FIELDS[task.spec.kind])})")
    # A folder reads its jitter off its training images; load_scale_note then says what it found.
    jitter = [f"resize to {task.load_size} px, random {task.spec.image_size} px crop"] if task.load_scale != 1 else []
    jitter += ["horizontal flips"] if task.config.flip else []
    note = f" ({task.load_scale_note})" if task.load_scale_note else ""
    print(f"training jitter: {', '.join(jitter) or 'none'}{note}")
    return 0


def _data_export(args) -> int:
    from genlab.data.folders import write_aligned_pairs
    from genlab.data.tasks import SPLITS, get_task

    task = get_task(_data_config(args.task, args.size, args.data_root))
    if task.spec.kind != "paired":
        raise GenlabError(f"data export: {args.task} is a {task.spec.kind} task; only paired tasks export as A|B")
    for split_name in SPLITS:
        split = task.split(split_name)
        write_aligned_pairs(split, Path(args.out) / split_name)
        print(f"wrote {len(split)} {split_name} pairs to {Path(args.out) / split_name}")
    return 0


# --- train --------------------------------------------------------------------------------------------------
def _add_train(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a model on a task",
        description="Train a model family on a task. Settings resolve as: family defaults < --preset < the "
        "preset's refinements for the image size and then for the task, where it has some (e.g. pix2pix's and "
        "cddim's quick presets for images of 32 px or less, and edges2fashion's 32 px) < options < --set; "
        "--dry-run prints the result. A folder task trains without the resize-and-crop jitter when its images "
        "show objects on a plain background, with it otherwise (photos). The resolved config is saved as "
        "RUN/config.yaml; checkpoints go to RUN/checkpoints/.",
        epilog="example: genlab train pix2pix --task facades-synth --preset quick --steps 2000 "
        "--set net.gan_loss=lsgan",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("model", nargs="?", help=f"model family: {', '.join(_model_names())}; omit with --resume")
    train.add_argument(
        "--task", help="task name (see `genlab data list`) or folder:PATH (default: the preset's; facades-synth "
        "for translation models, fashion-mnist for generation models)"
    )
    train.add_argument("--preset", help="settings preset of the family: quick (default), paper, seed")
    train.add_argument("--size", type=int, help="image size in pixels (sets data.image_size)")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="optimisation steps (sets train.steps)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget in minutes (sets train.minutes)")
    budget.add_argument("--images", type=int, help="training images seen, steps x batch size (sets train.images)")
    train.add_argument("--batch-size", type=int, help="images per step (sets train.batch_size)")
    train.add_argument("--seed", type=int, help="run seed (data order, init, noise)")
    train.add_argument("--device", help="auto (default: cuda > mps > cpu), cpu, cuda, cuda:N")
    train.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="autocast precision (sets train.precision): auto = bf16/fp16 on CUDA, fp32 elsewhere; bf16 also on "
        "CPUs; fp16 (with a grad scaler) needs CUDA",
    )
    train.add_argument(
        "--compile", action="store_const", const=True, help="torch.compile the networks (sets train.compile)"
    )
    train.add_argument("--data-root", help="folder searched first for on-disk datasets")
    train.add_argument("--out", help="run directory (default runs/MODEL-TASK, numbered if taken)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. net.lambda_l1=50 (repeatable)",
    )
    train.add_argument(
        "--on-nan",
        choices=["stop", "rollback"],
        help="on a NaN/Inf loss or weight: stop, keeping the last finite checkpoint (default), or roll back to it "
        "with lower learning rates (train.nan_lr_factor, at most train.max_rollbacks times)",
    )
    train.add_argument(
        "--load-size", type=int, help="resize to this size before the random crop (sets data.load_size; "
        "default: --size x the task's data.load_scale: 300/256 for photos, as pix2pix's 256 -> 286/300 jitter; 1, no "
        "jitter, for Fashion-MNIST's centred garments and folders of objects on a plain background)"
    )
    train.add_argument("--crop-size", type=int, help="random crop size = the model's image size (as --size)")
    train.add_argument(
        "--direction",
        choices=["AtoB", "BtoA"],
        help="for folder:PATH pairs: AtoB (default) takes A (the left half) as the source; BtoA swaps them",
    )
    train.add_argument("--config", help="start from a saved config.yaml instead of a preset")
    train.add_argument("--dry-run", action="store_true", help="check and print the resolved config, then exit")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--logger",
        choices=["csv", "tensorboard", "wandb"],
        help="also log to TensorBoard (RUN/tensorboard/) or an offline W&B run (RUN/wandb/); metrics.csv is always "
        "written (sets train.logger; default csv)",
    )
    train.set_defaults(handler=_train)


def _model_names() -> list[str]:
    from genlab.models import MODELS

    return sorted(MODELS)


def _train(args) -> int:
    from genlab.config import apply_override, set_budget, set_value, validate_config
    from genlab.data.tasks import check_task_name
    from genlab.plot import plot_curves
    from genlab.runs import build_run_config, load_run_config
    from genlab.train.trainer import train

    options = {
        "data.task": args.task,
        "data.image_size": args.crop_size or args.size,
        "data.load_size": args.load_size,
        "data.direction": args.direction,
        "train.batch_size": args.batch_size,
        "seed": args.seed,
        "train.device": args.device,
        "data.data_root": args.data_root,
        "train.on_nan": args.on_nan,
        "train.precision": args.precision,
        "train.compile": args.compile,
        "train.logger": args.logger,
    }
    if args.resume:
        config = _resume_config(args, options)
        run_dir = Path(args.out)
    else:
        if args.config:
            config = load_run_config(_text_file(args.config))
            for key, value in options.items():
                if value is not None:
                    set_value(config, key, value, source="option")
            for assignment in args.set:
                apply_override(config, assignment)
        else:
            if not args.model:
                raise GenlabError(f"train: name a model (valid: {', '.join(_model_names())})")
            config = build_run_config(args.model, args.preset, options, args.set)
        set_budget(config.train, args.steps, args.minutes, args.images)
        run_dir = Path(args.out) if args.out else _free_run_dir(config.model, config.data.task)
    validate_config(config)  # every range, as train() checks it: --dry-run answers what a real run would
    check_task_name(config.data.task)
    if args.dry_run:
        print(config.to_yaml(), end="")
        return 0
    # curves.png at each checkpoint and at the end (the trainer cannot import plotting, a layer above it)
    result = train(
        config, run_dir, resume=args.resume, progress=not args.quiet,
        on_checkpoint=lambda model, run: plot_curves([run], Path(run) / "curves.png"),
    )
    if int(os.environ.get("RANK", "0")) == 0:  # one line per run, not one per process
        print(f"{result.run_dir}: {result.steps} steps in {result.seconds / 60:.1f} min ({result.stopped_by})")
    return 0


def _text_file(path: str) -> str:
    """`path` if it holds UTF-8 text; a config file that is binary (an image, a checkpoint) is a clear error."""
    try:
        Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise GenlabError(f"{path}: config file not found") from None
    except UnicodeDecodeError:
        raise GenlabError(f"{path}: not a text file; --config expects a YAML config such as RUN/config.yaml") from None
    except OSError as error:
        raise GenlabError(f"{path}: cannot read the config file ({error.strerror})") from None
    return path


# The options of `train` that set a config key, for naming what a resume refuses.
_TRAIN_OPTION_NAMES = {
    "data.task": "--task",
    "data.image_size": "--size",
    "train.batch_size": "--batch-size",
    "seed": "--seed",
    "train.device": "--device",
    "data.data_root": "--data-root",
    "train.on_nan": "--on-nan",
    "train.precision": "--precision",
    "train.compile": "--compile",
}


def _resume_config(args, options: dict):
    """The run's saved config with the options given applied: what changes the model or data is refused by name;
    budgets, device and cadences are applied and each change is printed."""
    from genlab.config import RESUME_SAFE_KEYS, apply_override, flatten_config, resume_changes, set_budget, set_value
    from genlab.train.trainer import resume_config

    if not args.out:
        raise GenlabError("train --resume needs --out RUN, the run directory to continue")
    if args.config or args.preset:
        raise GenlabError("train --resume continues the run's saved config; --config and --preset cannot change it")
    config = resume_config(args.out)
    if args.model and args.model != config.model:
        raise GenlabError(f"{args.out} is a {config.model} run, not {args.model}")
    saved = config.to_dict()
    for key, value in options.items():
        if value is not None:
            set_value(config, key, value, source="option")
    set_budget(config.train, args.steps, args.minutes, args.images)
    for assignment in args.set:
        apply_override(config, assignment)
    changes = resume_changes(saved, config)
    old, new = flatten_config(saved), flatten_config(config.to_dict())
    refused = [key for key in changes if key not in RESUME_SAFE_KEYS]
    if refused:
        named = ", ".join(f"{_TRAIN_OPTION_NAMES.get(key, '--set ' + key)} ({old[key]!r} -> {new[key]!r})"
                          for key in refused)
        raise GenlabError(
            f"train --resume: {named} would change the model or its data, which a resumed run cannot; "
            "start a new run with another --out to change them"
        )
    for key in changes:
        print(f"resume: {key} {old[key]!r} -> {new[key]!r}", file=sys.stderr)
    return config


def _free_run_dir(model: str, task: str) -> Path:
    base = Path("runs") / f"{model}-{task.replace('folder:', '').replace('/', '_').strip('_')}"
    candidate, number = base, 2
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{number}")
        number += 1
    return candidate


# --- speed --------------------------------------------------------------------------------------------------
def _add_speed(commands) -> None:
    speed = commands.add_parser(
        "speed",
        help="time a model's training step and inference (s/step, images/s, FLOP/s against the matmul peak)",
        description="Seconds per training step (median after warm-up), images/s, FLOPs per step "
        "(FlopCounterMode), achieved GFLOP/s against the measured fp32/bf16 matmul peak, the data path's rate, "
        "and sampling/translation per image. Settings resolve as for `genlab train`.",
        epilog="example: genlab speed pix2pix --preset paper --precision bf16 --set train.channels_last=true",
    )
    speed.add_argument("model", help="model family")
    speed.add_argument("--preset", help="settings preset of the family (default: its own)")
    speed.add_argument("--task", help="task name (default: the preset's)")
    speed.add_argument("--size", type=int, help="image size (sets data.image_size)")
    speed.add_argument("--batch-size", type=int, help="images per step (sets train.batch_size)")
    speed.add_argument("--precision", choices=PRECISIONS, help="autocast precision")
    speed.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    speed.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    speed.add_argument("--sample-steps", type=int, help="diffusion sampler steps for the inference timing")
    speed.add_argument("--peak-size", type=int, default=2048, help="side of the timed peak matmul (default 2048)")
    speed.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key (repeatable)")
    speed.add_argument("--json", action="store_true", help="print one JSON object instead of the lines")
    speed.set_defaults(handler=_speed)


def _speed(args) -> int:
    from dataclasses import asdict

    from genlab.bench.speed import format_report, measure, speed_config

    config = speed_config(args.model, args.preset, args.task, args.size, args.batch_size, args.precision, args.set)
    report = measure(
        config, steps=args.steps, warmup=args.warmup, sample_steps=args.sample_steps, peak_size=args.peak_size
    )
    print(json.dumps(asdict(report)) if args.json else format_report(report))
    return 0


# --- sample -------------------------------------------------------------------------------------------------
def _add_sample(commands) -> None:
    sample = commands.add_parser(
        "sample",
        help="generate images with a trained generation run",
        description="Generate images. Diffusion runs take a sampler (ddpm: ancestral, all steps; ddim: any "
        "number of steps, eta 0 = deterministic), a guidance scale for class-conditional runs, and can "
        "interpolate between noises (DDIM, eta 0).",
        epilog="example: genlab sample runs/ddpm --sampler ddim --steps 50 --guidance 3 --out samples.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sample.add_argument("run", help="run directory")
    sample.add_argument("--out", required=True, help="a .png file for a grid, or a folder for one PNG per image")
    sample.add_argument("--count", type=int, default=None, help="images (default: 10 per class, or 64)")
    sample.add_argument("--labels", help="comma-separated class labels (class-conditional runs), e.g. 0,0,3")
    _add_sampler_options(sample)
    sample.add_argument(
        "--interpolate",
        type=int,
        metavar="K",
        help="K-point walks between two random latent codes, one per row (spherical for Gaussian noise: "
        "GANs and diffusion with DDIM eta 0; linear for a VAE)",
    )
    sample.add_argument("--seed", type=int, default=0, help="noise seed: sample i depends on (seed, i) only")
    sample.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    sample.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N")
    _add_inference_precision(sample)
    sample.set_defaults(handler=_sample)


def _add_inference_precision(parser) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="autocast of the forward passes: fp32 (default; what evaluate scores with), bf16 (CUDA, or CPUs "
        "with bf16 instructions, where it is faster), fp16 (CUDA), auto (bf16/fp16 on CUDA, fp32 elsewhere)",
    )


TEMPERATURE_HELP = "VAE families: scale of the prior draws z ~ N(0, t^2 I) (default 1; below 1: typical samples)"


def _sampler_options(args) -> dict:
    """The sampling options given on the command line (none: the run's defaults)."""
    if getattr(args, "eta", None) is not None and not 0 <= args.eta <= 1:
        raise GenlabError(f"--eta must be in [0, 1], got {args.eta}")
    if getattr(args, "steps", None) is not None and args.steps < 1:
        raise GenlabError(f"--steps must be at least 1, got {args.steps}")
    if getattr(args, "temperature", None) is not None and not args.temperature >= 0:
        raise GenlabError(f"--temperature must be 0 or more (1 = the prior itself), got {args.temperature}")
    pairs = (("sampler", args.sampler), ("steps", args.steps), ("eta", args.eta), ("guidance_scale", args.guidance),
             ("guidance_interval", getattr(args, "guidance_interval", None)),
             ("autoguidance", getattr(args, "autoguidance", None)),
             ("temperature", getattr(args, "temperature", None)))
    return {key: value for key, value in pairs if value is not None}


def _check_sampler_options(model, options: dict) -> None:
    model.check_sampling_options(options, flags=True)


def _sample(args) -> int:
    import torch

    from genlab.api import load_run
    from genlab.models.base import cycle_labels
    from genlab.sample import interpolate, sample_images, save_samples

    if args.count is not None and args.count < 1:
        raise GenlabError(f"--count must be at least 1, got {args.count}")
    if args.batch_size < 1:
        raise GenlabError(f"--batch-size must be at least 1, got {args.batch_size}")
    loaded = load_run(args.run, device=args.device, precision=args.precision)
    model = loaded.model
    model.require("sample")
    options = _sampler_options(args)
    _check_sampler_options(model, options)
    labels = None
    if args.labels:
        try:
            labels = torch.tensor([int(item) for item in args.labels.split(",")])
        except ValueError as error:
            raise GenlabError(f"--labels: expected comma-separated integers, got {args.labels!r}") from error
        model.check_labels(labels, len(labels))  # one clear error for a label outside the classes
    classes = model.spec.num_classes if model.conditional else 0
    if args.interpolate:
        rows = args.count or (len(labels) if labels is not None else 4)
        images = interpolate(model, rows, args.interpolate, labels, args.seed, **options)
        columns = args.interpolate
    else:
        count = args.count or (len(labels) if labels is not None else (10 * classes if classes else 64))
        if labels is not None and len(labels) != count:
            raise GenlabError(f"--labels gives {len(labels)} labels for --count {count}")
        images = sample_images(model, count, labels, args.seed, args.batch_size, progress=True, **options)
        columns = classes if classes and not args.labels else min(count, 10)
    shown = None  # the class of each image, for captions
    if classes:
        shown = labels if labels is not None else cycle_labels(rows if args.interpolate else count, classes)
        if args.interpolate:
            shown = shown.repeat_interleave(args.interpolate)
    title = f"{model.name} on {model.spec.name}"
    written = save_samples(images, Path(args.out), columns, shown, model.spec.class_names, title)
    where = written[-1] if len(written) == 1 else f"{args.out} (grid: {written[-1]})"
    print(f"wrote {len(images)} samples to {where}")
    return 0


# --- translate ----------------------------------------------------------------------------------------------
def _add_translate(commands) -> None:
    translate = commands.add_parser(
        "translate",
        help="translate images with a trained run",
        description="Translate source images with a run's model; writes one image per input, same file name, "
        "at the input's size. Inputs that are pix2pix A|B pairs (twice as wide as high) need --aligned, which "
        "translates their left half (the source).",
        epilog="examples:\n  genlab translate runs/p2p labels/*.png --out translated/\n"
        "  genlab translate runs/p2p facades_ab/test/ --aligned --out translated/\n"
        "  genlab translate runs/cddim labels/ --sampler ddim --steps 50 --out translated/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    translate.add_argument("run", help="run directory")
    translate.add_argument("inputs", nargs="+", help="image files or folders of images")
    translate.add_argument("--out", required=True, help="folder for the outputs")
    translate.add_argument("--aligned", action="store_true", help="inputs are A|B pairs: translate the left half")
    translate.add_argument(
        "--direction",
        choices=["AtoB", "BtoA"],
        default="AtoB",
        help="AtoB (default) or BtoA for models with a reverse generator (cyclegan)",
    )
    _add_sampler_options(translate)
    translate.add_argument(
        "--seed", type=int, default=0, help="noise seed of stochastic models: output i depends on (seed, i) only"
    )
    translate.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    translate.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N")
    _add_inference_precision(translate)
    translate.set_defaults(handler=_translate)


def _add_sampler_options(parser) -> None:
    parser.add_argument("--sampler", choices=["ddpm", "ddim"], help="diffusion sampler (default: the run's)")
    parser.add_argument("--steps", type=int, help="sampling steps (ddim: any number up to T)")
    parser.add_argument("--eta", type=float, help="DDIM eta in [0, 1]: 0 deterministic, 1 DDPM-like")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = none)")
    parser.add_argument(
        "--guidance-interval",
        type=_noise_interval,
        metavar="LOW,HIGH",
        help="guide only at noise levels sigma = sqrt((1 - abar) / abar) in (LOW, HIGH], plain conditional "
        "elsewhere (Kynkaanniemi et al. 2024), e.g. 0,2.9 (the ddpm quick preset's; default: the run's "
        "net.guidance_interval, unset = every level; 0,1e9 covers every level)",
    )
    parser.add_argument(
        "--autoguidance",
        type=float,
        metavar="W",
        help="autoguidance weight (Karras et al. 2024) for runs trained with net.autoguide_at: also steer away "
        "from the weaker network kept then, at every level; 1 = none (default: the run's net.autoguidance)",
    )
    parser.add_argument("--temperature", type=float, help=TEMPERATURE_HELP)


def _noise_interval(text: str) -> tuple[float, float]:
    """'LOW,HIGH' -> (low, high) with 0 <= low < high."""
    from genlab.diffusion.samplers import check_noise_interval

    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers), got {text!r}") from None
    try:
        return check_noise_interval((low, high))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _translate(args) -> int:
    from genlab.api import load_run
    from genlab.translate import translate_files

    if args.batch_size < 1:
        raise GenlabError(f"--batch-size must be at least 1, got {args.batch_size}")
    loaded = load_run(args.run, device=args.device, precision=args.precision)
    model = loaded.model
    model.require("translate")
    if args.direction == "BtoA":
        model.require("reverse")
    options = _sampler_options(args)
    _check_sampler_options(model, options)
    if model.abilities.reverse:
        options["direction"] = args.direction
    written = translate_files(model, args.inputs, Path(args.out), args.aligned, args.batch_size, args.seed, **options)
    print(f"wrote {len(written)} images to {args.out}")
    return 0


# --- evaluate -----------------------------------------------------------------------------------------------
def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="score a run on a held-out split and write RUN/eval.json",
        description="Translate (paired tasks) or sample (generation tasks) and run the metric suite that fits: "
        "PSNR, SSIM, MS-SSIM, LPIPS; FID, KID, IS, precision/recall in the domain network's and Inception's "
        "feature spaces; FCN-score for label-map tasks; class accuracy for class-conditional samples; diversity.",
    )
    evaluate.add_argument("run", help="run directory")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"], help="split (default test)")
    evaluate.add_argument("--limit", type=int, help="score only the first N items of the split")
    evaluate.add_argument("--count", type=int, help="images to generate for generation runs (default: up to 1000)")
    evaluate.add_argument(
        "--features",
        default="domain,inception",
        help="feature spaces, comma-separated: domain, domain:TASK, inception (default both; "
        "'none' for pixel metrics only)",
    )
    _add_inception_option(evaluate)
    evaluate.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    evaluate.add_argument(
        "--baselines", action="store_true", help="also score the mean-training-photo and nearest-neighbour baselines"
    )
    _add_sampler_options(evaluate)
    evaluate.add_argument("--checkpoint", metavar="FILE", help="a checkpoint of the run (default: checkpoints/last.pt)")
    evaluate.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    evaluate.add_argument("--seed", type=int, default=0, help="sampling and KID-subset seed (default 0)")
    evaluate.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.set_defaults(handler=_evaluate)


def _add_inception_option(parser) -> None:
    parser.add_argument(
        "--inception-weights",
        metavar="PATH",
        help="the FID Inception weights (pt_inception-2015-12-05-6726825d.pth); default: "
        "$GENLAB_INCEPTION_WEIGHTS, then the cache, then a download",
    )


def _feature_spaces(text: str) -> tuple[str, ...]:
    return () if text.strip() in ("", "none") else tuple(item.strip() for item in text.split(",") if item.strip())


def _evaluate(args) -> int:
    from genlab.evaluate import EvalOptions, eval_file_name, evaluate_run

    options = EvalOptions(
        split=args.split,
        batch_size=args.batch_size,
        limit=args.limit,
        count=args.count,
        features=_feature_spaces(args.features),
        inception_weights=args.inception_weights,
        lpips=not args.no_lpips,
        baselines=args.baselines,
        seed=args.seed,
        checkpoint=args.checkpoint,
        **_sampler_options(args),
    )
    result = evaluate_run(args.run, options, device=args.device)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    setting = "".join(f", {key} {value}" for key, value in result.sampler.items())
    print(f"{result.model} on {result.task} ({result.split}, {result.count} items, step {result.step}{setting})")
    print_scores({"model": result.scores, **result.baselines})
    print(f"wrote {Path(args.run) / 'eval' / eval_file_name(result)} and {Path(args.run) / 'eval.json'}")
    return 0


def print_scores(rows: dict[str, list]) -> None:
    """One line per metric, one column per row (model, baselines); notes and skip reasons listed once below."""
    metrics = list(dict.fromkeys(score.metric for scores in rows.values() for score in scores))
    width = max((len(metric) for metric in metrics), default=8) + 4
    print(f"{'':<{width}}" + "".join(f"{name:>20}" for name in rows))
    remarks: dict[str, str] = {}
    for metric in metrics:
        cells = []
        for scores in rows.values():
            score = next((item for item in scores if item.metric == metric), None)
            if score is None:
                cells.append("")
                continue
            if not score.ok:
                remarks.setdefault(metric, f"skipped: {score.skipped.splitlines()[0]}")
            elif score.notes:
                remarks.setdefault(metric, "; ".join(score.notes))
            cells.append(score.format() + (" *" if score.ok and score.notes else ""))
        arrow = "↑" if next(s for v in rows.values() for s in v if s.metric == metric).higher_is_better else "↓"
        print(f"{metric + ' ' + arrow:<{width}}" + "".join(f"{cell:>20}" for cell in cells))
    for metric, remark in remarks.items():
        print(f"  {metric}: {remark}")
    networks = {
        score.network.name: score.network.held_out_accuracy
        for scores in rows.values()
        for score in scores
        if score.network is not None and score.network.held_out_accuracy is not None
    }
    for name, accuracy in networks.items():
        print(f"  {name}: held-out accuracy on real data {accuracy:.1%}")


# --- score --------------------------------------------------------------------------------------------------
def _add_score(commands) -> None:
    score = commands.add_parser(
        "score",
        help="score a folder of images against a reference folder",
        description="Paired metrics (psnr, ssim, ms_ssim, lpips) match files by name; distribution metrics "
        "(fid, kid, is, precision, recall) compare the two sets in a feature space.",
        epilog="example: genlab score translated/ photos/ --metrics psnr,ssim,fid --features domain:facades-synth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("pred_dir", help="folder of generated or translated images")
    score.add_argument("ref_dir", help="folder of reference (real) images")
    score.add_argument(
        "--metrics",
        default="psnr,ssim,ms_ssim,lpips,fid,kid,is,precision,recall",
        help="comma-separated metrics (default: all)",
    )
    score.add_argument(
        "--features",
        default="inception",
        help="feature space for distribution metrics: inception (default) or domain:TASK",
    )
    _add_inception_option(score)
    score.add_argument("--size", type=int, help="image size of domain:TASK networks (default: the images')")
    score.add_argument("--json", action="store_true", help="print the results as JSON")
    score.set_defaults(handler=_score)


def _score(args) -> int:
    from genlab.score import score_folders

    metrics = tuple(item.strip() for item in args.metrics.split(",") if item.strip())
    scores = score_folders(args.pred_dir, args.ref_dir, metrics, args.features, args.inception_weights, args.size)
    if args.json:
        print(json.dumps([score.to_dict() for score in scores], indent=2))
    else:
        print(f"{args.pred_dir} vs {args.ref_dir}")
        print_scores({"score": scores})
    return 0


# --- benchmark and report ---------------------------------------------------------------------------------------
def _add_benchmark(commands) -> None:
    bench = commands.add_parser(
        "benchmark",
        help="train several models on one task under one budget, evaluate them alike, write the report",
        description="The main job. Each entry (a family, or a family with overrides) is trained for the same "
        "budget on the same task and split, scored with the same seeds and sample counts, and compared in "
        "OUT/report.html (self-contained), OUT/results.md and OUT/results.json; baselines (mean training image, "
        "nearest neighbour) are scored beside them. Paired metrics carry bootstrap 95% intervals; a winner is "
        "named only where intervals separate. Rerunning with the same --out skips finished entries and resumes "
        "the one in progress.",
        epilog="examples:\n"
        "  genlab benchmark --out bench/                                   # ~15 min on 2 CPU cores\n"
        "  genlab benchmark --models 'pix2pix[net.gan_loss=vanilla],pix2pix[net.gan_loss=lsgan]' --out l1-vs-l2/\n"
        "  genlab benchmark --task fashion-mnist --models vae,dcgan,cgan,ddpm --budget-minutes 3 --out gen/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--task", default="facades-synth", help="task name or folder:PATH (default facades-synth)")
    bench.add_argument(
        "--models",
        help="comma-separated entries, each MODEL or MODEL[key=value,...] (default: every family that fits the "
        "task: pix2pix,cyclegan,cvae,cgan,cddim,ldm for translation; vae,dcgan,cgan,ddpm,ldm for generation)",
    )
    bench.add_argument("--preset", default="quick", help="each family's preset: quick (default), paper, seed")
    budget = bench.add_mutually_exclusive_group()
    budget.add_argument("--budget-minutes", type=float, help="training minutes per entry and seed (default 1.5)")
    budget.add_argument("--budget-images", type=int, help="training images per entry and seed (steps x batch)")
    bench.add_argument("--size", type=int, help="image size in pixels (default: each preset's)")
    bench.add_argument("--seeds", default="0", help="training seeds, comma-separated, e.g. 0,1,2 (default 0)")
    bench.add_argument("--eval-limit", type=int, default=100, help="test items scored, the first N (default 100)")
    bench.add_argument("--eval-count", type=int, default=500, help="samples scored for generation tasks (default 500)")
    bench.add_argument(
        "--features", default="domain,inception", help="feature spaces: domain, inception, or none (default both)"
    )
    bench.add_argument("--data-root", help="folder searched first for on-disk datasets")
    bench.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N")
    bench.add_argument("--out", required=True, help="benchmark folder: runs/, report.html, results.md, results.json")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(handler=_benchmark)


def _benchmark(args) -> int:
    from genlab.bench.benchmark import BenchmarkConfig, run_benchmark

    try:
        seeds = tuple(int(item) for item in args.seeds.split(",") if item.strip())
    except ValueError as error:
        raise GenlabError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from error
    config = BenchmarkConfig(
        task=args.task,
        models=(args.models,) if args.models else (),
        preset=args.preset,
        budget_minutes=args.budget_minutes,
        budget_images=args.budget_images,
        size=args.size,
        seeds=seeds,
        eval_limit=args.eval_limit,
        eval_count=args.eval_count,
        features=_feature_spaces(args.features),
        data_root=args.data_root,
        device=args.device,
    )
    paths = run_benchmark(config, args.out, progress=not args.quiet)
    print(_results_section(paths["markdown"]))
    print(f"wrote {paths['html']} and {paths['markdown']}")
    return 0


def _results_section(markdown: Path) -> str:
    """The results table of results.md (what a terminal user wants to see first)."""
    lines = markdown.read_text().splitlines()
    start = lines.index("## Results") if "## Results" in lines else 0
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(line for line in lines[start:end] if not line.startswith("| feature network"))


def _add_report(commands) -> None:
    report = commands.add_parser(
        "report",
        help="build the comparison report from existing run directories",
        description="The benchmark's report (report.html, results.md, results.json, figures) from runs that "
        "were each evaluated with `genlab evaluate` (RUN/eval.json). Runs that differ only in their seed are "
        "combined as seeds of one entry.",
        epilog="example: genlab evaluate runs/p2p --baselines && genlab evaluate runs/cddim && "
        "genlab report runs/p2p runs/cddim --out report/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("runs", nargs="+", help="run directories (each with eval.json)")
    report.add_argument("--out", required=True, help="folder to write the report into")
    report.add_argument("--names", help="comma-separated entry names, one per run (default: from the configs)")
    report.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N")
    report.set_defaults(handler=_report)


def _report(args) -> int:
    from genlab.bench.report import report_from_runs

    names = [item.strip() for item in args.names.split(",")] if args.names else None
    paths = report_from_runs(args.runs, args.out, names=names, device=args.device)
    print(f"wrote {paths['html']} and {paths['markdown']}")
    return 0


# --- plot and export ------------------------------------------------------------------------------------------
def _add_plot(commands) -> None:
    plot = commands.add_parser(
        "plot",
        help="plot the training losses of one or more runs as a PNG",
        description="One panel per loss in RUN/metrics.csv, the runs overlaid; log scale where a loss spans more "
        "than 10x.",
        epilog="example: genlab plot runs/p2p runs/cddim --out curves.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plot.add_argument("runs", nargs="+", help="run directories (each with metrics.csv)")
    plot.add_argument("--out", default="curves.png", help="PNG file to write (default curves.png)")
    plot.add_argument("--names", help="comma-separated legend names, one per run (default: the folder names)")
    plot.set_defaults(handler=_plot)


def _plot(args) -> int:
    from genlab.plot import plot_curves

    names = [item.strip() for item in args.names.split(",")] if args.names else None
    print(f"wrote {plot_curves(args.runs, args.out, names)}")
    return 0


def _add_export(commands) -> None:
    export = commands.add_parser(
        "export",
        help="write a run's inference weights (safetensors) and config for sharing",
        description="Writes OUT/model.safetensors (the networks, the EMA where the family keeps one; no optimiser "
        "state) and OUT/config.json (run config and task spec). genlab.load(OUT) and every command that takes a "
        "run (translate, sample, evaluate) read the folder.",
        epilog="example: genlab export runs/p2p --out exports/p2p",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("run", help="run directory")
    export.add_argument("--out", required=True, help="folder to write model.safetensors and config.json into")
    export.add_argument("--checkpoint", metavar="FILE", help="a checkpoint of the run (default: checkpoints/last.pt)")
    export.set_defaults(handler=_export)


def _export(args) -> int:
    from genlab.export import export_run

    weights, config = export_run(args.run, args.out, args.checkpoint)
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB) and {config}")
    return 0


# --- weights ------------------------------------------------------------------------------------------------
def _add_weights(commands) -> None:
    weights = commands.add_parser(
        "weights",
        help="list, fetch, verify the optional pretrained networks (FID Inception, LPIPS)",
        description="The pretrained networks genlab uses but does not ship: the FID InceptionV3 and the LPIPS "
        "backbones and linear heads. `list` shows what each is for, where it is looked for and whether it is "
        "present; `fetch NAME` downloads it into the cache; `verify` checks the present files' SHA-256; "
        "`path NAME` prints where `fetch` puts it.",
        epilog="examples:\n  genlab weights list\n  genlab weights fetch inception\n  genlab weights verify",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = weights.add_subparsers(title="actions", metavar="ACTION")
    actions.add_parser("list", help="each network: purpose, where looked for, present?, checksum").set_defaults(
        handler=_weights_list
    )
    fetch = actions.add_parser("fetch", help="download a network's files into the cache (verified)")
    fetch.add_argument("name", help="inception, lpips-alex or lpips-vgg (see `genlab weights list`)")
    fetch.set_defaults(handler=_weights_fetch)
    actions.add_parser("verify", help="check the SHA-256 of every present weight file").set_defaults(
        handler=_weights_verify
    )
    path = actions.add_parser("path", help="print where `fetch NAME` puts the network's files")
    path.add_argument("name", help="inception, lpips-alex or lpips-vgg")
    path.set_defaults(handler=_weights_path)
    weights.set_defaults(handler=lambda args: weights.print_help() or 2)


def _weights_list(args) -> int:
    from genlab.metrics.weights import OPTIONAL_NETWORKS

    for network in OPTIONAL_NETWORKS.values():
        print(f"{network.name}: {network.title}")
        print(f"  for: {network.purpose}")
        for file in network.files:
            present = file.present()
            state = f"present at {present}" if present else "absent"
            print(f"  {file.part}: {file.source.filename}  [{state}]")
            print(f"    looked for in: {file.looked_for}, then {file.target()}, then torch.hub's cache")
            print(f"    checksum: {file.expected_checksum()}  url: {file.source.download_url()}")
    return 0


def _weights_fetch(args) -> int:
    from genlab.metrics.weights import fetch_network

    for path in fetch_network(args.name):
        print(f"ok {path}")
    return 0


def _weights_verify(args) -> int:
    from genlab.metrics.weights import verify_present

    results = verify_present()
    if not results:
        print("no weight files present (see `genlab weights list`)")
    for name, path, problem in results:
        print(f"{'ok' if problem is None else 'BAD'} {name} {path}" + ("" if problem is None else f": {problem}"))
    return 1 if any(problem is not None for _, _, problem in results) else 0


def _weights_path(args) -> int:
    from genlab.metrics.weights import optional_network

    for file in optional_network(args.name).files:
        print(file.target())
    return 0
