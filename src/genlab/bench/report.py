"""The benchmark report: one self-contained `report.html`, `results.md`, `results.json` and PNG figures, built
from typed evaluation results (`genlab.results`).

`write_report(report, out_dir)` writes a `Report` the benchmark assembled; `report_from_runs(run_dirs, out_dir)`
assembles one from existing run directories (what `genlab report RUN... --out DIR` calls). A run directory
supplies:

- `RUN/eval.json`: the `EvalResult` of the final checkpoint (required);
- `RUN/metrics.csv`: the training log, for loss curves;
- `RUN/eval/*.json`: `EvalResult`s at checkpoints (`val-step0003000.json`...) for metric-vs-step curves (of the
  split with the most checkpoints, so validation scores taken during training rather than the final test
  result kept beside them), and `RUN/eval/steps-*.json`: one `EvalResult` per sampler setting (its
  `sampler["steps"]`, with `extra["seconds_per_image"]`) for the sampling-steps-versus-quality panel;
- `RUN/cost.json` (optional; the benchmark writes it), schema `COST_SCHEMA`: `{"format": 1, "train_seconds":
  float, "images_seen": int, "train_flops": float, "parameters": int, "train_images_per_s": float,
  "seconds_per_image": float}`, every field optional (null or absent: unknown). Without it the report derives
  what it can: parameters from the model, training time from metrics.csv, images seen from steps x batch size,
  and seconds per image from the grid pass.

Runs whose entry names are equal (by default: the model plus the config values that differ between runs,
seed excluded) are seeds of one entry and are reported as mean ± std over seeds (see `genlab.bench.stats`).

    from genlab.bench.report import report_from_runs
    paths = report_from_runs(["runs/p2p-s0", "runs/p2p-s1", "runs/ddpm"], "report/")
    print(paths["html"])
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import io
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab.api import load_run
from genlab.bench.stats import TIE, combine_seeds, winner, with_intervals
from genlab.grid import default_font, upscale_factor
from genlab.models.base import cycle_labels
from genlab.results import EvalResult, FeatureNetwork, Score
from genlab.sample import sample_images
from genlab.train.logging import read_metrics
from genlab.utils import GenlabError, atomic_path, atomic_write_text, format_count, signed_to_uint8, uint8_to_signed

REPORT_FORMAT = 1
COST_FILE = "cost.json"
COST_SCHEMA = {
    "format": "int, 1",
    "train_seconds": "float: wall-clock training time (s)",
    "images_seen": "int: training images (or pairs) drawn, steps x batch size",
    "train_flops": "float: training floating-point operations",
    "parameters": "int: trainable parameters of the model (all networks)",
    "train_images_per_s": "float: training throughput",
    "seconds_per_image": "float: time to generate (or translate) one image at evaluation settings",
}
BASELINE_NAMES = {"mean_train_target": "mean training target", "nearest_neighbour": "nearest neighbour"}


# --- the report's objects ---------------------------------------------------------------------------------------
@dataclass
class Cost:
    """What an entry cost to train and to run; None where unknown. Serialised as RUN/cost.json."""

    train_seconds: float | None = None
    images_seen: int | None = None
    train_flops: float | None = None
    parameters: int | None = None
    train_images_per_s: float | None = None
    seconds_per_image: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": REPORT_FORMAT, **dataclasses.asdict(self)}

    @staticmethod
    def from_dict(values: dict[str, Any], source: str = COST_FILE) -> Cost:
        values = {key: value for key, value in values.items() if key != "format"}
        known = [f.name for f in dataclasses.fields(Cost)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise GenlabError(f"{source}: unknown cost field(s) {', '.join(unknown)} (valid: {', '.join(known)})")
        return Cost(
            **{key: None if value is None else _cost_number(key, value, source) for key, value in values.items()}
        )

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @staticmethod
    def load(path: str | Path) -> Cost:
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise GenlabError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(values, dict):
            raise GenlabError(f"{path}: expected a JSON object of cost fields")
        return Cost.from_dict(values, source=str(path))


def _cost_number(key: str, value: Any, source: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenlabError(f"{source}: {key} must be a number, got {value!r}")
    return int(value) if key in ("images_seen", "parameters") else float(value)


@dataclass
class StepsQualityRow:
    """One sampler setting of a diffusion entry: its step count, time per image and scores."""

    steps: int
    seconds_per_image: float | None
    result: EvalResult
    sampler: str = ""  # "ddim", "ddpm", ...


@dataclass
class ReportEntry:
    """One compared model setting: its runs (one per training seed) and what was measured on them."""

    name: str  # readable: "pix2pix [net.gan_loss=lsgan]"
    model: str
    run_dirs: list[str] = field(default_factory=list)
    results: list[EvalResult] = field(default_factory=list)  # one per seed, final checkpoint
    cost: Cost = field(default_factory=Cost)
    step_results: list[EvalResult] = field(default_factory=list)  # earlier checkpoints (first seed)
    steps_quality: list[StepsQualityRow] = field(default_factory=list)


@dataclass
class ComparisonGrid:
    """Rows of test items; columns input | each entry's output (in entry order) | ground truth. uint8 images.

    Generation runs have no input (`inputs` None): then each entry's column holds samples and `targets` real
    test images.
    """

    inputs: torch.Tensor | None  # (K, C, H, W) uint8
    outputs: dict[str, torch.Tensor]  # entry name -> (K, C', H, W) uint8
    targets: torch.Tensor | None = None  # (K, C', H, W) uint8
    input_label: str = "input"
    target_label: str = "ground truth"

    def columns(self) -> list[tuple[str, torch.Tensor]]:
        """(caption, images) per column, left to right."""
        columns = [(self.input_label, self.inputs)] if self.inputs is not None else []
        columns += list(self.outputs.items())
        if self.targets is not None:
            columns.append((self.target_label, self.targets))
        return columns


@dataclass
class Report:
    """Everything the report shows. `baselines` are reference rows (display name -> scores), not contenders."""

    title: str
    task: str
    split: str
    entries: list[ReportEntry]
    baselines: dict[str, list[Score]] = field(default_factory=dict)
    grid: ComparisonGrid | None = None
    notes: list[str] = field(default_factory=list)  # budget, machine, date...


# --- the results table ------------------------------------------------------------------------------------------
@dataclass
class TableRow:
    name: str
    kind: str  # "model" or "baseline"
    scores: dict[str, Score]
    seeds: int = 1


@dataclass
class ResultsTable:
    """The comparison as data: one row per entry and baseline, one column per metric, and the verdicts."""

    metrics: list[str]
    rows: list[TableRow]
    higher_is_better: dict[str, bool]
    networks: dict[str, FeatureNetwork | None]
    best: dict[str, str | None]  # best model value per metric (None: no model computed it)
    winners: dict[str, str]  # model name or "tie"

    def models(self) -> list[TableRow]:
        return [row for row in self.rows if row.kind == "model"]


def results_table(report: Report, seed: int = 0) -> ResultsTable:
    """Combine each entry's seeds (`combine_seeds`), add bootstrap intervals to baselines, decide the winners."""
    rows = [
        TableRow(entry.name, "model", {s.metric: s for s in combine_seeds(entry.results, seed)}, len(entry.results))
        for entry in report.entries
    ]
    rows += [
        TableRow(name, "baseline", {s.metric: s for s in with_intervals(scores, seed)})
        for name, scores in report.baselines.items()
    ]
    metrics = list(dict.fromkeys(metric for row in rows for metric in row.scores))
    directions, networks, best, winners = {}, {}, {}, {}
    for metric in metrics:
        present = [row.scores[metric] for row in rows if metric in row.scores]
        directions[metric] = present[0].higher_is_better
        networks[metric] = next((s.network for s in present if s.network is not None), None)
        contenders = {row.name: row.scores[metric] for row in rows if row.kind == "model" and metric in row.scores}
        valid = {name: s for name, s in contenders.items() if s.ok and math.isfinite(s.value)}
        pick = max if directions[metric] else min
        best[metric] = pick(valid, key=lambda name: valid[name].value) if valid else None
        winners[metric] = winner(contenders, directions[metric]) if valid else TIE
    return ResultsTable(metrics, rows, directions, networks, best, winners)


def verdict(table: ResultsTable, metric: str) -> str:
    """The winner of `metric` in words, with the reason (and a note when a baseline beats every model)."""
    direction = "higher" if table.higher_is_better[metric] else "lower"
    computed = [row for row in table.models() if metric in row.scores and row.scores[metric].ok]
    name = table.winners[metric]
    if not computed:
        text = "no model computed it"
    elif len(computed) == 1:
        text = f"{computed[0].name} (the only model that computed it)"
    elif name != TIE:
        interval = table.rows[[row.name for row in table.rows].index(name)].scores[metric].interval
        text = f"{name} wins: its 95% interval {_interval_text(interval)} does not overlap any other model's"
    elif any(row.scores[metric].interval is None for row in computed):
        text = "tie: no interval to separate the models (no per-image values and a single seed)"
    else:
        text = f"tie: the best ({table.best[metric]}) overlaps another model's 95% interval"
    best = table.best[metric]
    if best is not None:
        best_value = _row(table, best).scores[metric].value
        better = [
            row.name
            for row in table.rows
            if row.kind == "baseline"
            and metric in row.scores
            and row.scores[metric].ok
            and (
                row.scores[metric].value > best_value
                if table.higher_is_better[metric]
                else row.scores[metric].value < best_value
            )
        ]
        if better:
            text += f"; the baseline {', '.join(better)} scores better than every model"
    return f"{metric} ({direction} is better): {text}"


def _row(table: ResultsTable, name: str) -> TableRow:
    return next(row for row in table.rows if row.name == name)


# --- writing ----------------------------------------------------------------------------------------------------
def write_report(report: Report, out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write report.html, results.md, results.json and the PNG figures that have data into `out_dir`.

    Returns {"html", "markdown", "json", "grid", "curves", "metric_vs_step", "steps_quality"} -> path, for the
    files written (figures without data are left out, and the page says so).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = results_table(report, seed)
    figures: dict[str, Path] = {}
    if report.grid is not None and report.grid.columns():
        figures["grid"] = _save_png(draw_grid(report.grid), out_dir / "grid.png")
    for key, plot in (
        ("curves", plot_loss_curves),
        ("metric_vs_step", plot_metric_vs_step),
        ("steps_quality", plot_steps_quality),
    ):
        picture = plot(report.entries, seed)
        if picture is not None:
            figures[key] = _save_png(picture, out_dir / f"{key}.png")
    paths = dict(figures)
    paths["json"] = out_dir / "results.json"
    atomic_write_text(paths["json"], json.dumps(results_document(report, table, seed), indent=2) + "\n")
    paths["markdown"] = out_dir / "results.md"
    atomic_write_text(paths["markdown"], markdown_report(report, table, seed))
    paths["html"] = out_dir / "report.html"
    atomic_write_text(paths["html"], html_report(report, table, figures, seed))
    return paths


def _save_png(picture, path: Path) -> Path:
    with atomic_path(path) as temporary:
        picture.save(temporary, format="PNG")
    return path


def results_document(report: Report, table: ResultsTable, seed: int = 0) -> dict[str, Any]:
    """results.json: entries and baselines with their scores and intervals, the winners, the costs."""

    def scores_of(row: TableRow) -> dict[str, Any]:
        return {metric: _score_json(score) for metric, score in row.scores.items()}

    entries = []
    for entry, row in zip(report.entries, table.models(), strict=True):
        entries.append(
            {
                "name": entry.name,
                "model": entry.model,
                "run_dirs": list(entry.run_dirs),
                "seeds": len(entry.results),
                "steps": [result.step for result in entry.results],
                "scores": scores_of(row),
                "cost": dataclasses.asdict(entry.cost),
                "metric_vs_step": [
                    {
                        "step": result.step,
                        "split": result.split,
                        "scores": {s.metric: _score_json(s) for s in with_intervals(result.scores, seed)},
                    }
                    for result in sorted(entry.step_results, key=lambda result: result.step)
                ],
                "steps_quality": [
                    {
                        "sampler": item.sampler,
                        "steps": item.steps,
                        "seconds_per_image": item.seconds_per_image,
                        "scores": {s.metric: _score_json(s) for s in item.result.scores},
                    }
                    for item in entry.steps_quality
                ],
            }
        )
    return _json_safe(
        {
            "format": REPORT_FORMAT,
            "title": report.title,
            "task": report.task,
            "split": report.split,
            "notes": list(report.notes),
            "metrics": [
                {
                    "metric": metric,
                    "higher_is_better": table.higher_is_better[metric],
                    "network": table.networks[metric].name if table.networks[metric] else None,
                    "network_held_out_accuracy": (
                        table.networks[metric].held_out_accuracy if table.networks[metric] else None
                    ),
                    "best": table.best[metric],
                    "winner": table.winners[metric],
                    "verdict": verdict(table, metric),
                }
                for metric in table.metrics
            ],
            "winners": dict(table.winners),
            "entries": entries,
            "baselines": [{"name": row.name, "scores": scores_of(row)} for row in table.rows if row.kind == "baseline"],
        }
    )


def _score_json(score: Score) -> dict[str, Any]:
    values = score.to_dict()
    values.pop("per_item", None)
    values.setdefault("value", "nan")
    return values


def _json_safe(value: Any) -> Any:
    """NaN and infinities as strings (JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


# --- formatting -------------------------------------------------------------------------------------------------
def _number_text(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


def _interval_text(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f"[{_number_text(interval[0], 3)}, {_number_text(interval[1], 3)}]"


def _score_text(score: Score, seeds: int) -> tuple[str, str]:
    """(value text, interval text) for a table cell; the std is shown only as a spread over seeds."""
    text = _number_text(score.value)
    if seeds > 1 and score.std is not None:
        text += f" ± {_number_text(score.std, 2)}"
    return text, _interval_text(score.interval)


def _arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def _network_text(network: FeatureNetwork | None) -> str:
    if network is None:
        return "pixels"
    if network.held_out_accuracy is None:
        return network.name
    return f"{network.name} (held-out acc. {network.held_out_accuracy:.1%})"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def cost_rows(report: Report) -> list[tuple[str, list[str]]]:
    """(entry name, formatted cells) in the order of COST_HEADERS."""
    rows = []
    for entry in report.entries:
        cost = entry.cost
        rows.append(
            (
                entry.name,
                [
                    _duration(cost.train_seconds),
                    format_count(cost.images_seen) if cost.images_seen is not None else "—",
                    f"{cost.train_flops:.3g}" if cost.train_flops is not None else "—",
                    f"{cost.train_images_per_s:.4g}" if cost.train_images_per_s is not None else "—",
                    _duration(cost.seconds_per_image),
                    format_count(cost.parameters) if cost.parameters is not None else "—",
                ],
            )
        )
    return rows


COST_HEADERS = ["training time", "images seen", "training FLOPs", "train images/s", "time per image", "parameters"]


def _skip_reasons(table: ResultsTable) -> list[tuple[str, str, str]]:
    """(metric, reason, rows) with each distinct reason once."""
    reasons: dict[tuple[str, str], list[str]] = {}
    for row in table.rows:
        for metric, score in row.scores.items():
            if not score.ok:
                reasons.setdefault((metric, score.skipped), []).append(row.name)
    return [(metric, reason, ", ".join(names)) for (metric, reason), names in reasons.items()]


def _steps_quality_metrics(entries: Sequence[ReportEntry]) -> list[str]:
    return list(
        dict.fromkeys(s.metric for entry in entries for item in entry.steps_quality for s in item.result.scores if s.ok)
    )


# --- Markdown ---------------------------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown_report(report: Report, table: ResultsTable, seed: int = 0) -> str:
    """results.md: the results, verdicts, cost and sampling-steps tables of the page, in Markdown."""
    parts = [f"# {report.title}\n", f"Task `{report.task}`, split `{report.split}`.\n"]
    parts += [f"- {note}\n" for note in report.notes]
    headers = ["entry"] + [f"{metric} {_arrow(table.higher_is_better[metric])}" for metric in table.metrics]
    rows = [["feature network"] + [_network_text(table.networks[m]) for m in table.metrics]]
    for row in table.rows:
        cells = [row.name if row.kind == "model" else f"{row.name} (baseline)"]
        for metric in table.metrics:
            score = row.scores.get(metric)
            if score is None:
                cells.append("—")
            elif not score.ok:
                cells.append("skipped")
            else:
                value, interval = _score_text(score, row.seeds)
                marked = f"**{value}**" if row.kind == "model" and table.best[metric] == row.name else value
                cells.append(f"{marked} {interval}".strip())
        rows.append(cells)
    rows.append(["winner"] + [table.winners[m] for m in table.metrics])
    parts += ["\n## Results\n\n", _md_table(headers, rows), "\n", _LEGEND_TEXT, "\n\n### Winners\n\n"]
    parts += [f"- {verdict(table, metric)}\n" for metric in table.metrics]
    skipped = _skip_reasons(table)
    if skipped:
        parts.append("\n### Skipped metrics\n\n")
        parts += [f"- {metric} ({names}): {reason}\n" for metric, reason, names in skipped]
    parts += [
        "\n## Cost\n\n",
        _md_table(["entry", *COST_HEADERS], [[name, *cells] for name, cells in cost_rows(report)]),
    ]
    quality_metrics = _steps_quality_metrics(report.entries)
    if quality_metrics:
        parts += [
            "\n## Sampling steps versus quality and time\n\n",
            _md_table(*_steps_quality_table(report, quality_metrics)),
        ]
    return "".join(parts)


def _steps_quality_table(report: Report, metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    headers = ["entry", "sampler", "steps", "time per image", *metrics]
    rows = []
    for entry in report.entries:
        for item in sorted(entry.steps_quality, key=lambda item: (item.sampler, item.steps)):
            values = [item.result.score(m) for m in metrics]
            rows.append(
                [entry.name, item.sampler, str(item.steps), _duration(item.seconds_per_image)]
                + [_number_text(s.value) if s is not None and s.ok else "—" for s in values]
            )
    return headers, rows


_LEGEND_TEXT = (
    "↑: higher is better, ↓: lower is better. Values are means over test images (one training seed) or "
    "means ± std over training seeds. Brackets hold the "
    "95% interval of the mean: a percentile bootstrap over test images (2000 resamples) for one seed, a Student-t "
    "interval over seeds for several. Metrics without per-image values (FID, KID, IS, precision/recall) have no "
    "interval with one seed. The best model value is in bold; a winner is named only where its interval does not "
    "overlap any other model's, otherwise the metric is a tie. Baselines are references, not contenders."
)


# --- HTML -------------------------------------------------------------------------------------------------------
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1200px;
       margin: 1.5rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; } h3 { font-size: 1.05rem; }
.meta { color: #555; margin: 0 0 1rem; } .meta li { margin: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: .5rem 0; }
th, td { border: 1px solid #d8d8d8; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; } th.network { font-weight: normal; font-size: 11px; color: #555; }
th.name, td.name { text-align: left; white-space: nowrap; }
td.best { font-weight: 700; background: #e7f5ea; }
tr.baseline td { background: #fafafa; color: #444; } tr.baseline td.name { font-style: italic; }
tfoot td { background: #f3f4f6; font-weight: 600; }
.ci { display: block; color: #777; font-size: 11px; font-weight: normal; white-space: nowrap; }
.skipped, .missing { color: #999; font-style: italic; }
.legend { color: #555; font-size: 13px; max-width: 900px; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
img.pixels { image-rendering: pixelated; }
figcaption { color: #555; font-size: 13px; margin-top: .3rem; }
.empty { color: #888; font-style: italic; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table_cell(row: TableRow, metric: str, table: ResultsTable) -> str:
    attributes = f'data-entry="{_e(row.name)}" data-metric="{_e(metric)}"'
    score = row.scores.get(metric)
    if score is None:
        return f'<td class="missing" {attributes} data-missing="1" title="not computed for this entry">—</td>'
    if not score.ok:
        reason = _e(score.skipped)
        return f'<td class="skipped" {attributes} data-skipped="{reason}" title="{reason}">skipped</td>'
    value, interval = _score_text(score, row.seeds)
    best = row.kind == "model" and table.best[metric] == row.name
    spread = [f"std {_number_text(score.std, 3)}"] if score.std is not None else []
    title = "; ".join([f"n = {score.count}", *spread, *score.notes])
    interval_html = f'<span class="ci">{_e(interval)}</span>' if interval else ""
    css = ' class="best"' if best else ""
    return f'<td{css} {attributes} data-value="{score.value!r}" title="{_e(title)}">{_e(value)}{interval_html}</td>'


def _html_results(table: ResultsTable) -> str:
    if not table.metrics:
        return '<p class="empty">No scores: the entries hold no evaluation results.</p>'
    head = "".join(f'<th data-metric="{_e(m)}">{_e(m)} {_arrow(table.higher_is_better[m])}</th>' for m in table.metrics)
    networks = "".join(f'<th class="network">{_e(_network_text(table.networks[m]))}</th>' for m in table.metrics)
    body = []
    for row in table.rows:
        label = _e(row.name) + (" <small>(baseline)</small>" if row.kind == "baseline" else "")
        if row.kind == "model" and row.seeds > 1:
            label += f" <small>({row.seeds} seeds)</small>"
        cells = "".join(_html_table_cell(row, metric, table) for metric in table.metrics)
        body.append(f'<tr class="{row.kind}" data-entry="{_e(row.name)}"><td class="name">{label}</td>{cells}</tr>')
    winners = "".join(
        f'<td data-metric="{_e(m)}" data-winner="{_e(table.winners[m])}">{_e(table.winners[m])}</td>'
        for m in table.metrics
    )
    return (
        '<div class="scroll"><table id="results">'
        f'<thead><tr><th class="name">entry</th>{head}</tr>'
        f'<tr><th class="name network">feature network</th>{networks}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody>"
        f'<tfoot><tr><td class="name">winner</td>{winners}</tr></tfoot></table></div>'
    )


def _html_simple_table(headers: list[str], rows: list[list[str]], table_id: str) -> str:
    head = "".join(f'<th class="name">{_e(h)}</th>' if i == 0 else f"<th>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="name">{_e(c)}</td>' if i == 0 else f"<td>{_e(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def _html_figure(path: Path | None, alt: str, caption: str, pixels: bool = False, missing: str = "") -> str:
    if path is None:
        return f'<p class="empty">{_e(missing)}</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    css = ' class="pixels"' if pixels else ""
    return (
        f'<figure><img{css} src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def html_report(report: Report, table: ResultsTable, figures: dict[str, Path], seed: int = 0) -> str:
    """The one self-contained page: inline CSS, figures as data URIs, no script and no external resource."""
    names = [entry.name for entry in report.entries]
    grid_caption = ""
    if report.grid is not None:
        captions = [caption for caption, _ in report.grid.columns()]
        rows_text = "test inputs" if report.grid.inputs is not None else "samples"
        grid_caption = (
            f"Rows: the first {len(report.grid.columns()[0][1])} {rows_text}. Columns: {' | '.join(captions)}."
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(report.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(report.title)}</h1>",
        f'<p class="meta">Task <code>{_e(report.task)}</code>, split <code>{_e(report.split)}</code>; '
        f"{len(names)} model entr{'y' if len(names) == 1 else 'ies'}: {_e(', '.join(names))}.</p>",
    ]
    if report.notes:
        parts.append('<ul class="meta">' + "".join(f"<li>{_e(note)}</li>" for note in report.notes) + "</ul>")
    parts += ["<h2>Results</h2>", _html_results(table), f'<p class="legend">{_e(_LEGEND_TEXT)}</p>']
    if table.metrics:
        parts.append("<h3>Winners</h3><ul>" + "".join(f"<li>{_e(verdict(table, m))}</li>" for m in table.metrics))
        parts.append("</ul>")
    skipped = _skip_reasons(table)
    if skipped:
        parts.append("<h3>Skipped metrics</h3><ul>")
        parts += [f"<li><b>{_e(m)}</b> ({_e(names)}): {_e(reason)}</li>" for m, reason, names in skipped]
        parts.append("</ul>")
    parts += [
        "<h2>Comparison grid</h2>",
        _html_figure(
            figures.get("grid"),
            "comparison grid: " + grid_caption,
            grid_caption,
            pixels=True,
            missing="No grid: no images were given.",
        ),
        "<h2>Cost</h2>",
        _html_simple_table(["entry", *COST_HEADERS], [[name, *cells] for name, cells in cost_rows(report)], "cost"),
        "<h2>Training loss curves</h2>",
        _html_figure(
            figures.get("curves"),
            "training loss curves per loss name, one line per entry",
            "Training losses from each run's metrics.csv (one panel per loss name; faint: raw, solid: smoothed).",
            missing="No loss curves: no run has a metrics.csv with loss columns.",
        ),
        "<h2>Metrics versus training step</h2>",
        _html_figure(
            figures.get("metric_vs_step"),
            "metric versus training step, one panel per metric",
            "Evaluation scores at earlier checkpoints (RUN/eval/*.json), error bars: 95% bootstrap interval.",
            missing="No metric-versus-step data: no evaluation results at earlier checkpoints.",
        ),
    ]
    quality_metrics = _steps_quality_metrics(report.entries)
    if quality_metrics:
        parts += [
            "<h2>Sampling steps versus quality and time</h2>",
            _html_figure(
                figures.get("steps_quality"),
                "quality and seconds per image versus sampler steps",
                "Each diffusion entry's scores and time per image at several sampler step counts.",
            ),
            _html_simple_table(*_steps_quality_table(report, quality_metrics), "steps_quality"),
        ]
    parts.append("<h2>Runs</h2>")
    parts.append(
        _html_simple_table(
            ["entry", "model", "seeds", "checkpoint steps", "run directories"],
            [
                [e.name, e.model, str(len(e.results)), ", ".join(str(r.step) for r in e.results), ", ".join(e.run_dirs)]
                for e in report.entries
            ],
            "runs",
        )
    )
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --- figures ----------------------------------------------------------------------------------------------------
def _wrap(text: str, font, width: int) -> list[str]:
    """Break `text` into lines no wider than `width` pixels (at spaces, else inside words that are too long)."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}".strip()
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while len(word) > 1 and font.getlength(word) > width:
            cut = len(word) - 1
            while cut > 1 and font.getlength(word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    return lines


def _rgb(images: torch.Tensor) -> np.ndarray:
    """uint8 (K, C, H, W) with 1 or 3 channels -> (K, H, W, 3)."""
    images = images.detach().cpu()
    if images.dtype != torch.uint8:
        raise GenlabError(f"comparison grid: expected uint8 images, got {images.dtype}")
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return images[:, :3].permute(0, 2, 3, 1).numpy()


def draw_grid(grid: ComparisonGrid, padding: int = 6):
    """The comparison grid as a PIL image: a caption band over each column, then one row per test item."""
    from PIL import Image, ImageDraw

    columns = grid.columns()
    count = min(len(images) for _, images in columns)
    height, width = columns[0][1].shape[-2:]
    scale = upscale_factor(max(height, width))  # images under 128 px are upscaled (nearest) to be seen
    cell_w, cell_h = width * scale, height * scale
    font = default_font(13)
    captions = [_wrap(caption, font, cell_w) for caption, _ in columns]
    line_height = 16
    band = padding + line_height * max(len(lines) for lines in captions) + padding
    canvas = Image.new("RGB", (padding + len(columns) * (cell_w + padding), band + count * (cell_h + padding)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, ((_, images), lines) in enumerate(zip(columns, captions, strict=True)):
        left = padding + index * (cell_w + padding)
        for number, line in enumerate(lines):
            offset = (cell_w - font.getlength(line)) / 2
            draw.text((left + offset, padding + number * line_height), line, fill=(20, 20, 20), font=font)
        for row, array in enumerate(_rgb(images[:count])):
            tile = Image.fromarray(array, mode="RGB").resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(tile, (left, band + row * (cell_h + padding)))
    return canvas


def _figure(panels: int, columns: int = 3, panel_size: tuple[float, float] = (4.2, 3.0)):
    """A matplotlib Figure (no pyplot: no global backend state) with `panels` axes in a grid."""
    from matplotlib.figure import Figure

    columns = min(columns, panels)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(panel_size[0] * columns, panel_size[1] * rows), dpi=100, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for extra in axes[panels:]:
        extra.set_visible(False)
    return figure, axes[:panels]


def _figure_image(figure):
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _colours(count: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return [palette(index % 10) for index in range(count)]


def _smooth(values: np.ndarray) -> np.ndarray:
    """An exponential moving average with a span of about 5% of the curve (for noisy GAN losses)."""
    alpha = 2.0 / (max(2, len(values) // 20) + 1)
    smoothed = np.empty_like(values)
    running = values[0]
    for index, value in enumerate(values):
        running = alpha * value + (1 - alpha) * running
        smoothed[index] = running
    return smoothed


def plot_loss_curves(entries: Sequence[ReportEntry], seed: int = 0):
    """One panel per loss name, one line per entry (each seed's run drawn in the entry's colour); None without data."""
    from matplotlib.ticker import MaxNLocator

    curves: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for index, entry in enumerate(entries):
        for run_dir in entry.run_dirs:
            path = Path(run_dir) / "metrics.csv"
            if not path.is_file():
                continue
            columns = read_metrics(path)
            for name, values in columns.items():
                if name.startswith("loss") and values and len(values) == len(columns["step"]):
                    curves.setdefault(name, []).append((index, np.asarray(columns["step"]), np.asarray(values)))
    if not curves:
        return None
    figure, axes = _figure(len(curves))
    colours = _colours(len(entries))
    for axis, (name, lines) in zip(axes, curves.items(), strict=True):
        labelled = set()
        for index, steps, values in lines:
            colour = colours[index]
            label = entries[index].name if index not in labelled else None
            labelled.add(index)
            if len(values) > 20:
                axis.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
                axis.plot(steps, _smooth(values), color=colour, linewidth=1.5, label=label)
            else:
                axis.plot(
                    steps, values, color=colour, linewidth=1.5, marker="." if len(values) < 10 else None, label=label
                )
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _figure_image(figure)


def plot_metric_vs_step(entries: Sequence[ReportEntry], seed: int = 0):
    """One panel per metric: value against checkpoint step per entry, with bootstrap error bars; None without data."""
    from matplotlib.ticker import MaxNLocator

    series: dict[str, dict[int, list[tuple[int, float, tuple[float, float] | None]]]] = {}
    for index, entry in enumerate(entries):
        for result in sorted(entry.step_results, key=lambda result: result.step):
            for score in with_intervals(result.scores, seed):
                if score.ok and math.isfinite(score.value):
                    series.setdefault(score.metric, {}).setdefault(index, []).append(
                        (result.step, score.value, score.interval)
                    )
    if not series:
        return None
    figure, axes = _figure(len(series))
    colours = _colours(len(entries))
    for axis, (metric, by_entry) in zip(axes, series.items(), strict=True):
        higher = next(
            s.higher_is_better for e in entries for r in e.step_results for s in r.scores if s.metric == metric
        )
        for index, points in by_entry.items():
            steps = [p[0] for p in points]
            values = [p[1] for p in points]
            errors = np.array(  # (2, points): below and above; an interval that misses its value draws none
                [[v - p[2][0], p[2][1] - v] if p[2] else [0.0, 0.0] for v, p in zip(values, points, strict=True)]
            ).T.clip(min=0.0)
            axis.errorbar(
                steps, values, yerr=errors, color=colours[index], marker="o", capsize=3, label=entries[index].name
            )
        axis.set_title(f"{metric} {_arrow(higher)}")
        axis.set_xlabel("training step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _figure_image(figure)


def plot_steps_quality(entries: Sequence[ReportEntry], seed: int = 0):
    """Quality per metric and seconds per image against sampler steps (log axis); None without data."""
    from matplotlib.ticker import NullFormatter

    metrics = _steps_quality_metrics(entries)
    if not metrics:
        return None
    figure, axes = _figure(len(metrics) + 1)
    colours = _colours(len(entries))
    for index, entry in enumerate(entries):
        samplers = dict.fromkeys(item.sampler for item in entry.steps_quality)
        for style, sampler in zip(("-", "--", ":", "-."), samplers, strict=False):
            rows = sorted((item for item in entry.steps_quality if item.sampler == sampler), key=lambda i: i.steps)
            label = f"{entry.name} {sampler}".strip()
            for axis, metric in zip(axes, metrics, strict=False):
                points = [(i.steps, s.value) for i in rows if (s := i.result.score(metric)) is not None and s.ok]
                if points:
                    axis.plot(*zip(*points, strict=True), style, color=colours[index], marker="o", label=label)
            timed = [(i.steps, i.seconds_per_image) for i in rows if i.seconds_per_image is not None]
            if timed:
                axes[-1].plot(*zip(*timed, strict=True), style, color=colours[index], marker="o", label=label)
    directions = {s.metric: s.higher_is_better for e in entries for i in e.steps_quality for s in i.result.scores}
    titles = [f"{metric} {_arrow(directions[metric])}" for metric in metrics] + ["seconds per image ↓"]
    ticks = sorted({item.steps for entry in entries for item in entry.steps_quality})
    for axis, title in zip(axes, titles, strict=True):
        axis.set_title(title)
        axis.set_xscale("log")
        axis.set_xticks(ticks, [str(tick) for tick in ticks])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("sampler steps")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    return _figure_image(figure)


# --- building a report from run directories ---------------------------------------------------------------------
_NAME_IGNORED = {
    "seed", "train.device", "train.log_every", "train.sample_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.preview_count", "train.compile",
}  # fmt: skip


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def entry_names(configs: Sequence[Any]) -> list[str]:
    """Readable names: the model, plus the config values that differ between runs of that model (seed aside).

    Runs that differ only by seed get the same name and so become the seeds of one entry.
    """
    flats = [_flat(config.to_dict()) for config in configs]
    names = []
    for config, flat in zip(configs, flats, strict=True):
        same_model = [other for c, other in zip(configs, flats, strict=True) if c.model == config.model]
        varying = [
            key
            for key in flat
            if key not in _NAME_IGNORED and key != "model" and len({repr(o.get(key)) for o in same_model}) > 1
        ]
        detail = ", ".join(f"{key}={_short(flat[key])}" for key in varying)
        names.append(f"{config.model} [{detail}]" if detail else config.model)
    return names


def _short(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _eval_folder(run_dir: Path) -> tuple[list[EvalResult], list[StepsQualityRow], list[str]]:
    """RUN/eval/*.json: metric-vs-step results and steps-*.json sampler rows; notes for files that are not results."""
    step_results, quality, notes = [], [], []
    for path in sorted((run_dir / "eval").glob("*.json")):
        try:
            result = EvalResult.load(path)
        except GenlabError as error:
            notes.append(f"ignored {path}: {error}")
            continue
        if path.name.startswith("steps-"):
            steps = result.sampler.get("steps")
            if steps is None:
                notes.append(f"ignored {path}: a steps-*.json result needs sampler.steps")
                continue
            seconds = result.extra.get("seconds_per_image")
            sampler = str(result.sampler.get("sampler", ""))
            quality.append(
                StepsQualityRow(int(steps), float(seconds) if seconds is not None else None, result, sampler)
            )
        else:
            step_results.append(result)
    return _one_curve(step_results), quality, notes


def _one_curve(results: list[EvalResult]) -> list[EvalResult]:
    """The results of one split, one per checkpoint step, sorted: the split with the most checkpoints (the
    validation scores taken during training), not the final test evaluation kept beside them."""
    by_split: dict[str, dict[int, EvalResult]] = {}
    for result in results:
        by_split.setdefault(result.split, {}).setdefault(result.step, result)
    if not by_split:
        return []
    chosen = max(by_split.values(), key=len)
    return [chosen[step] for step in sorted(chosen)]


def _derived_cost(run_dir: Path, loaded, seconds_per_image: float | None) -> Cost:
    """cost.json when present; missing fields derived from the model, metrics.csv and the grid timing."""
    cost = Cost.load(run_dir / COST_FILE) if (run_dir / COST_FILE).is_file() else Cost()
    if cost.parameters is None:
        cost.parameters = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)  # as benchmark.py
    if cost.images_seen is None:
        cost.images_seen = loaded.step * loaded.config.train.batch_size
    if cost.train_seconds is None and (run_dir / "metrics.csv").is_file():
        elapsed = read_metrics(run_dir / "metrics.csv").get("elapsed_s", [])
        cost.train_seconds = elapsed[-1] if elapsed else None
    if cost.train_images_per_s is None and cost.train_seconds and cost.images_seen:
        cost.train_images_per_s = cost.images_seen / cost.train_seconds
    if cost.seconds_per_image is None:
        cost.seconds_per_image = seconds_per_image
    return cost


def _mean_cost(costs: Sequence[Cost]) -> Cost:
    """Field-wise mean over an entry's seeds (of the seeds that know the field)."""
    values = {}
    for item in dataclasses.fields(Cost):
        known = [getattr(cost, item.name) for cost in costs if getattr(cost, item.name) is not None]
        mean = float(np.mean(known)) if known else None
        values[item.name] = (
            int(round(mean)) if mean is not None and item.name in ("images_seen", "parameters") else mean
        )
    return Cost(**values)


@torch.no_grad()
def _grid_outputs(loaded, count: int, seed: int) -> tuple[torch.Tensor | None, float | None]:
    """The model's K outputs for the grid (translations of the first K test inputs, or K samples) and s/image."""

    model, task = loaded.model, loaded.task()
    started = time.perf_counter()
    if model.can("translate"):
        source = task.split("test").fields["source"][:count]
        generator = torch.Generator().manual_seed(seed)
        output = model.translate_batch(uint8_to_signed(source).to(model.device), generator=generator)
    elif model.can("sample"):
        labels = cycle_labels(count, task.spec.num_classes) if model.conditional else None
        output = sample_images(model, count, labels, seed)
    else:
        return None, None
    images = signed_to_uint8(output).cpu()
    return images, (time.perf_counter() - started) / count


def _now() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"


def report_from_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    names: Sequence[str] | None = None,
    grid_count: int = 6,
    device: str = "auto",
    seed: int = 0,
    title: str | None = None,
    extra_notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Build the report of existing runs (see the module docstring for what each run directory supplies).

    `names` gives each run's entry name (runs with equal names are seeds of one entry); by default names come
    from `entry_names`. The grid shows the first `grid_count` test inputs (or samples) of each entry's first run.
    Returns the paths `write_report` wrote.
    """
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    if not run_dirs:
        raise GenlabError("report: give at least one run directory")
    if names is not None and len(names) != len(run_dirs):
        raise GenlabError(f"report: {len(names)} names for {len(run_dirs)} runs; give one name per run")
    results = [EvalResult.load(run_dir / "eval.json") for run_dir in run_dirs]
    tasks = sorted({result.task for result in results})
    if len(tasks) > 1:
        raise GenlabError(f"report: the runs are on different tasks ({', '.join(tasks)}); compare one task at a time")
    loaded_runs = [load_run(run_dir, device=device) for run_dir in run_dirs]
    names = list(names) if names is not None else entry_names([loaded.config for loaded in loaded_runs])

    notes: list[str] = list(extra_notes)
    grid_outputs: dict[str, torch.Tensor] = {}
    entries: dict[str, ReportEntry] = {}
    costs: dict[str, list[Cost]] = {}
    for run_dir, loaded, result, name in zip(run_dirs, loaded_runs, results, names, strict=True):
        first_seed = name not in entries
        entry = entries.setdefault(name, ReportEntry(name, loaded.config.model))
        entry.run_dirs.append(str(run_dir))
        entry.results.append(result)
        seconds_per_image = None
        if first_seed:
            images, seconds_per_image = _grid_outputs(loaded, grid_count, seed)
            if images is None:
                notes.append(f"{name}: neither translates nor samples; left out of the grid")
            else:
                grid_outputs[name] = images
            entry.step_results, entry.steps_quality, folder_notes = _eval_folder(run_dir)
            notes += folder_notes
        costs.setdefault(name, []).append(_derived_cost(run_dir, loaded, seconds_per_image))
    for name, entry in entries.items():
        entry.cost = _mean_cost(costs[name])

    first = loaded_runs[0]
    task = first.task()
    test = task.split("test")
    count = min([grid_count, *(len(images) for images in grid_outputs.values())])
    if first.model.can("translate"):
        grid = ComparisonGrid(test.fields["source"][:count], grid_outputs, test.fields.get("target", None))
        if grid.targets is not None:
            grid.targets = grid.targets[:count]
    else:
        real = test.fields.get("image")
        grid = ComparisonGrid(
            None, grid_outputs, real[:count] if real is not None else None, target_label="real (test)"
        )
    baselines = next((r.baselines for r in results if r.baselines), {})
    notes += [
        f"built by genlab report from {len(run_dirs)} run(s) on {_now()} UTC",
        f"machine: {platform.machine()} {platform.system()}, device {first.model.device}, torch {torch.__version__}",
        "costs not in RUN/cost.json are derived: parameters from the model, training time from metrics.csv, "
        "images seen = steps × batch size, time per image from the grid pass",
    ]
    report = Report(
        title=title or f"genlab benchmark: {results[0].task}",
        task=results[0].task,
        split=results[0].split,
        entries=list(entries.values()),
        baselines={BASELINE_NAMES.get(name, name.replace("_", " ")): scores for name, scores in baselines.items()},
        grid=grid if grid_outputs else None,
        notes=notes,
    )
    return write_report(report, out_dir, seed=seed)
