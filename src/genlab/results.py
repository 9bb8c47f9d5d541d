"""Typed evaluation results: a `Score` per metric value and an `EvalResult` per evaluated run and setting.

`eval.json` is the serialisation of an `EvalResult`; `EvalResult.from_dict` gives the same objects back. The
CLI table, `genlab score`, the benchmark and the report all read these objects, never nested dicts.

>>> score = Score("psnr", 21.5, std=2.0, count=100, higher_is_better=True, unit="dB")
>>> Score.from_dict(score.to_dict()) == score
True
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlab.utils import GenlabError, atomic_write_text

RESULT_FORMAT = 1

# Which direction is better, per metric name (the part after the feature space: "domain.fid" -> "fid").
HIGHER_IS_BETTER: dict[str, bool] = {
    "psnr": True,
    "ssim": True,
    "ms_ssim": True,
    "lpips": False,
    "fid": False,
    "kid": False,
    "is": True,
    "precision": True,
    "recall": True,
    "pixel_accuracy": True,
    "class_accuracy": True,
    "worst_class_accuracy": True,
    "mean_iou": True,
    "diversity": True,
}


def higher_is_better(metric: str) -> bool:
    """The better direction of a metric name such as `psnr`, `domain.fid` or `fcn.mean_iou`."""
    base = metric.rsplit(".", 1)[-1]
    if base not in HIGHER_IS_BETTER:
        raise GenlabError(f"unknown metric {metric!r} (known: {', '.join(HIGHER_IS_BETTER)})")
    return HIGHER_IS_BETTER[base]


@dataclass(frozen=True)
class FeatureNetwork:
    """The network a score was measured with, and how good that network is on real data."""

    name: str  # "inception-v3-fid", "domain-classifier:fashion-mnist@32", "lpips-alex", ...
    held_out_accuracy: float | None = None  # the network's own accuracy on real held-out data (domain nets)
    details: dict[str, Any] = field(default_factory=dict, compare=False)  # recipe, cache key, test scores


@dataclass(frozen=True)
class Score:
    """One metric value: its spread, interval, sample count, the network it came from and its better direction.

    `skipped` holds the reason when the metric could not be computed (then `value` is None); `notes` warn of
    what may mislead (few samples for FID, a shrunk KID subset, a negative KID).
    """

    metric: str  # "psnr", "domain.fid", "fcn.mean_iou", "class_accuracy", ...
    value: float | None = None  # None only when skipped
    std: float | None = None  # spread over images (paired), subsets (KID), splits (IS) or seeds
    interval: tuple[float, float] | None = None  # 95% bootstrap interval of the mean (paired metrics)
    count: int = 0  # images (or samples) the value is computed from
    higher_is_better: bool = True
    network: FeatureNetwork | None = None
    unit: str = ""
    notes: tuple[str, ...] = ()
    skipped: str | None = None
    per_item: tuple[float, ...] | None = field(default=None, compare=False, repr=False)  # for bootstraps

    @property
    def ok(self) -> bool:
        return self.skipped is None

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["value"] = None if self.value is None else _json_number(self.value)
        if self.per_item is not None:
            values["per_item"] = [_json_number(v) for v in self.per_item]
        return {key: value for key, value in values.items() if value not in (None, (), [], "")}

    @staticmethod
    def from_dict(values: dict[str, Any]) -> Score:
        values = dict(values)
        network = values.pop("network", None)
        interval = values.pop("interval", None)
        per_item = values.pop("per_item", None)
        return Score(
            value=_number(values.pop("value", None)),
            network=FeatureNetwork(**network) if network else None,
            interval=tuple(interval) if interval else None,
            notes=tuple(values.pop("notes", ())),
            per_item=tuple(_number(v) for v in per_item) if per_item is not None else None,
            **values,
        )

    def format(self, digits: int = 4) -> str:
        """'21.53 ±2.01' or 'skipped'."""
        if not self.ok:
            return "skipped"
        text = f"{self.value:.{digits}g}"
        if self.std:
            text += f" ±{self.std:.3g}"
        return text


def skipped(metric: str, reason: str) -> Score:
    return Score(metric, skipped=reason, higher_is_better=higher_is_better(metric))


@dataclass
class EvalResult:
    """The scores of one run (or baseline) on one split, at one checkpoint, with one sampler setting."""

    run: str
    model: str
    task: str
    split: str
    step: int
    count: int
    scores: list[Score]
    sampler: dict[str, Any] = field(default_factory=dict)  # sampler, steps, eta, guidance_scale (diffusion)
    baselines: dict[str, list[Score]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # timings, direction, conditional...

    def score(self, metric: str) -> Score | None:
        return next((score for score in self.scores if score.metric == metric), None)

    def metrics(self) -> list[str]:
        return [score.metric for score in self.scores]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "run": self.run,
            "model": self.model,
            "task": self.task,
            "split": self.split,
            "step": self.step,
            "count": self.count,
            "sampler": self.sampler,
            "scores": [score.to_dict() for score in self.scores],
            "baselines": {name: [s.to_dict() for s in scores] for name, scores in self.baselines.items()},
            "extra": self.extra,
        }

    @staticmethod
    def from_dict(values: dict[str, Any], source: str = "eval.json") -> EvalResult:
        if not isinstance(values, dict) or "scores" not in values:
            raise GenlabError(f"{source}: not a genlab evaluation result (no 'scores')")
        if values.get("format", 0) > RESULT_FORMAT:
            raise GenlabError(f"{source}: result format {values['format']} is newer than this genlab reads")
        return EvalResult(
            run=values["run"],
            model=values["model"],
            task=values["task"],
            split=values["split"],
            step=int(values["step"]),
            count=int(values["count"]),
            scores=[Score.from_dict(item) for item in values["scores"]],
            sampler=dict(values.get("sampler", {})),
            baselines={
                name: [Score.from_dict(item) for item in scores] for name, scores in values.get("baselines", {}).items()
            },
            extra=dict(values.get("extra", {})),
        )

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @staticmethod
    def load(path: str | Path) -> EvalResult:
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError as error:
            raise GenlabError(f"{path}: no evaluation result (run `genlab evaluate` first)") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise GenlabError(f"{path}: not valid JSON ({error})") from error
        return EvalResult.from_dict(values, source=str(path))


def _json_number(value: float) -> float | str:
    """JSON has no NaN/inf: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
