"""The presets' headline claims, end to end. Slow (minutes each on 2 CPU cores): run with `-m slow`.

Each trains a family with its `quick` preset, as the README's commands do, and checks the claim the README
makes of it against genlab's own domain networks or the baselines.
"""

from pathlib import Path

import pytest

from genlab.evaluate import EvalOptions, evaluate_run
from genlab.runs import build_run_config
from genlab.train.trainer import resume_config, train

TESTS = Path(__file__).resolve().parent

PIXEL_ONLY = EvalOptions(features=(), lpips=False, diversity_inputs=0, baselines=True)
# edges2fashion as the README scores it: the first 1000 test pairs, the domain classifier, the baselines
FIRST_1000_PAIRS = EvalOptions(features=("domain",), limit=1000, lpips=False, baselines=True)


def _baseline(result, name: str, metric: str) -> float:
    return next(score.value for score in result.baselines[name] if score.metric == metric)


def _trained(tmp_path, model: str, task: str, **values):
    config = build_run_config(model, "quick", {"data.task": task, **values})
    train(config, tmp_path / model, progress=False)
    return tmp_path / model


@pytest.mark.slow
def test_quick_pix2pix_beats_the_baselines_on_facades_synth(tmp_path):
    """PSNR, SSIM and the FCN-score beat both baselines. PSNR against the mean training photo is the narrow one
    (a facade's colours are not in its label map): the README's 3-seed table at 6000 images has the preset,
    translating with the generator's average, at 14.24 +- 0.02 dB against the mean photo's 13.58 (the
    last-weights preset before it scored 13.44)."""
    options = EvalOptions(features=("domain",), lpips=False, diversity_inputs=0, baselines=True)
    result = evaluate_run(_trained(tmp_path, "pix2pix", "facades-synth"), options, device="cpu")
    for baseline in ("mean_train_target", "nearest_neighbour"):
        for metric in ("psnr", "ssim", "fcn.mean_iou"):
            assert result.score(metric).value > _baseline(result, baseline, metric), (baseline, metric)
    assert result.score("domain.fid").value < _baseline(result, "mean_train_target", "domain.fid")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cvae", "cgan", "cyclegan"])
def test_quick_translators_beat_the_mean_photo_on_ssim(tmp_path, model):
    result = evaluate_run(_trained(tmp_path, model, "facades-synth"), PIXEL_ONLY, device="cpu")
    assert result.score("ssim").value > _baseline(result, "mean_train_target", "ssim")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cvae", "cgan"])
def test_quick_class_conditional_samples_are_read_as_their_class(tmp_path, model):
    """The README's seeds 0-2: cvae 87.5/85.5/85.8% (without the crop jitter), cgan 85.1/85.2/87.3%; chance 10%,
    real test garments about 91%."""
    run = _trained(tmp_path, model, "fashion-mnist")
    result = evaluate_run(run, EvalOptions(features=("domain",), count=1000), device="cpu")
    assert result.score("class_accuracy").value >= 0.83


@pytest.mark.slow
def test_quick_cyclegan_looks_more_real_than_the_mean_garment(tmp_path):
    run = _trained(tmp_path, "cyclegan", "edges2fashion-unpaired", **{"data.image_size": 32})
    result = evaluate_run(run, EvalOptions(features=("domain",), baselines=True, diversity_inputs=0), device="cpu")
    assert result.score("domain.fid").value < _baseline(result, "mean_train_target", "domain.fid")


@pytest.mark.slow
def test_quick_ddpm_at_the_15_minute_budget_draws_the_requested_class(tmp_path):
    """Issue 10's DDPM targets, at the budget in images that 15 minutes trains on 2 CPU cores (6000 steps of 32,
    10-14 min measured): 85% of DDIM-50 samples read as their class at the preset's guidance (2 at noise levels
    sigma <= 2.9, eta 1, autoguidance 3 with the network of a quarter of the way through training), every class
    above 60%, and a domain FID of at most 5 times the real-vs-real floor, 1.84 (training seeds 0-2 without the
    crop jitter: 93.8/94.3/96.1%, worst class 69/72/81%, domain FID 1.13/1.06/1.16; with the jitter the FID
    could not go below 5, the jittered training set's own distance from the test set)."""
    run = _trained(tmp_path, "ddpm", "fashion-mnist", **{"train.steps": 6000})
    result = evaluate_run(run, EvalOptions(features=("domain",), count=1000), device="cpu")
    assert result.score("class_accuracy").value >= 0.85  # chance 10%, real test garments about 91%
    assert result.score("worst_class_accuracy").value > 0.60
    assert result.score("domain.fid").value <= 1.84  # issue 10: 5 x the real-vs-real floor 0.37


@pytest.mark.slow
def test_quick_pix2pix_on_edges2fashion_beats_the_nearest_garment(tmp_path):
    """Issue 10's Pix2Pix gains at a third of the budget: the first recorded quick preset scored 17.65 dB and SSIM
    0.589 at 15 minutes, and the issue asks for +1.6 dB and +0.075. 144,000 training images at the preset's batch
    32 (4500 steps, what 5 minutes trains here): the README's 3-seed benchmark at 5 minutes (141-152k images, the
    first 1000 test pairs) has PSNR 20.07-20.16, SSIM 0.709-0.711, domain FID 0.51-0.61 and class accuracy
    83.8-84.2% against the nearest training garment's 16.49, 0.574, 0.52 and 77.1%; batch 4 at 5 minutes
    scored 19.52-19.61 dB, SSIM 0.686-0.687, domain FID 0.87-0.96 (README, "Pix2Pix: the batch size at the
    budget")."""
    run = _trained(tmp_path, "pix2pix", "edges2fashion", **{"train.steps": 4500})
    result = evaluate_run(run, FIRST_1000_PAIRS, device="cpu")
    for metric in ("psnr", "ssim", "class_accuracy"):
        assert result.score(metric).value > _baseline(result, "nearest_neighbour", metric)
    assert result.score("psnr").value >= 17.65 + 1.6
    assert result.score("ssim").value >= 0.589 + 0.075
    assert result.score("domain.fid").value <= 0.8


@pytest.mark.slow
def test_quick_cddim_on_edges2fashion_translates_close_to_the_garments(tmp_path):
    """Issue 10's cddim targets at a reduced budget: 40,000 training images at the preset's batch 32 (1250 steps,
    about 2 minutes). Measured on seed 0 (2026-12-07, lr 1e-3, the guide half-way): PSNR 18.44, SSIM 0.627,
    domain FID 2.58, class accuracy 80.8% against the nearest training garment's 16.49, 0.574, 0.52 and 77.1%
    (lr 1.4e-3 with the guide at a quarter, 2026-12-05: 17.95, 0.625, 2.77, 81.5%). Passed again at the
    log-normal noise levels and autoguidance 3 (2026-12-07, 7.6 minutes) and at the narrower levels N(0.5, 1.0^2)
    with autoguidance 2 (2026-12-07, twentieth session). With the value prior (twenty-first session, passed in
    7.3 minutes): PSNR 18.38, SSIM 0.663, domain FID 1.34, class accuracy 81.6%. 300k images (about 15 minutes)
    reach SSIM 0.706-0.711 (0.65 asked) and domain FID 0.31-0.32, Pix2Pix's 0.36-0.38 at 15 minutes at its batch
    of 32 (0.39-0.48 at 16, 0.51-0.63 at 4; README, "cddim: the background haze and the value prior" and
    "Pix2Pix: the batch size at the budget")."""
    run = _trained(tmp_path, "cddim", "edges2fashion", **{"train.images": 40_000})
    result = evaluate_run(run, FIRST_1000_PAIRS, device="cpu")
    for metric in ("psnr", "ssim", "class_accuracy"):
        assert result.score(metric).value > _baseline(result, "nearest_neighbour", metric)
    assert result.score("ssim").value >= 0.62
    assert result.score("domain.fid").value <= 2.0


@pytest.mark.slow
def test_quick_pix2pix_on_a_garment_folder_built_outside_genlab_gets_the_garment_settings(tmp_path):
    """Issue 10's independent check, with a stand-in: edges -> garments built by scikit-image's Canny
    (scripts/probes/edges_folder.py), given as a folder with nothing but its size. The folder reads as objects on
    a plain background (no jitter) and 32 px trains in batches of 32. At 5 minutes (3 seeds, README, "Pix2Pix on
    a garment folder built outside genlab") that scored 20.68-20.71 dB and SSIM 0.735-0.737, where a folder's
    previous default (batch 4, the photo jitter) scored 18.66-18.68 dB and 0.650-0.653. Here 48,000 images (1500
    steps of 32, about 1.5 minutes; the test 3.2 minutes with building the folder) scored 19.97 dB and SSIM
    0.708 (seed 0, 2026-12-07), against the nearest training garment's 17.19 dB."""
    import importlib.util

    pytest.importorskip("skimage")
    spec = importlib.util.spec_from_file_location("edges_folder", TESTS.parent / "scripts/probes/edges_folder.py")
    edges_folder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(edges_folder)
    edges_folder.build(tmp_path / "edges-canny")
    run = _trained(tmp_path, "pix2pix", f"folder:{tmp_path / 'edges-canny'}", **{"data.image_size": 32,
                                                                                  "train.steps": 1500})
    config = resume_config(run)
    assert (config.train.batch_size, config.data.load_scale) == (32, 1.0)
    result = evaluate_run(run, EvalOptions(features=(), limit=1000, lpips=False, baselines=True), device="cpu")
    for metric in ("psnr", "ssim"):
        assert result.score(metric).value > _baseline(result, "nearest_neighbour", metric)
    assert result.score("psnr").value >= 19.5 and result.score("ssim").value >= 0.69
