"""The benchmark runner: model specs, equal budgets, what each entry records, and resuming an interrupted run."""

import json

import pytest

from genlab.bench import benchmark
from genlab.bench.benchmark import BenchmarkConfig, ModelSpec, entry_config, parse_models, run_benchmark
from genlab.bench.report import Cost
from genlab.results import EvalResult
from genlab.utils import GenlabError


def test_model_specs_parse_with_overrides_and_readable_names():
    specs = parse_models("pix2pix[net.gan_loss=vanilla,net.width=8],pix2pix[net.gan_loss=lsgan], cddim")
    assert [spec.model for spec in specs] == ["pix2pix", "pix2pix", "cddim"]
    assert specs[0].overrides == ("net.gan_loss=vanilla", "net.width=8")
    assert specs[0].name == "pix2pix [gan_loss=vanilla, width=8]" and specs[2].name == "cddim"
    assert specs[1].slug == "pix2pix-gan_loss-lsgan"
    nested = parse_models("cddim[net.channel_mults=[1,2],net.base_width=8],ldm")
    assert nested[0].overrides == ("net.channel_mults=[1,2]", "net.base_width=8") and nested[1].model == "ldm"
    with pytest.raises(GenlabError, match="listed twice"):
        parse_models("cddim,cddim")
    with pytest.raises(GenlabError, match="is not key=value"):
        ModelSpec.parse("pix2pix[width]")


def test_every_entry_gets_the_same_budget():
    bench = BenchmarkConfig(models=("pix2pix", "cddim"), budget_images=640, size=32)
    configs = [entry_config(spec, 0, bench) for spec in bench.specs()]
    assert {config.train.images for config in configs} == {640}
    assert all(config.train.steps is None and config.train.minutes is None for config in configs)
    assert {config.data.image_size for config in configs} == {32}
    mixed = BenchmarkConfig(models=("pix2pix", "cgan"))  # their quick presets are 64 and 32 px
    assert {entry_config(spec, 0, mixed).data.image_size for spec in mixed.specs()} == {64}
    with pytest.raises(GenlabError, match="with --size"):
        entry_config(ModelSpec.parse("cgan[data.image_size=32]"), 0, mixed)
    timed = BenchmarkConfig(models=("pix2pix",), budget_minutes=2.0)
    assert entry_config(timed.specs()[0], 1, timed).train.minutes == 2.0
    assert entry_config(timed.specs()[0], 1, timed).seed == 1


def test_default_entries_are_the_families_that_fit_the_task():
    names = [spec.model for spec in BenchmarkConfig().specs()]
    assert names == ["pix2pix", "cyclegan", "cvae", "cgan", "cddim", "ldm"]


def test_one_budget_with_a_default():
    assert BenchmarkConfig().budget_minutes == benchmark.DEFAULT_BUDGET_MINUTES
    with pytest.raises(GenlabError, match="one budget"):
        BenchmarkConfig(budget_minutes=1.0, budget_images=10)


def tiny(tmp_path, **changes) -> BenchmarkConfig:
    values = dict(
        task="facades-synth",
        # batch 4: at 16 px the quick preset trains batches of 32, more than the 16-image budget
        models=("pix2pix[net.width=4,train.batch_size=4]", "cvae"),
        budget_minutes=None,
        budget_images=16,
        size=16,
        eval_limit=6,
        validation_limit=4,
        checkpoints=2,
        features=(),
    )
    values.update(changes)
    return BenchmarkConfig(**values)


def test_a_benchmark_records_costs_and_scores_and_resumes_without_retraining(tmp_path, monkeypatch):
    bench = tiny(tmp_path)
    calls = []
    original = benchmark.run_entry

    def interrupted(entry, config, with_baselines, progress=True):
        calls.append(entry.spec.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the benchmark during its second entry
        return original(entry, config, with_baselines, progress)

    monkeypatch.setattr(benchmark, "run_entry", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(bench, tmp_path / "bench", progress=False)
    first = tmp_path / "bench" / "runs" / "pix2pix-width-4-batch_size-4-s0"
    checkpoint_time = (first / "checkpoints" / "last.pt").stat().st_mtime_ns
    cost = Cost.load(first / "cost.json")
    assert cost.images_seen == 16 and cost.train_flops > 0 and cost.parameters > 0

    monkeypatch.setattr(benchmark, "run_entry", original)
    calls.clear()
    paths = run_benchmark(bench, tmp_path / "bench", progress=False)
    assert (first / "checkpoints" / "last.pt").stat().st_mtime_ns == checkpoint_time  # not retrained
    second = tmp_path / "bench" / "runs" / "cvae-s0"
    assert (second / "cost.json").is_file()
    final = EvalResult.load(second / "eval.json")
    assert final.split == "test" and final.count == 6 and final.score("ssim") is not None
    assert list((first / "eval").glob("val-step*.json"))  # validation points for the metric-vs-step curve
    assert EvalResult.load(first / "eval.json").baselines  # the first entry carries the baselines
    document = json.loads(paths["json"].read_text())
    assert "pix2pix [width=4, train.batch_size=4]" in json.dumps(document) and "cvae" in json.dumps(document)
    assert paths["html"].is_file() and paths["markdown"].is_file()


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    bench = tiny(tmp_path, models=("pix2pix[net.width=4]",))
    run_benchmark(bench, tmp_path / "bench", progress=False)
    with pytest.raises(GenlabError, match="budget_images differ"):
        run_benchmark(tiny(tmp_path, models=("pix2pix[net.width=4]",), budget_images=32), tmp_path / "bench")


def test_the_benchmark_command_prints_its_results_table(tmp_path, capsys):
    from genlab.cli import main

    code = main(["benchmark", "--models", "pix2pix[net.width=4]", "--size", "16", "--budget-images", "8",
                 "--eval-limit", "4", "--features", "none", "--out", str(tmp_path / "bench"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "## Results" in out and "| pix2pix [width=4] |" in out and "mean training target" in out
    assert (tmp_path / "bench" / "report.html").is_file()
    code = main(["benchmark", "--models", "pix2pix[width]", "--out", str(tmp_path / "other")])
    assert code == 2 and "is not key=value" in capsys.readouterr().err
