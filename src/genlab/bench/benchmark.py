"""`genlab benchmark`: train several model families on one task under one budget, evaluate them all the same
way, and write the comparison report.

Every entry gets the same task, split, budget (minutes or images seen), evaluation seeds and sample counts.
Each entry's runs live in OUT/runs/<entry>-s<seed>/ with their checkpoints, metrics.csv, RUN/eval/ results
(validation scores at each checkpoint, the final test scores, sampler-steps rows for diffusion) and
RUN/cost.json, written last: an entry with cost.json is finished and is skipped when the benchmark is run again
with the same --out; one with checkpoints but no cost.json is resumed.

    from genlab.bench.benchmark import BenchmarkConfig, run_benchmark
    paths = run_benchmark(BenchmarkConfig(models=("pix2pix", "cddim"), budget_minutes=2), "bench/")
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from genlab.api import load_run
from genlab.bench.report import COST_FILE, Cost, report_from_runs
from genlab.config import RunConfig, apply_override, set_budget
from genlab.data.tasks import get_task
from genlab.evaluate import EvalOptions, Judges, evaluate_model, evaluate_run
from genlab.models import get_model_class
from genlab.models.base import GenerativeModel
from genlab.runs import build_run_config
from genlab.train.trainer import train
from genlab.utils import GenlabError, atomic_write_text

TRANSLATION_MODELS = ("pix2pix", "cyclegan", "cvae", "cgan", "cddim", "ldm")
GENERATION_MODELS = ("vae", "dcgan", "cgan", "ddpm", "ldm")
STATE_FILE = "benchmark.json"
# Six translation families x 1.5 min of training, plus evaluation: about 15 minutes on 2 CPU cores.
DEFAULT_BUDGET_MINUTES = 1.5


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark entry: a family and its overrides, from `pix2pix` or `pix2pix[net.gan_loss=lsgan,...]`."""

    model: str
    overrides: tuple[str, ...] = ()

    @staticmethod
    def parse(text: str) -> ModelSpec:
        match = re.fullmatch(r"\s*([\w-]+)\s*(?:\[(.*)\])?\s*", text)
        if not match:
            raise GenlabError(f"--models: cannot read {text!r} (expected MODEL or MODEL[key=value,...])")
        model, inner = match.group(1), match.group(2)
        overrides = tuple(item.strip() for item in split_top_level(inner or "") if item.strip())
        for item in overrides:
            if "=" not in item:
                raise GenlabError(f"--models {text!r}: {item!r} is not key=value")
        return ModelSpec(model, overrides)

    @property
    def name(self) -> str:
        """Readable: `pix2pix [gan_loss=lsgan]` (section prefixes dropped where the key is unambiguous)."""
        if not self.overrides:
            return self.model
        short = [item.split(".", 1)[-1] if item.startswith("net.") else item for item in self.overrides]
        return f"{self.model} [{', '.join(short)}]"

    @property
    def slug(self) -> str:
        """A folder name: `pix2pix-gan_loss-lsgan`."""
        text = self.model + "".join(f"-{item.split('.', 1)[-1]}" for item in self.overrides)
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets: `a[x=1,y=[1,2]],b` -> [`a[x=1,y=[1,2]]`, `b`]."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [*items, current]


def parse_models(text: str) -> list[ModelSpec]:
    """`pix2pix[net.width=64,train.batch_size=16],cddim` -> specs (commas inside brackets stay with their spec)."""
    specs = [ModelSpec.parse(item) for item in split_top_level(text) if item.strip()]
    if not specs:
        raise GenlabError("--models: name at least one model")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise GenlabError(f"--models: an entry is listed twice ({', '.join(names)})")
    return specs


@dataclass
class BenchmarkConfig:
    """What to compare and under which budget. Per-entry budget: `budget_minutes` or `budget_images`."""

    task: str = "facades-synth"
    models: tuple[str, ...] = ()  # model specs; () = every family that fits the task
    preset: str = "quick"
    budget_minutes: float | None = None  # neither given: 1.5 minutes
    budget_images: int | None = None
    size: int | None = None  # image size (None: each preset's)
    seeds: tuple[int, ...] = (0,)
    eval_limit: int | None = 100  # test items scored (the first N); None = the whole split
    eval_count: int = 500  # samples for generation tasks
    validation_limit: int = 32  # val items scored at each checkpoint (metric-vs-step curves)
    checkpoints: int = 4  # checkpoints (and validation points) per entry
    sampler_steps: tuple[int, ...] = (10, 20, 50)  # DDIM steps for the diffusion entries' steps/quality rows
    features: tuple[str, ...] = ("domain", "inception")
    data_root: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.budget_minutes is not None and self.budget_images is not None:
            raise GenlabError("benchmark: give one budget, --budget-minutes or --budget-images, not both")
        if self.budget_minutes is None and self.budget_images is None:
            self.budget_minutes = DEFAULT_BUDGET_MINUTES
        if self.budget_minutes is not None and not (math.isfinite(self.budget_minutes) and self.budget_minutes > 0):
            raise GenlabError(f"benchmark: --budget-minutes must be a positive number, got {self.budget_minutes}")
        if self.budget_images is not None and self.budget_images < 1:
            raise GenlabError(f"benchmark: --budget-images must be at least 1, got {self.budget_images}")
        if not self.seeds:
            raise GenlabError("benchmark: give at least one seed")
        if self.checkpoints < 1:
            raise GenlabError(f"benchmark: checkpoints must be at least 1, got {self.checkpoints}")

    def image_size(self) -> int:
        """--size, else the task's usual size: 64 px for facades, 32 px for the Fashion-MNIST tasks (28 -> 32)."""
        if self.size is not None:
            return self.size
        return 32 if self.task.startswith(("fashion-mnist", "edges2fashion")) else 64

    def specs(self) -> list[ModelSpec]:
        if self.models:
            return parse_models(",".join(self.models))
        kind = get_task(self._data_probe()).spec.kind
        defaults = GENERATION_MODELS if kind == "labelled" else TRANSLATION_MODELS
        return [ModelSpec(name) for name in defaults if kind in get_model_class(name).task_kinds]

    def _data_probe(self):
        from genlab.config import DataConfig

        return DataConfig(task=self.task, image_size=self.image_size(), data_root=self.data_root)


@dataclass
class EntryRun:
    """One (entry, seed) run of the benchmark."""

    spec: ModelSpec
    seed: int
    run_dir: Path
    config: RunConfig = field(repr=False)


def entry_config(spec: ModelSpec, seed: int, bench: BenchmarkConfig) -> RunConfig:
    """The run config of an entry: the family's preset, the benchmark's task/size/seed/budget, the overrides.

    Every entry sees the same image size (presets differ: cgan's quick preset is 32 px for Fashion-MNIST), so
    all are scored on the same test pairs; an override of data.image_size is refused for the same reason."""
    if any(item.split("=", 1)[0].strip() == "data.image_size" for item in spec.overrides):
        raise GenlabError(f"--models {spec.name}: set the image size for every entry with --size, not per entry")
    values = {"data.task": bench.task, "data.image_size": bench.image_size(), "seed": seed,
              "data.data_root": bench.data_root}
    config = build_run_config(spec.model, bench.preset, values, list(spec.overrides))
    set_budget(config.train, minutes=bench.budget_minutes, images=bench.budget_images)
    config.train.device = bench.device
    # Checkpoints at even fractions of the budget give the metric-vs-step curves; a minutes budget has no step
    # count, so estimate from the preset's steps (the curve then has points at those steps that are reached).
    steps = config.train.step_budget() or build_run_config(spec.model, bench.preset).train.steps or 1000
    config.train.checkpoint_every = max(1, steps // bench.checkpoints)
    config.train.sample_every = config.train.checkpoint_every
    config.train.keep_checkpoints = bench.checkpoints + 1
    for assignment in spec.overrides:  # overrides win over the benchmark's cadence too
        if assignment.startswith("train."):
            apply_override(config, assignment)
    return config


def plan(bench: BenchmarkConfig, out_dir: Path) -> list[EntryRun]:
    runs = []
    for spec in bench.specs():
        for seed in bench.seeds:
            run_dir = out_dir / "runs" / f"{spec.slug}-s{seed}"
            runs.append(EntryRun(spec, seed, run_dir, entry_config(spec, seed, bench)))
    return runs


def run_benchmark(bench: BenchmarkConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Path]:
    """Train, evaluate and report every entry (skipping finished ones); returns the report's paths."""
    out_dir = Path(out_dir)
    runs = plan(bench, out_dir)
    _check_state(bench, out_dir)
    started, done_seconds = time.perf_counter(), []
    failures: dict[str, str] = {}
    for index, entry in enumerate(runs, start=1):
        finished = (entry.run_dir / COST_FILE).is_file()
        left = len(runs) - index + 1
        if finished:
            tqdm.write(f"[{index}/{len(runs)}] {entry.spec.name} seed {entry.seed}: finished earlier, kept")
            continue
        estimate = _estimate(done_seconds, bench, left)
        tqdm.write(
            f"[{index}/{len(runs)}] {entry.spec.name} seed {entry.seed}: training for {_budget_text(bench)}"
            f"{estimate}"
        )
        entry_started = time.perf_counter()
        try:
            run_entry(entry, bench, index == 1, progress)
        except GenlabError as error:  # one family's failure is reported, not the end of the comparison
            failures[entry.spec.name] = str(error)
            tqdm.write(f"[{index}/{len(runs)}] {entry.spec.name} seed {entry.seed} failed: {error}")
            continue
        done_seconds.append(time.perf_counter() - entry_started)
    reported = [entry for entry in runs if entry.spec.name not in failures]
    if not reported:
        raise GenlabError(f"benchmark: every entry failed ({'; '.join(failures.values())})")
    names = [entry.spec.name for entry in reported]
    tqdm.write(f"writing the report ({time.perf_counter() - started:.0f} s so far)")
    notes = [
        f"task {bench.task}, preset {bench.preset}, budget {_budget_text(bench)} per entry and seed, "
        f"seeds {', '.join(map(str, bench.seeds))}; test scores on the first {bench.eval_limit or 'all'} test items",
        *(f"{name} failed and is left out: {reason}" for name, reason in failures.items()),
    ]
    return report_from_runs(
        [entry.run_dir for entry in reported],
        out_dir,
        names=names,
        device=bench.device,
        title=f"genlab benchmark: {bench.task}",
        extra_notes=notes,
    )


def _check_state(bench: BenchmarkConfig, out_dir: Path) -> None:
    """A rerun into the same --out must ask for the same comparison; otherwise entries would mix budgets."""
    path = out_dir / STATE_FILE
    state = {key: value for key, value in asdict(bench).items() if key != "device"}
    state = json.loads(json.dumps(state))
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = sorted(key for key in state if previous.get(key) != state[key])
        if changed:
            raise GenlabError(
                f"{out_dir} holds a benchmark with other settings ({', '.join(changed)} differ); "
                "use another --out, or the same options to resume it"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(state, indent=2) + "\n")


def run_entry(entry: EntryRun, bench: BenchmarkConfig, with_baselines: bool, progress: bool = True) -> None:
    """Train (or resume) one run, then score it on the test split, and write its cost.json last."""
    resume = (entry.run_dir / "checkpoints" / "last.pt").is_file()
    hook = validation_hook(entry, bench)
    result = train(entry.config, entry.run_dir, resume=resume, progress=progress, on_checkpoint=hook)
    options = EvalOptions(
        limit=bench.eval_limit,
        count=bench.eval_count,
        features=bench.features,
        baselines=with_baselines,
        seed=0,  # the same evaluation seed for every entry
        progress=progress,  # the first evaluation may train a domain network for minutes: show it
    )
    final = evaluate_run(entry.run_dir, options, device=bench.device)
    loaded = load_run(entry.run_dir, device=bench.device)
    if loaded.model.abilities.sampler_options:
        steps_quality(loaded.model, entry, bench)
    flops = training_flops(entry.config, loaded.model)
    images = result.steps * entry.config.train.batch_size
    cost = Cost(
        train_seconds=result.seconds,
        images_seen=images,
        train_flops=None if flops is None else flops * result.steps,
        parameters=sum(p.numel() for p in loaded.model.parameters() if p.requires_grad),
        train_images_per_s=images / result.seconds if result.seconds else None,
        seconds_per_image=final.extra.get("seconds_per_image"),
    )
    cost.save(entry.run_dir / COST_FILE)


def validation_hook(entry: EntryRun, bench: BenchmarkConfig):
    """Scores on the first val items at each checkpoint (RUN/eval/val-step<N>.json), as the seed report
    tracks KID per epoch: cheap metrics only (pixel metrics and the domain network's)."""
    features = tuple(space for space in bench.features if space == "domain")
    options = EvalOptions(
        split="val",
        limit=bench.validation_limit,
        count=bench.validation_limit,
        features=features,
        lpips=False,
        diversity_inputs=0,
        progress=False,
    )
    task = get_task(entry.config.data)
    judges = Judges(task, options)  # the judge and the val references are loaded once for every checkpoint

    def hook(model: GenerativeModel, run_dir: Path) -> None:
        path = run_dir / "eval" / f"val-step{model.step:07d}.json"
        if path.is_file() or not (model.can("translate") or model.can("sample")):
            return
        if model.name == "ldm" and model.latent_scale == 0:
            return  # no diffusion model to score yet
        model.eval()
        evaluate_model(model, task, options, run=str(run_dir), judges=judges).save(path)

    return hook


def steps_quality(model: GenerativeModel, entry: EntryRun, bench: BenchmarkConfig) -> None:
    """Quality and time at several DDIM step counts: RUN/eval/steps-ddim<N>.json."""
    task = get_task(entry.config.data)
    judges = None  # shared by the step counts: one judge, one set of real references
    for steps in bench.sampler_steps:
        options = EvalOptions(
            limit=min(bench.eval_limit or 100, 50),
            count=min(bench.eval_count, 200),
            features=tuple(space for space in bench.features if space == "domain"),
            lpips=False,
            diversity_inputs=0,
            sampler="ddim",
            steps=steps,
            progress=False,
        )
        judges = judges or Judges(task, options)
        result = evaluate_model(model, task, options, run=str(entry.run_dir), judges=judges)
        result.save(entry.run_dir / "eval" / f"steps-ddim{steps:04d}.json")


def training_flops(config: RunConfig, model: GenerativeModel) -> float | None:
    """Floating-point operations of one training step (torch.utils.flop_counter), on a copy of the model so the
    run is untouched. Counts matmuls and convolutions (forward and backward), not elementwise ops; ldm's is that
    of its current (diffusion) stage."""
    task = get_task(config.data)
    batch = task.training_batch(0, config.train.batch_size, config.seed, unpaired=model.abilities.unpaired)
    probe = copy.deepcopy(model).train()
    batch = {key: value.to(probe.device) for key, value in batch.items()}
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            probe.training_step(batch)
    except (RuntimeError, NotImplementedError):  # an op the counter cannot trace: say unknown, do not guess
        return None
    return float(counter.get_total_flops())


def _budget_text(bench: BenchmarkConfig) -> str:
    if bench.budget_minutes is not None:
        return f"{bench.budget_minutes:g} min"
    return f"{bench.budget_images} images"


def _estimate(done_seconds: list[float], bench: BenchmarkConfig, left: int) -> str:
    if done_seconds:
        per_entry = sorted(done_seconds)[len(done_seconds) // 2]
    elif bench.budget_minutes is not None:
        per_entry = bench.budget_minutes * 60 * 1.3  # training plus evaluation, roughly
    else:
        return ""
    return f" (about {per_entry * left / 60:.0f} min left in the benchmark)"

