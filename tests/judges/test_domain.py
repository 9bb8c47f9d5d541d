import dataclasses

import pytest
import torch

from genlab.config import DataConfig
from genlab.judges import domain
from genlab.utils import GenlabError


@pytest.fixture
def short_recipes(monkeypatch):
    recipes = {name: domain.DomainRecipe(r.kind, r.data_task, r.image_field, 5, 4, r.learning_rate, 4)
               for name, r in domain.RECIPES.items()}
    monkeypatch.setattr(domain, "RECIPES", recipes)


def test_segmenter_is_trained_once_then_loaded_from_the_cache(short_recipes, tmp_path, monkeypatch):
    first = domain.domain_network("facades-synth", 16, cache=tmp_path)
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1 and "facades-synth-segmenter-16px-seed0" in cached[0].name

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(domain, "_train", no_training)
    again = domain.domain_network("facades-synth", 16, cache=tmp_path)
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.equal(first(images)["features"], again(images)["features"])
    assert again.test_scores == first.test_scores
    output = again(images)
    assert output["features"].shape == (3, again.dims) and output["probs"].shape == (3, 12)
    assert torch.allclose(output["probs"].sum(dim=1), torch.ones(3, dtype=torch.float64))
    assert again.segment(images).shape == (3, 16, 16)
    assert again.provenance()["network"] == "domain:facades-synth"


def test_a_judge_trains_under_no_grad_as_it_does_outside(short_recipes, tmp_path):
    # the sweeps score with gradients off; the first score of a task trains its judge there
    with torch.no_grad():
        quiet = domain.domain_network("facades-synth", 16, cache=tmp_path / "no-grad")
    usual = domain.domain_network("facades-synth", 16, cache=tmp_path / "grad")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(quiet(images)["features"], usual(images)["features"])


def test_a_cached_judge_of_another_recipe_is_retrained_not_loaded(short_recipes, tmp_path, monkeypatch):
    narrow = domain.domain_network("facades-synth", 16, cache=tmp_path)  # width 4, cached under the task's name
    recipes = {name: dataclasses.replace(r, width=8) for name, r in domain.RECIPES.items()}
    monkeypatch.setattr(domain, "RECIPES", recipes)
    wider = domain.domain_network("facades-synth", 16, cache=tmp_path)  # loading the width-4 file would fail
    assert wider.dims != narrow.dims
    monkeypatch.setattr(domain, "_train", lambda *args: (_ for _ in ()).throw(AssertionError("trained again")))
    assert domain.domain_network("facades-synth", 16, cache=tmp_path).dims == wider.dims  # now cached: loaded


def test_unknown_task_lists_the_available_ones():
    with pytest.raises(GenlabError, match="available for: fashion-mnist"):
        domain.domain_network("facades", 64)


def test_classifier_is_trained_on_the_training_split_only(short_recipes, tmp_path, monkeypatch):
    from genlab.data.fashion_mnist import available

    if not available(DataConfig(task="fashion-mnist")):
        pytest.skip("Fashion-MNIST is not installed")
    from genlab.data import tasks

    seen_splits = []
    original = tasks.Task.split

    def recording_split(self, name):
        seen_splits.append(name)
        return original(self, name)

    monkeypatch.setattr(tasks.Task, "split", recording_split)
    monkeypatch.setattr(domain, "_test_scores", lambda *args: {"accuracy": 0.0})
    domain.domain_network("fashion-mnist", 16, cache=tmp_path)
    assert seen_splits and set(seen_splits) == {"train"}


@pytest.mark.slow
def test_facades_synth_segmenter_reaches_90_percent_pixel_accuracy(tmp_path):
    network = domain.domain_network("facades-synth", 64, cache=tmp_path, progress=False)
    assert network.test_scores["pixel_accuracy"] >= 0.90


@pytest.mark.slow
def test_fashion_mnist_classifier_reaches_88_percent(tmp_path):
    from genlab.data.fashion_mnist import available

    if not available(DataConfig(task="fashion-mnist")):
        pytest.skip("Fashion-MNIST is not installed")
    network = domain.domain_network("fashion-mnist", 32, cache=tmp_path, progress=False)
    assert network.test_scores["accuracy"] >= 0.88


def test_shipped_weights_are_used_without_training(tmp_path, monkeypatch):
    import json

    def no_training(*args, **kwargs):
        raise AssertionError("trained instead of using the shipped weights")

    monkeypatch.setattr(domain, "_train", no_training)
    network = domain.domain_network("facades-synth", 64, cache=tmp_path, progress=False)
    index = json.loads((domain.SHIPPED_DIR / domain.SHIPPED_INDEX).read_text())
    assert network.test_scores == index["facades-synth-segmenter-64px-seed0-v1"]["test_scores"]
    assert network.test_accuracy > 0.9 and not list(tmp_path.iterdir())  # nothing written to the cache


def test_damaged_shipped_weights_are_refused(tmp_path, monkeypatch):
    import shutil

    shipped = tmp_path / "weights"
    shutil.copytree(domain.SHIPPED_DIR, shipped)
    path = shipped / "facades-synth-segmenter-64px-seed0-v1.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    monkeypatch.setattr(domain, "SHIPPED_DIR", shipped)
    with pytest.raises(GenlabError, match="damaged"):
        domain.domain_network("facades-synth", 64, cache=tmp_path / "cache", progress=False)


@pytest.mark.slow
def test_shipped_weights_reproduce_from_their_recipe(tmp_path, monkeypatch):
    """The shipped segmenter is what its recipe and seed train here: the same domain FID on every machine."""
    shipped = torch.load(domain.SHIPPED_DIR / "facades-synth-segmenter-64px-seed0-v1.pt", weights_only=True)
    monkeypatch.setattr(domain, "SHIPPED_DIR", tmp_path / "none")
    retrained = domain.domain_network("facades-synth", 64, cache=tmp_path, progress=False)
    assert retrained.test_scores == pytest.approx(shipped["test_scores"], abs=5e-3)
