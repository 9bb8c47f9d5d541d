"""Evaluate a run on a held-out split: generate or translate, run the metric suite that fits the task, and
write the typed result (`genlab.results.EvalResult`) to RUN/eval/<split>-step<N>[-<sampler>].json and RUN/eval.json.

The same functions score a model in memory (`evaluate_model`): the trainer's validation curves and the
benchmark call them, so every score everywhere comes from one place.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from genlab.api import load_run
from genlab.data.tasks import ImageSplit, Task
from genlab.diffusion.samplers import check_noise_interval
from genlab.metrics import suite
from genlab.metrics.perceptual import load_lpips
from genlab.models.base import GenerativeModel, cycle_labels
from genlab.results import EvalResult, FeatureNetwork, Score, skipped
from genlab.sample import sample_images
from genlab.utils import GenlabError, derive_seed, sample_generator, signed_to_uint8, uint8_to_signed

# source batch in [-1, 1] and the index of its first item -> target batch in [-1, 1]
Translator = Callable[[torch.Tensor, int], torch.Tensor]
FEATURE_SPACES = ("domain", "inception")


@dataclass
class EvalOptions:
    """What to compute, on what, with which sampler. Feature spaces: `domain` (offline) and `inception`."""

    split: str = "test"
    batch_size: int = 32
    limit: int | None = None  # first N items of the split
    count: int | None = None  # generated images for generation runs (default: the split size, at most 1000)
    features: tuple[str, ...] = FEATURE_SPACES
    inception_weights: str | None = None
    lpips: bool = True
    diversity_inputs: int = 16  # inputs translated 3 times for the diversity score (0 = skip)
    baselines: bool = False
    seed: int = 0
    # Sampler options of diffusion families (None: the run's own defaults); recorded in the result.
    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    guidance_scale: float | None = None
    guidance_interval: tuple[float, float] | None = None  # guide only at noise levels sigma in (low, high]
    autoguidance: float | None = None  # diffusion runs kept a guide network (net.autoguide_at): its weight
    temperature: float | None = None  # VAE families: scale of the prior draws (None: 1, the prior itself)
    checkpoint: str | None = None  # a checkpoint file of the run (default: checkpoints/last.pt)
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "count", "limit", "steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise GenlabError(f"evaluate: {name} must be at least 1, got {value}")
        if self.diversity_inputs < 0:
            raise GenlabError(f"evaluate: diversity_inputs must be 0 or more, got {self.diversity_inputs}")
        if self.eta is not None and not 0 <= self.eta <= 1:
            raise GenlabError(f"evaluate: eta must be in [0, 1], got {self.eta}")
        if self.temperature is not None and not self.temperature >= 0:
            raise GenlabError(f"evaluate: temperature must be 0 or more, got {self.temperature}")
        if self.guidance_interval is not None:
            try:
                self.guidance_interval = check_noise_interval(self.guidance_interval)
            except ValueError as error:
                raise GenlabError(f"evaluate: guidance_interval: {error}") from None

    def sampler_options(self) -> dict[str, Any]:
        """The sampling options that were set (passed to the model as keyword arguments)."""
        values = {"sampler": self.sampler, "steps": self.steps, "eta": self.eta, "guidance_scale": self.guidance_scale,
                  "guidance_interval": self.guidance_interval, "autoguidance": self.autoguidance,
                  "temperature": self.temperature}
        return {key: value for key, value in values.items() if value is not None}


def evaluate_run(
    run_dir: str | Path, options: EvalOptions | None = None, device: str = "auto", write: bool = True
) -> EvalResult:
    """Score a run and (by default) write RUN/eval/<setting>.json and RUN/eval.json (the latest)."""
    options = options or EvalOptions()
    loaded = load_run(run_dir, device=device, checkpoint=options.checkpoint)
    result = evaluate_model(loaded.model, loaded.task(), options, run=str(loaded.run_dir), step=loaded.step)
    if write:
        result.save(Path(run_dir) / "eval" / eval_file_name(result))
        result.save(Path(run_dir) / "eval.json")
    return result


def eval_file_name(result: EvalResult) -> str:
    """`test-step0003000.json`, or `test-step0003000-ddim50-eta0-g3.json` with sampler settings (`-gi0.3-5`: a
    guidance interval; `-ag2`: autoguidance; `-t0.7`: a VAE's temperature)."""
    name = f"{result.split}-step{result.step:07d}"
    sampler = result.sampler
    if sampler:
        if "sampler" in sampler or "steps" in sampler:
            name += f"-{sampler.get('sampler', '')}{sampler.get('steps', '')}"
        if "eta" in sampler:
            name += f"-eta{sampler['eta']:g}"
        if "guidance_scale" in sampler:
            name += f"-g{sampler['guidance_scale']:g}"
        if sampler.get("guidance_interval"):
            low, high = sampler["guidance_interval"]
            name += f"-gi{low:g}-{high:g}"
        if sampler.get("autoguidance", 1) != 1:
            name += f"-ag{sampler['autoguidance']:g}"
        if "temperature" in sampler:
            name += f"-t{sampler['temperature']:g}"
    return name + ".json"


class Judges:
    """The feature networks one evaluation scores with, each loaded once, and the features of the real image sets
    it compares against, extracted once: a model and its baselines (and, when the caller keeps one Judges, a run's
    successive checkpoints) are judged against the same references."""

    def __init__(self, task: Task, options: EvalOptions) -> None:
        self.task, self.options = task, options
        self._networks: dict[str, tuple[Any, Any]] = {}
        self._real: dict[tuple, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def network(self, space: str) -> tuple[Any, Any]:
        """`feature_network(space, ...)`, loaded on first use."""
        if space not in self._networks:
            self._networks[space] = feature_network(space, self.task, self.options)
        return self._networks[space]

    def real_features(self, space: str, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The features of a real uint8 image set in `space` (whose network must be available)."""
        key = (space, images.data_ptr(), tuple(images.shape), tuple(images.stride()))
        if key not in self._real:  # the images are kept with their features, so the key cannot be reused
            extractor, _ = self.network(space)
            self._real[key] = (images, suite.features_of(extractor, images))
        return self._real[key][1]


def evaluate_model(
    model: GenerativeModel,
    task: Task,
    options: EvalOptions,
    run: str = "",
    step: int | None = None,
    judges: Judges | None = None,
) -> EvalResult:
    """Score a model on `options.split` of its task: translation or generation, whichever the model does.

    `judges` (for the same task and options) lets repeated evaluations share loaded networks and references."""
    sampler = options.sampler_options()
    model.check_sampling_options(sampler)
    data = limited(task.split(options.split), options.limit)
    judges = judges or Judges(task, options)
    started = time.perf_counter()
    if model.can("translate"):
        count, scores, baselines, seconds = evaluate_translation(model, task, data, options, judges)
    elif model.can("sample"):
        count, scores, baselines, seconds = evaluate_generation(model, task, data, options, judges)
    else:
        raise GenlabError(f"evaluate: model {model.name!r} ({model.purpose}) neither translates nor samples")
    return EvalResult(
        run=run,
        model=model.name,
        task=task.spec.name,
        split=options.split,
        step=model.step if step is None else step,
        count=count,
        scores=scores,
        sampler=model.sampler_record(sampler),
        baselines=baselines,
        extra={
            "conditional": model.conditional,
            "seed": options.seed,
            "seconds_per_image": seconds / max(count, 1),  # generation alone (AtoB), not scoring
            "evaluation_seconds": time.perf_counter() - started,
        },
    )


def limited(data: ImageSplit, limit: int | None) -> ImageSplit:
    """The first `limit` items of a split (all of them when None)."""
    if limit is None or limit >= len(data):
        return data
    return ImageSplit({key: value[:limit] for key, value in data.fields.items()}, data.names[:limit])


# --- translation ------------------------------------------------------------------------------------------------
@torch.no_grad()
def translate_split(
    translator: Translator,
    sources: torch.Tensor,
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "translating",
) -> torch.Tensor:
    """uint8 sources (N, C, H, W) -> uint8 outputs, in batches; `desc` labels the progress bar."""
    outputs = []
    starts = range(0, len(sources), batch_size)
    for start in tqdm(starts, desc=desc, leave=False, unit="batch", disable=not progress):
        batch = uint8_to_signed(sources[start : start + batch_size])
        outputs.append(signed_to_uint8(translator(batch, start)).cpu())
    return torch.cat(outputs)


def model_translator(model: GenerativeModel, seed: int = 0, **options) -> Translator:
    """Translate with one noise generator per input item, so item i's output depends on (seed, i) alone."""

    def translate(source: torch.Tensor, first_index: int) -> torch.Tensor:
        generator = sample_generator(seed, first_index, len(source))
        return model.translate_batch(source.to(model.device), generator=generator, **options)

    return translate


def direction_fields(task: Task) -> dict[str, tuple[str, str]]:
    """(input field, reference field) per translation direction of a task."""
    if task.spec.kind == "unpaired":
        return {"AtoB": ("a", "b"), "BtoA": ("b", "a")}
    return {"AtoB": ("source", "target"), "BtoA": ("target", "source")}


def evaluate_translation(
    model: GenerativeModel, task: Task, data: ImageSplit, options: EvalOptions, judges: Judges
) -> tuple[int, list[Score], dict[str, list[Score]], float]:
    """Scores of AtoB (and BtoA for models with a reverse generator) translations, plus the baselines."""
    sampler = options.sampler_options()
    paired = task.spec.kind == "paired"
    scores: list[Score] = []
    baselines: dict[str, list[Score]] = {}
    directions = ["AtoB", "BtoA"] if model.can("reverse") else ["AtoB"]
    seconds = 0.0
    for direction in directions:
        input_field, reference_field = direction_fields(task)[direction]
        inputs, references = data.fields[input_field], data.fields[reference_field]
        direction_option = {"direction": direction} if model.abilities.reverse else {}
        translator = model_translator(model, options.seed, **sampler, **direction_option)
        started = time.perf_counter()
        outputs = translate_split(
            translator, inputs, options.batch_size, options.progress, desc=f"translating {direction}"
        )
        if direction == "AtoB":
            seconds = time.perf_counter() - started
        prefix = "" if direction == "AtoB" else "BtoA."
        # The domain networks judge the task's targets (photos, garments), so BtoA gets pixel metrics only.
        judged = options if direction == "AtoB" else replace(options, features=())
        labels = data.fields.get("label") if direction == "AtoB" else None
        scores += score_translations(
            outputs, references, inputs, judged, judges, paired=paired, prefix=prefix, labels=labels
        )
    if options.diversity_inputs and model.abilities.stochastic:
        count = min(options.diversity_inputs, len(data))
        sources = data.fields[direction_fields(task)["AtoB"][0]][:count]
        stochastic = {**sampler, **model.abilities.stochastic_options}
        translators = [model_translator(model, derive_seed(options.seed, k), **stochastic) for k in range(3)]
        runs = [translate_split(translator, sources, options.batch_size) for translator in translators]
        scores.append(suite.diversity_score(runs))
    if options.baselines:
        baselines = translation_baselines(task, data, options, judges)
    return len(data), scores, baselines, seconds


def translation_baselines(
    task: Task, data: ImageSplit, options: EvalOptions, judges: Judges
) -> dict[str, list[Score]]:
    """The mean training target and the nearest neighbour, scored with every metric that applies to them; for
    label-map tasks also the real photos' FCN-score, and for labelled pairs the real targets' class accuracy
    (the ceilings a translator can reach)."""
    input_field, reference_field = direction_fields(task)["AtoB"]
    inputs, references = data.fields[input_field], data.fields[reference_field]
    labels = data.fields.get("label")
    paired = task.spec.kind == "paired"
    quiet = replace(options, diversity_inputs=0)
    baselines = {
        name: score_translations(
            translate_split(baseline, inputs, options.batch_size), references, inputs, quiet, judges, paired=paired,
            labels=labels,
        )
        for name, baseline in (
            ("mean_train_target", mean_target_baseline(task)),
            ("nearest_neighbour", nearest_neighbour_baseline(task)),
        )
    }
    if paired and "domain" in options.features:
        judge, network = judges.network("domain")
        if judge is not None and judge.kind == "segmenter":
            baselines["real_target"] = suite.fcn_scores(judge, network, references, inputs)
        if judge is not None and judge.kind == "classifier" and labels is not None:
            # the references' features are those the baselines' scores above already extracted (and cached)
            predicted = judges.real_features("domain", references)["probs"].argmax(dim=1)
            baselines["real_target"] = class_scores(predicted, labels, network, task)
    return baselines


def class_scores(predicted: torch.Tensor, labels: torch.Tensor, network: FeatureNetwork, task: Task) -> list[Score]:
    """How often the classifier reads each output as the class it was asked for (or whose pair it is): overall
    and for the worst class."""
    return [
        suite.class_accuracy(predicted, labels, network, class_count(task, labels)),
        suite.worst_class_accuracy(predicted, labels, network, task.spec.class_names),
    ]


def class_count(task: Task, labels: torch.Tensor) -> int:
    """The number of classes of a task's labels: its class names, else the largest label + 1."""
    return len(task.spec.class_names) or int(labels.max()) + 1


def score_translations(
    outputs: torch.Tensor,
    targets: torch.Tensor,
    sources: torch.Tensor,
    options: EvalOptions,
    judges: Judges,
    paired: bool = True,
    prefix: str = "",
    labels: torch.Tensor | None = None,
) -> list[Score]:
    """Paired metrics (when outputs[i] has a true targets[i]), then each feature space's distribution metrics;
    for label maps judged by a segmenter the FCN-score, and for items with a class `labels` (N,) judged by a
    classifier the class accuracy of the outputs."""
    scores: list[Score] = []
    if paired:
        metrics = suite.PAIRED_METRICS if options.lpips else ("psnr", "ssim", "ms_ssim")
        scores += suite.paired_scores(outputs, targets, metrics, lpips_loader=load_lpips, prefix=prefix)
    for space in options.features:
        extractor, network = judges.network(space)
        if extractor is None:
            scores.append(skipped(f"{prefix}{space}.fid", network))
            continue
        real = judges.real_features(space, targets)
        fake = suite.features_of(extractor, outputs)
        scores += suite.distribution_scores(fake, real, extractor, network, seed=options.seed, space=prefix + space)
        if space == "domain" and extractor.kind == "segmenter" and paired:
            scores += suite.fcn_scores(extractor, network, outputs, sources)
        if space == "domain" and extractor.kind == "classifier" and labels is not None:
            scores += class_scores(fake["probs"].argmax(dim=1), labels, network, judges.task)
    return scores


def feature_network(space: str, task: Task, options: EvalOptions):
    """(extractor, FeatureNetwork) for `domain` (the task's judge), `domain:TASK` or `inception`; (None, why) when
    it is unavailable."""
    if space == "inception":
        return load_feature_network("inception", task.spec.image_size, options.inception_weights)
    if space == "domain" or space.startswith("domain:"):
        from genlab.judges.domain import RECIPES

        name = space.split(":", 1)[1] if ":" in space else task.spec.name
        if name not in RECIPES:
            return None, f"no domain network for task {name!r} (available: {', '.join(RECIPES)})"
        return load_feature_network(
            name, task.spec.image_size, data_root=task.config.data_root, progress=options.progress
        )
    raise GenlabError(f"unknown feature space {space!r} (valid: domain, domain:TASK, inception)")


def load_feature_network(
    name: str, image_size: int, inception_weights: str | None = None, data_root: str | None = None, progress=True
):
    """(extractor, FeatureNetwork) for `inception` (None and why when its weights are missing) or for the domain
    network of the task `name` at `image_size` (shared by `genlab evaluate` and `genlab score`)."""
    from genlab.metrics.features import FeatureWeightsMissing, load_inception

    if name == "inception":
        try:
            return load_inception(inception_weights), FeatureNetwork("inception-v3-fid")
        except FeatureWeightsMissing as missing:
            return None, str(missing)
    from genlab.judges.domain import domain_network

    network = domain_network(name, image_size, data_root=data_root, progress=progress)
    return network, network.feature_network()


def mean_target_baseline(task: Task) -> Translator:
    """Predict the mean training target for every input: the score any useful translator must beat."""
    field = direction_fields(task)["AtoB"][1]
    mean = uint8_to_signed(task.split("train").fields[field]).mean(dim=0, keepdim=True)  # (1, C, H, W)
    return lambda source, first_index=0: mean.expand(len(source), -1, -1, -1)


def nearest_neighbour_baseline(task: Task, chunk: int = 256) -> Translator:
    """Return the training target whose source is nearest (L2 on pixels) to the input source."""
    input_field, reference_field = direction_fields(task)["AtoB"]
    train = task.split("train")
    train_sources = uint8_to_signed(train.fields[input_field]).flatten(1)  # (N, D)
    train_targets = uint8_to_signed(train.fields[reference_field])
    return lambda source, first_index=0: train_targets[nearest_index(source.cpu().flatten(1), train_sources, chunk)]


def nearest_index(queries: torch.Tensor, keys: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Index of the nearest key (L2) for each query, scanning the keys in chunks to bound memory."""
    best_distance = torch.full((len(queries),), math.inf)
    best_index = torch.zeros(len(queries), dtype=torch.long)
    for start in range(0, len(keys), chunk):
        value, index = torch.cdist(queries, keys[start : start + chunk]).min(dim=1)  # (Q,)
        better = value < best_distance
        best_distance = torch.where(better, value, best_distance)
        best_index = torch.where(better, index + start, best_index)
    return best_index


# --- generation -------------------------------------------------------------------------------------------------
def evaluate_generation(
    model: GenerativeModel, task: Task, data: ImageSplit, options: EvalOptions, judges: Judges
) -> tuple[int, list[Score], dict[str, list[Score]], float]:
    """Distribution scores of `count` samples against as many real test images, class accuracy when
    class-conditional, and (with baselines) the same scores of real training images: the real-vs-real floor."""
    count = options.count or min(len(data), 1000)
    real = data.fields["image"][: min(count, len(data))]
    labels = cycle_labels(count, task.spec.num_classes) if model.conditional else None
    started = time.perf_counter()
    samples = sample_images(
        model, count, labels, options.seed, options.batch_size, progress=options.progress, **options.sampler_options()
    )
    seconds = time.perf_counter() - started
    scores = score_samples(signed_to_uint8(samples).cpu(), real, labels, task, options, judges)
    baselines = {}
    if options.baselines:
        train_images = task.split("train").fields["image"]
        baselines["train_images"] = score_samples(train_images[:count], real, None, task, options, judges)
    return count, scores, baselines, seconds


def score_samples(
    samples: torch.Tensor,
    real: torch.Tensor,
    labels: torch.Tensor | None,
    task: Task,
    options: EvalOptions,
    judges: Judges,
) -> list[Score]:
    """Each feature space's distribution metrics of uint8 samples vs real images, and class accuracy."""
    scores: list[Score] = []
    for space in options.features:
        extractor, network = judges.network(space)
        if extractor is None:
            scores.append(skipped(f"{space}.fid", network))
            continue
        fake_features = suite.features_of(extractor, samples)
        real_features = judges.real_features(space, real)
        scores += suite.distribution_scores(
            fake_features, real_features, extractor, network, seed=options.seed, space=space
        )
        if labels is not None and space == "domain" and extractor.kind == "classifier":
            scores += class_scores(fake_features["probs"].argmax(dim=1), labels, network, task)
    return scores
