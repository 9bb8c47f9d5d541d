"""The probe scripts under scripts/probes run on a tiny trained run, and their baselines score as the run does."""

import importlib.util
from pathlib import Path

import pytest
import torch

from genlab.evaluate import EvalOptions, evaluate_run

PROBES = Path(__file__).resolve().parents[1] / "scripts" / "probes"


def probe(name: str):
    spec = importlib.util.spec_from_file_location(name, PROBES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory, tiny_cddim):
    """A tiny cddim run of 4 steps whose trained guide is the average after update 2, the one the probes take
    (the checkpoint half-way), keeping every checkpoint."""
    return tiny_cddim(tmp_path_factory.mktemp("runs") / "cddim", "net.sample_steps=5", "net.autoguide_at=0.25")


def own_psnr(run, autoguidance):
    options = EvalOptions(features=(), lpips=False, diversity_inputs=0, limit=4, batch_size=4,
                          autoguidance=autoguidance, progress=False)
    return evaluate_run(run, options, write=False).score("psnr").value


def test_spacings():
    spacing = probe("cddim_step_spacing")
    quadratic = spacing.power_spacing(2)(1000, 50)
    assert len(quadratic) == 50 and quadratic[0] == 999 and quadratic[-1] == 0 and quadratic == sorted(quadratic)[::-1]
    assert quadratic[-5:] == [10, 6, 4, 2, 0]  # dense at low noise: 999 (k / 50)^2
    sigmas = [t + 1.0 for t in range(10)]  # a made-up schedule, linear in sigma: rho 1 then takes every level
    assert spacing.edm_spacing(sigmas, 1)(10, 10) == list(range(9, -1, -1))
    assert spacing.edm_spacing(sigmas, 7)(10, 4)[-1] == 0 and spacing.edm_spacing(sigmas, 7)(10, 4)[0] == 9


def test_step_spacing_probe_scores_the_trailing_spacing_as_the_run(guided_run):
    rows = probe("cddim_step_spacing").main([str(guided_run), "--limit", "4"])
    assert [row["spacing"] for row in rows][:2] == ["trailing (genlab's)", "power 2"]
    assert rows[0]["psnr"] == own_psnr(guided_run, 2.0)  # the run's own sampler, its trained guide (the same)
    assert len({row["psnr"] for row in rows}) > 1


def test_autoguidance_interval_probe_covers_every_level_or_none(guided_run):
    rows = probe("cddim_autoguidance_interval").main([str(guided_run), "--limit", "4", "--settings",
                                                       "0,1e9,2", "1e8,1e9,2"])
    assert rows[0]["psnr"] == own_psnr(guided_run, 2.0)  # an interval holding every level: guided throughout
    assert rows[1]["psnr"] == own_psnr(guided_run, 1.0)  # one holding none: no autoguidance


def test_value_prior_probe_reads_a_run_trained_without_it_as_one_trained_with_it(tmp_path, guided_run, tiny_cddim,
                                                                                 capsys):
    """The probe's first row scores as the run does; its second as the same weights trained with net.value_prior
    (whose checkpoints hold the statistics the probe measures)."""
    rows = probe("diffusion_value_prior").main([str(guided_run), "--limit", "4", "--black"])
    shares = [line for line in capsys.readouterr().out.splitlines() if "at level 0" in line]
    assert [line.split(":")[0] for line in shares] == ["value prior False", "value prior True"]
    from genlab.api import load_run

    targets = load_run(guided_run).task().split("test").fields["target"][:4]
    assert all(line.endswith(f"(references: {float((targets == 0).float().mean()):.3f})") for line in shares)
    assert rows[0]["decoder"] == "as sampled" and rows[0]["psnr"] == own_psnr(guided_run, 2.0)
    assert rows[1]["decoder"].startswith("value prior, error std ")
    with_prior = tiny_cddim(tmp_path / "with", "net.sample_steps=5", "net.autoguide_at=0.25", "net.value_prior=true")
    assert own_psnr(with_prior, 2.0) == rows[1]["psnr"]  # the same seed trains the same weights


def test_a_run_with_the_value_prior_saves_and_loads_its_statistics(tmp_path, tiny_cddim):
    from genlab.api import load_run
    from genlab.checkpoint import load_checkpoint

    run = tiny_cddim(tmp_path / "vp", "net.value_prior=true")
    document = load_checkpoint(run / "checkpoints" / "last.pt")
    weights = document["state"]["networks"]
    loaded = load_run(run)
    task = loaded.task()
    images = min(1024, len(task.split("train")))
    histogram = weights["value_histogram"]  # (3 channels, 256 levels): every pixel once per channel
    assert histogram.shape == (3, 256) and histogram.sum(dim=1).eq(images * 16 * 16).all()
    assert torch.equal(loaded.model.value_histogram, weights["value_histogram"].to(loaded.model.value_histogram))
    assert loaded.model.value_error_std.item() > 0.5
    # a result says its outputs were decoded, and with which error std
    record = loaded.model.sampler_record({})
    assert record["value_prior_error_std"] == round(loaded.model.value_error_std.item(), 4)
