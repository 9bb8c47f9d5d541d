import json

import pytest
import torch

from genlab.config import DataConfig, build_run_config
from genlab.data.tasks import get_task
from genlab.evaluate import EvalOptions, evaluate_run, mean_target_baseline, nearest_neighbour_baseline
from genlab.judges import domain
from genlab.train.trainer import train
from genlab.utils import uint8_to_signed


@pytest.fixture
def tiny_domain_recipes(monkeypatch):
    """Domain networks trained for a handful of steps: these tests check the plumbing, not the accuracy."""
    recipes = {name: domain.DomainRecipe(r.kind, r.data_task, r.image_field, 8, 8, r.learning_rate, 8)
               for name, r in domain.RECIPES.items()}
    monkeypatch.setattr(domain, "RECIPES", recipes)


@pytest.fixture
def facades_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "p2p"
    config = build_run_config("pix2pix", "quick", {"data.image_size": 16, "train.steps": 3},
                              ["net.width=4", "train.preview_count=2"])
    train(config, run, progress=False)
    return run


def test_baselines_are_what_they_claim():
    task = get_task(DataConfig(task="facades-synth", image_size=16))
    train_split = task.split("train")
    sources = uint8_to_signed(train_split.fields["source"][:5])
    nearest = nearest_neighbour_baseline(task)(sources)  # a training source is its own nearest neighbour
    assert torch.equal(nearest, uint8_to_signed(train_split.fields["target"][:5]))
    mean = mean_target_baseline(task)(sources)
    assert torch.allclose(mean[3], uint8_to_signed(train_split.fields["target"]).mean(0))


def test_translation_run_gets_the_full_suite(facades_run, tiny_domain_recipes):
    options = EvalOptions(features=("domain", "inception"), baselines=True, limit=12, diversity_inputs=4)
    results = evaluate_run(facades_run, options, device="cpu")
    saved = json.loads((facades_run / "eval.json").read_text())
    assert saved == json.loads(json.dumps(results))
    metrics = results["metrics"]
    assert results["count"] == 12 and metrics["psnr"]["count"] == 12
    assert 0 < metrics["ssim"]["value"] < 1 and metrics["psnr"]["value"] > 0
    assert "176 px" in metrics["ms_ssim"]["skipped"]  # 16 px images are too small for 5 scales
    assert "skipped" in metrics["lpips"] and "skipped" in metrics["inception"]  # offline: weights absent
    assert "GENLAB_INCEPTION_WEIGHTS" in metrics["inception"]["skipped"]
    fid_entry = metrics["domain"]["fid"]
    assert fid_entry["count"] == 12 and fid_entry["features"]["network"] == "domain:facades-synth"
    assert "test_accuracy" in fid_entry["features"]
    assert metrics["domain"]["kid"]["subset_size"] == 12
    assert set(metrics["fcn"]) >= {"pixel_accuracy", "class_accuracy", "mean_iou", "segmenter"}
    assert 0 <= metrics["fcn_real"]["pixel_accuracy"] <= 1
    assert metrics["diversity"]["samples_per_input"] == 3 and metrics["diversity"]["value"] >= 0
    assert set(results["baselines"]) == {"mean_train_target", "nearest_neighbour"}


def test_pixel_only_evaluation_is_reproducible(facades_run):
    options = EvalOptions(features=(), lpips=False, diversity_inputs=0, limit=6)
    first = evaluate_run(facades_run, options, device="cpu", write=False)
    again = evaluate_run(facades_run, options, device="cpu", write=False)
    assert first["metrics"] == again["metrics"]
    assert set(first["metrics"]) == {"psnr", "ssim", "ms_ssim"}


def test_generation_run_gets_class_accuracy(tmp_path, tiny_domain_recipes):
    from genlab.data.fashion_mnist import available

    if not available(DataConfig(task="fashion-mnist")):
        pytest.skip("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
    config = build_run_config(
        "ddpm", "quick", {"data.image_size": 16, "train.steps": 2, "train.batch_size": 4},
        ["net.base_width=8", "net.channel_mults=[1,2]", "net.timesteps=10", "net.sample_steps=2",
         "train.preview_count=2", "data.train_limit=64"],
    )
    train(config, tmp_path / "ddpm", progress=False)
    results = evaluate_run(tmp_path / "ddpm", EvalOptions(features=("domain",), count=20, limit=40), device="cpu")
    assert results["conditional"] is True and results["count"] == 20
    accuracy = results["metrics"]["class_accuracy"]
    assert 0 <= accuracy["value"] <= 1 and accuracy["chance"] == 0.1
    assert accuracy["classifier"]["network"] == "domain:fashion-mnist"
    assert results["metrics"]["domain"]["is"]["value"] >= 1
