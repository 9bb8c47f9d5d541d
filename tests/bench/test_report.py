import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.bench.report import (
    ComparisonGrid,
    Cost,
    Report,
    ReportEntry,
    StepsQualityRow,
    report_from_runs,
    write_report,
)
from genlab.bench.stats import bootstrap_interval, t_interval
from genlab.results import EvalResult, FeatureNetwork, Score, skipped
from genlab.runs import build_run_config
from genlab.train.trainer import train
from genlab.utils import GenlabError

DOMAIN = FeatureNetwork("domain:toy-paired", held_out_accuracy=0.875)


def per_item(mean: float, spread: float, count: int = 40, seed: int = 0) -> tuple[float, ...]:
    values = np.random.default_rng(seed).normal(mean, spread, count)
    return tuple(float(v) for v in values - values.mean() + mean)  # exact mean


def eval_result(model: str, run: str, scores: list[Score], step: int = 100, baselines=None) -> EvalResult:
    return EvalResult(run, model, "toy-paired", "test", step, 40, scores, baselines=baselines or {})


def known_report(tmp_path: Path) -> Report:
    """Two entries with different metric sets (one over 3 seeds), a baseline, a skipped metric, curves, a grid."""
    good = [
        eval_result(
            "pix2pix",
            f"runs/p2p-s{seed}",
            [
                Score("psnr", 24.0 + seed, count=40, unit="dB", per_item=per_item(24.0 + seed, 2.0, seed=seed)),
                Score("ssim", 0.80 + seed / 100, count=40, per_item=per_item(0.80 + seed / 100, 0.05, seed=seed)),
                skipped("ms_ssim", "needs images of at least 176 px"),
                Score("domain.fid", 30.0 + seed, count=40, higher_is_better=False, network=DOMAIN),
            ],
        )
        for seed in range(3)
    ]
    other = eval_result(
        "ddpm",
        "runs/ddpm",
        [
            Score("psnr", 18.0, count=40, unit="dB", per_item=per_item(18.0, 2.0, seed=9)),
            Score("ssim", 0.79, count=40, per_item=per_item(0.79, 0.2, seed=9)),
            Score("domain.fid", 45.0, count=40, higher_is_better=False, network=DOMAIN),
            Score("domain.kid", 0.03, std=0.01, count=40, higher_is_better=False, network=DOMAIN),
        ],
        baselines={"nearest_neighbour": [Score("psnr", 16.0, count=40, per_item=per_item(16.0, 1.0, seed=4))]},
    )
    runs = []
    for name, loss in (("p2p", 1.0), ("ddpm", 2.0)):
        run = tmp_path / name
        run.mkdir()
        lines = ["step,elapsed_s,images_per_s,loss_g,loss_d"]
        lines += [f"{step},{step * 0.1},{10.0},{loss / step},{loss / 2}" for step in range(1, 31)]
        (run / "metrics.csv").write_text("\n".join(lines) + "\n")
        runs.append(str(run))
    entries = [
        ReportEntry(
            "pix2pix [net.gan_loss=lsgan]",
            "pix2pix",
            [runs[0]],
            good,
            Cost(train_seconds=60.0, images_seen=6000, parameters=54_000_000, seconds_per_image=0.002),
            step_results=[
                eval_result(
                    "pix2pix",
                    "runs/p2p",
                    [Score("psnr", 20.0 + step / 100, per_item=per_item(20.0 + step / 100, 1.0))],
                    step,
                )
                for step in (100, 200, 300)
            ],
        ),
        ReportEntry(
            "ddpm",
            "ddpm",
            [runs[1]],
            [other],
            Cost(train_seconds=300.0, train_flops=1e15),
            steps_quality=[
                StepsQualityRow(
                    steps, steps * 0.01, eval_result("ddpm", "runs/ddpm", [Score("psnr", 15.0 + steps / 10)]), "ddim"
                )
                for steps in (10, 20, 50)
            ],
        ),
    ]
    inputs = torch.randint(0, 256, (3, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    grid = ComparisonGrid(
        inputs,
        {entries[0].name: solid((230, 40, 40), 3), entries[1].name: solid((40, 40, 230), 3)},
        255 - inputs,
    )
    return Report(
        "toy benchmark",
        "toy-paired",
        "test",
        entries,
        {"nearest neighbour": other.baselines["nearest_neighbour"]},
        grid,
        ["budget: 30 steps"],
    )


def solid(colour: tuple[int, int, int], count: int, size: int = 16) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8).view(1, 3, 1, 1).repeat(count, 1, size, size)


class TableCells(HTMLParser):
    """(entry, metric) -> the cell's data-* attributes, for every cell of the results table."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], dict[str, str]] = {}
        self.header_metrics: list[str] = []
        self.winners: dict[str, str] = {}
        self._in_results = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._in_results = attrs.get("id") == "results"
        if not self._in_results:
            return
        if tag == "th" and "data-metric" in attrs:
            self.header_metrics.append(attrs["data-metric"])
        if tag == "td" and "data-winner" in attrs:
            self.winners[attrs["data-metric"]] = attrs["data-winner"]
        elif tag == "td" and "data-entry" in attrs:
            self.cells[(attrs["data-entry"], attrs["data-metric"])] = attrs

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_results = False


@pytest.fixture
def written(tmp_path):
    report = known_report(tmp_path)
    return report, write_report(report, tmp_path / "out")


def test_results_hold_exactly_the_computed_metrics_from_the_right_entry(written):
    report, paths = written
    assert {key: path.name for key, path in paths.items()} == {
        "html": "report.html", "markdown": "results.md", "json": "results.json", "grid": "grid.png",
        "curves": "curves.png", "metric_vs_step": "metric_vs_step.png", "steps_quality": "steps_quality.png",
    }  # fmt: skip
    document = json.loads(paths["json"].read_text())
    p2p, ddpm = document["entries"]
    assert [m["metric"] for m in document["metrics"]] == ["psnr", "ssim", "ms_ssim", "domain.fid", "domain.kid"]
    assert set(p2p["scores"]) == {"psnr", "ssim", "ms_ssim", "domain.fid"}
    assert set(ddpm["scores"]) == {"psnr", "ssim", "domain.fid", "domain.kid"}
    assert p2p["seeds"] == 3 and p2p["scores"]["psnr"]["value"] == pytest.approx(25.0)  # mean of 24, 25, 26
    assert p2p["scores"]["psnr"]["std"] == pytest.approx(1.0)
    assert p2p["scores"]["psnr"]["interval"] == pytest.approx(list(t_interval([24.0, 25.0, 26.0])))
    assert ddpm["scores"]["psnr"]["value"] == 18.0
    assert ddpm["scores"]["psnr"]["interval"] == pytest.approx(list(bootstrap_interval(per_item(18.0, 2.0, seed=9))))
    assert ddpm["scores"]["domain.kid"]["value"] == 0.03 and "interval" not in ddpm["scores"]["domain.kid"]
    (baseline,) = document["baselines"]
    assert baseline["name"] == "nearest neighbour" and list(baseline["scores"]) == ["psnr"]
    assert baseline["scores"]["psnr"]["value"] == 16.0
    fid = next(m for m in document["metrics"] if m["metric"] == "domain.fid")
    assert fid["network"] == "domain:toy-paired" and fid["network_held_out_accuracy"] == 0.875
    assert fid["higher_is_better"] is False and fid["best"] == "pix2pix [net.gan_loss=lsgan]"

    table = TableCells()
    table.feed(paths["html"].read_text())
    assert table.header_metrics == ["psnr", "ssim", "ms_ssim", "domain.fid", "domain.kid"]
    values = {key: float(cell["data-value"]) for key, cell in table.cells.items() if "data-value" in cell}
    expected = {
        (entry["name"], metric): score["value"]
        for entry in [*document["entries"], *document["baselines"]]
        for metric, score in entry["scores"].items()
        if "skipped" not in score
    }
    assert values.keys() == expected.keys()
    for key, value in expected.items():
        assert values[key] == pytest.approx(value), key
    missing = {key for key, cell in table.cells.items() if "data-missing" in cell}
    assert ("ddpm", "ms_ssim") in missing and ("pix2pix [net.gan_loss=lsgan]", "domain.kid") in missing
    assert ("nearest neighbour", "ssim") in missing


def test_skipped_metrics_show_as_skipped_with_their_reason(written):
    _, paths = written
    table = TableCells()
    page = paths["html"].read_text()
    table.feed(page)
    cell = table.cells[("pix2pix [net.gan_loss=lsgan]", "ms_ssim")]
    assert cell["data-skipped"] == "needs images of at least 176 px" and cell["class"] == "skipped"
    assert re.search(r'data-metric="ms_ssim" data-skipped="[^"]*"[^>]*>skipped</td>', page)
    assert "needs images of at least 176 px" in paths["markdown"].read_text()
    document = json.loads(paths["json"].read_text())
    assert document["entries"][0]["scores"]["ms_ssim"]["skipped"] == "needs images of at least 176 px"


def test_winners_only_where_intervals_separate(written):
    _, paths = written
    document = json.loads(paths["json"].read_text())
    # psnr: 25 ± t-interval over seeds vs 18 [bootstrap]: separate. ssim: 0.81 vs 0.79 with a wide ddpm interval.
    # FID: ddpm has a single seed and no per-image values, so no interval: tie. ms_ssim: no model computed it.
    assert document["winners"] == {
        "psnr": "pix2pix [net.gan_loss=lsgan]", "ssim": "tie", "ms_ssim": "tie", "domain.fid": "tie",
        "domain.kid": "ddpm",
    }  # fmt: skip
    table = TableCells()
    table.feed(paths["html"].read_text())
    assert table.winners == document["winners"]
    page = paths["html"].read_text()
    assert "psnr (higher is better): pix2pix [net.gan_loss=lsgan] wins" in page
    assert "domain.fid (lower is better): tie" in page and "domain.kid (lower is better): ddpm (the only model" in page
    assert 'class="best" data-entry="pix2pix [net.gan_loss=lsgan]" data-metric="domain.fid"' in page
    assert "↓" in page and "↑" in page and "held-out acc. 87.5%" in page


def find_tile(picture: np.ndarray, tile: np.ndarray, top: int, x_range: range) -> list[int]:
    height, width = tile.shape[:2]
    return [x for x in x_range if np.array_equal(picture[top : top + height, x : x + width], tile)]


def test_grid_columns_are_input_then_each_model_in_entry_order_then_ground_truth(written):
    report, paths = written
    picture = np.asarray(Image.open(paths["grid"]).convert("RGB"))
    scale = 8  # 16 px images are upscaled to 128 px
    red = np.all(picture == (230, 40, 40), axis=-1)
    blue = np.all(picture == (40, 40, 230), axis=-1)
    for colour in (red, blue):  # one 128-px tile per row
        assert colour.sum() == 3 * (16 * scale) ** 2
    red_columns = np.flatnonzero(red.any(axis=0))
    blue_columns = np.flatnonzero(blue.any(axis=0))
    red_rows = np.flatnonzero(red.any(axis=1))
    assert red_columns.max() < blue_columns.min()  # the first entry left of the second
    row_tops = [int(red_rows[0])] + [int(r) for r, prev in zip(red_rows[1:], red_rows[:-1]) if r != prev + 1]
    assert len(row_tops) == 3
    for index, top in enumerate(row_tops):
        expected_input = np.kron(report.grid.inputs[index].permute(1, 2, 0).numpy(), np.ones((scale, scale, 1)))
        expected_target = np.kron(report.grid.targets[index].permute(1, 2, 0).numpy(), np.ones((scale, scale, 1)))
        assert find_tile(picture, expected_input.astype(np.uint8), top, range(0, int(red_columns.min())))
        right = range(int(blue_columns.max()), picture.shape[1] - 16 * scale + 1)
        assert find_tile(picture, expected_target.astype(np.uint8), top, right)
    assert red_rows.min() > 10  # a caption band above the images
    assert "Columns: input | pix2pix [net.gan_loss=lsgan] | ddpm | ground truth." in paths["html"].read_text()


def test_cost_and_steps_tables_and_figures(written):
    _, paths = written
    markdown = paths["markdown"].read_text()
    assert "| pix2pix [net.gan_loss=lsgan] | 60 s | 6.0k | — | — | 2 ms | 54.0M |" in markdown
    assert "| ddpm | ddim | 50 | 500 ms | 20 |" in markdown
    page = paths["html"].read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page
    images = re.findall(r"<img[^>]*>", page)
    assert len(images) == 4 and all('src="data:image/png;base64,' in image and 'alt="' in image for image in images)
    assert page.count("<figcaption>") == 4


def test_cost_json_schema_round_trip_and_errors(tmp_path):
    cost = Cost(train_seconds=12.5, images_seen=400, train_flops=3e12, parameters=1000, train_images_per_s=32.0)
    cost.save(tmp_path / "cost.json")
    assert Cost.load(tmp_path / "cost.json") == cost
    assert json.loads((tmp_path / "cost.json").read_text())["format"] == 1
    (tmp_path / "bad.json").write_text('{"train_secs": 3}')
    with pytest.raises(GenlabError, match="train_secs.*valid: train_seconds"):
        Cost.load(tmp_path / "bad.json")


def train_tiny_run(run: Path, model: str, seed: int) -> None:
    config = build_run_config(
        model,
        "quick",
        {"data.task": "toy-paired", "data.image_size": 16, "train.steps": 2, "train.batch_size": 2},
        ["train.log_every=1", "train.sample_every=100", "train.checkpoint_every=2", "train.preview_count=2",
         "train.device=cpu", f"seed={seed}"],
    )  # fmt: skip
    train(config, run, progress=False)


def typed_eval(run: Path, step: int) -> EvalResult:
    """The run's eval.json when evaluate writes typed results; else (evaluate mid-refactor) one written by hand."""
    from genlab.evaluate import EvalOptions, evaluate_run

    evaluate_run(run, EvalOptions(features=(), lpips=False, diversity_inputs=0, baselines=True), device="cpu")
    try:
        return EvalResult.load(run / "eval.json")
    except GenlabError:  # the untyped format of the evaluate module before its refactor
        legacy = json.loads((run / "eval.json").read_text())
        psnr = legacy["metrics"]["psnr"]
        result = eval_result(
            "l1-unet", str(run),
            [Score("psnr", float(psnr["value"]), count=6, unit="dB", per_item=per_item(float(psnr["value"]), 1.0, 6)),
             skipped("ms_ssim", "needs images of at least 176 px")],
            step=step,
        )  # fmt: skip
        result.save(run / "eval.json")
        return result


def test_report_from_runs_on_tiny_trained_runs(toy_task, l1_unet, tmp_path):
    runs = [tmp_path / "s0", tmp_path / "s1"]
    for seed, run in enumerate(runs):
        train_tiny_run(run, l1_unet, seed)
        typed_eval(run, 2)
    (runs[0] / "eval").mkdir(exist_ok=True)  # evaluate may already keep its test result there
    for step in (1, 2):  # validation scores at two checkpoints, as the benchmark's hook writes them
        checkpoint = EvalResult.load(runs[0] / "eval.json")
        checkpoint.split, checkpoint.step = "val", step
        checkpoint.save(runs[0] / "eval" / f"val-step{step:07d}.json")
    sampled = EvalResult.load(runs[0] / "eval.json")
    sampled.sampler, sampled.extra = {"sampler": "ddim", "steps": 10}, {"seconds_per_image": 0.25}
    sampled.save(runs[0] / "eval" / "steps-ddim0010.json")
    Cost(train_flops=1e9).save(runs[0] / "cost.json")
    paths = report_from_runs(runs, tmp_path / "report", device="cpu", grid_count=4)
    document = json.loads(paths["json"].read_text())
    (entry,) = document["entries"]  # the two runs differ only by seed: one entry of two seeds
    assert entry["name"] == "l1-unet" and entry["seeds"] == 2 and entry["run_dirs"] == [str(r) for r in runs]
    assert entry["cost"]["train_flops"] == 1e9 and entry["cost"]["images_seen"] == 4
    assert entry["cost"]["parameters"] > 0 and entry["cost"]["seconds_per_image"] > 0
    assert [(point["split"], point["step"]) for point in entry["metric_vs_step"]] == [("val", 1), ("val", 2)]
    assert [(row["sampler"], row["steps"], row["seconds_per_image"]) for row in entry["steps_quality"]] == [
        ("ddim", 10, 0.25)
    ]
    assert "psnr" in entry["scores"] and document["task"] == "toy-paired"
    assert set(paths) == {"html", "grid", "curves", "metric_vs_step", "steps_quality", "markdown", "json"}
    picture = Image.open(paths["grid"])
    assert picture.width > 3 * 128 and picture.height > 4 * 128  # input | l1-unet | ground truth, 4 rows
    assert "Columns: input | l1-unet | ground truth." in paths["html"].read_text()
    with pytest.raises(GenlabError, match="2 names for 1 runs"):
        report_from_runs(runs[:1], tmp_path / "again", names=["a", "b"], device="cpu")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROKEN_IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.broken = images.filter((image) => !image.complete || image.naturalWidth === 0).length;
});
</script></body>"""


def chromium(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; scripts/test.sh does)")
def test_report_renders_in_a_headless_browser(written, tmp_path):
    _, paths = written
    probe = tmp_path / "probe.html"  # a copy with a script that counts images that failed to decode
    probe.write_text(paths["html"].read_text().replace("</body>", BROKEN_IMAGE_PROBE))
    dom = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()).stdout
    assert re.search(r'data-images="4"', dom), dom[:500]
    assert re.search(r'data-broken="0"', dom), "an image of the report did not render"
    screenshot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1280,2000", paths["html"].as_uri())
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01  # text, tables and figures, not a blank page
    assert not math.isclose(pixels[:, :640].mean(), 255.0)
