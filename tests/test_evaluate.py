import pytest
import torch

from genlab.config import DataConfig
from genlab.data.tasks import get_task
from genlab.evaluate import EvalOptions, evaluate_run, mean_target_baseline, nearest_neighbour_baseline
from genlab.judges import domain
from genlab.results import EvalResult
from genlab.runs import build_run_config
from genlab.train.trainer import train
from genlab.utils import GenlabError, uint8_to_signed


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
    result = evaluate_run(facades_run, options, device="cpu")
    assert EvalResult.load(facades_run / "eval.json") == result
    assert EvalResult.load(facades_run / "eval" / "test-step0000003.json") == result
    assert result.count == 12 and result.score("psnr").count == 12
    assert 0 < result.score("ssim").value < 1 and result.score("psnr").value > 0
    assert len(result.score("psnr").per_item) == 12  # kept for bootstrap intervals
    assert "176 px" in result.score("ms_ssim").skipped  # 16 px images are too small for 5 scales
    assert result.score("lpips").skipped and "GENLAB_INCEPTION_WEIGHTS" in result.score("inception.fid").skipped
    fid = result.score("domain.fid")
    assert fid.count == 12 and fid.network.name.startswith("domain:facades-synth segmenter")
    assert 0 <= fid.network.held_out_accuracy <= 1 and not fid.higher_is_better
    assert any("feature dimensions" in note for note in fid.notes)  # 12 images < 64 feature dims: said
    assert any("shrunk to 12" in note for note in result.score("domain.kid").notes)
    assert {"fcn.pixel_accuracy", "fcn.class_accuracy", "fcn.mean_iou"} <= set(result.metrics())
    assert result.score("diversity").count == 4 and result.score("diversity").value >= 0
    assert set(result.baselines) == {"mean_train_target", "nearest_neighbour", "real_target"}
    mean_photo = {score.metric for score in result.baselines["mean_train_target"]}
    assert {"psnr", "ssim", "domain.fid", "fcn.mean_iou"} <= mean_photo  # every metric that applies
    assert [score.metric for score in result.baselines["real_target"]][0].startswith("fcn.")


def test_pixel_only_evaluation_is_reproducible(facades_run):
    options = EvalOptions(features=(), lpips=False, diversity_inputs=0, limit=6)
    first = evaluate_run(facades_run, options, device="cpu", write=False)
    again = evaluate_run(facades_run, options, device="cpu", write=False)
    assert first.scores == again.scores
    assert first.metrics() == ["psnr", "ssim", "ms_ssim"]


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
    options = EvalOptions(features=("domain",), count=20, limit=40, steps=3, guidance_scale=3.0)
    result = evaluate_run(tmp_path / "ddpm", options, device="cpu")
    assert result.extra["conditional"] is True and result.count == 20
    # eta 1, guidance 2 and its interval (0, 2.9], autoguidance 3 (the guide was taken at the second step, a
    # quarter of the budget spent) are the quick preset's; steps and guidance were given.
    assert result.sampler == {"sampler": "ddim", "steps": 3, "eta": 1.0, "guidance_scale": 3.0,
                              "guidance_interval": (0.0, 2.9), "autoguidance": 3.0}
    assert (tmp_path / "ddpm" / "eval" / "test-step0000002-ddim3-eta1-g3-gi0-2.9-ag3.json").is_file()
    accuracy = result.score("class_accuracy")
    assert 0 <= accuracy.value <= 1 and accuracy.notes == ("chance 10.0%",)
    assert accuracy.network.name.startswith("domain:fashion-mnist classifier")
    assert result.score("domain.is").value >= 1
    worst = result.score("worst_class_accuracy")
    assert 0 <= worst.value <= accuracy.value and worst.count == 2 and worst.notes[0].startswith("class '")
    other = evaluate_run(tmp_path / "ddpm", EvalOptions(features=(), count=4, steps=2), device="cpu")
    assert (tmp_path / "ddpm" / "eval" / "test-step0000002-ddim2-eta1-g2-gi0-2.9-ag3.json").is_file()  # both kept
    assert other.sampler["steps"] == 2
    interval = evaluate_run(
        tmp_path / "ddpm", EvalOptions(features=(), count=4, steps=2, guidance_interval=(0.3, 5)), device="cpu"
    )
    assert interval.sampler["guidance_interval"] == (0.3, 5.0)
    assert (tmp_path / "ddpm" / "eval" / "test-step0000002-ddim2-eta1-g2-gi0.3-5-ag3.json").is_file()
    with pytest.raises(GenlabError, match="evaluate: guidance_interval: need 0 <= low < high"):
        EvalOptions(guidance_interval=(5, 0.3))


def test_sampler_options_are_refused_for_models_without_a_sampler(facades_run):
    with pytest.raises(GenlabError, match="steps: model 'pix2pix' has no diffusion sampler"):
        evaluate_run(facades_run, EvalOptions(features=(), steps=10), device="cpu", write=False)
    with pytest.raises(GenlabError, match="guidance_interval: model 'pix2pix' has no diffusion sampler"):
        evaluate_run(facades_run, EvalOptions(features=(), guidance_interval=(0.3, 5)), device="cpu", write=False)
    with pytest.raises(GenlabError, match="temperature: model 'pix2pix' draws no latent code"):
        evaluate_run(facades_run, EvalOptions(features=(), temperature=0.5), device="cpu", write=False)


def test_a_vae_is_evaluated_at_the_temperature_asked_and_says_so(tmp_path):
    config = build_run_config("cvae", "quick", {"data.image_size": 16, "train.steps": 2},
                              ["net.width=4", "net.latent_dim=4", "train.preview_count=2", "data.train_limit=32",
                               "data.task=facades-synth"])
    train(config, tmp_path / "cvae", progress=False)
    options = EvalOptions(features=(), limit=6, diversity_inputs=3, temperature=0.0)
    cold = evaluate_run(tmp_path / "cvae", options, device="cpu")
    assert cold.sampler == {"temperature": 0.0}
    assert (tmp_path / "cvae" / "eval" / "test-step0000002-t0.json").is_file()
    # z = 0 for every draw: the translations no longer vary, which the diversity score sees
    assert cold.score("diversity").value == pytest.approx(0.0, abs=1e-6)
    warm = evaluate_run(tmp_path / "cvae", EvalOptions(features=(), limit=6, diversity_inputs=3), device="cpu")
    assert warm.sampler == {} and warm.score("diversity").value > 0
    with pytest.raises(GenlabError, match="temperature must be 0 or more"):
        EvalOptions(temperature=-1.0)


def test_translation_progress_bar_names_the_direction(monkeypatch):
    import genlab.evaluate as evaluate

    seen = []

    def fake_tqdm(iterable, desc=None, **kwargs):
        seen.append(desc)
        return iterable

    monkeypatch.setattr(evaluate, "tqdm", fake_tqdm)
    sources = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    outputs = evaluate.translate_split(lambda batch, start: batch, sources, 2, desc="translating BtoA")
    assert seen == ["translating BtoA"] and outputs.shape == sources.shape
    evaluate.translate_split(lambda batch, start: batch, sources, 2)
    assert seen[-1] == "translating"


def test_each_feature_network_is_loaded_once_per_evaluation(facades_run, tiny_domain_recipes, monkeypatch):
    import genlab.evaluate as evaluate

    calls = []
    original = evaluate.feature_network

    def counting(space, task, options):
        calls.append(space)
        return original(space, task, options)

    monkeypatch.setattr(evaluate, "feature_network", counting)
    options = EvalOptions(features=("domain", "inception"), baselines=True, limit=6, diversity_inputs=0, lpips=False)
    result = evaluate_run(facades_run, options, device="cpu", write=False)
    assert sorted(calls) == ["domain", "inception"]  # the model and all three baselines share them
    assert result.baselines["nearest_neighbour"][0].metric == "psnr"


def test_labelled_pairs_get_the_class_accuracy_of_their_translations(tmp_path, tiny_domain_recipes):
    config = build_run_config("pix2pix", "quick", {"data.task": "edges2fashion", "data.image_size": 16,
                                                    "train.steps": 2}, ["net.width=4", "train.preview_count=2"])
    train(config, tmp_path / "p2p", progress=False)
    options = EvalOptions(features=("domain",), limit=40, baselines=True, diversity_inputs=0, lpips=False)
    result = evaluate_run(tmp_path / "p2p", options, device="cpu")
    accuracy = result.score("class_accuracy")
    assert accuracy.count == 40 and 0 <= accuracy.value <= 1 and accuracy.notes == ("chance 10.0%",)
    # the real garments' accuracy is the ceiling, computed with the same classifier on the same 40 labels
    task = get_task(DataConfig(task="edges2fashion", image_size=16))
    test = task.split("test")
    real = result.baselines["real_target"][0]
    from genlab.evaluate import Judges
    from genlab.metrics import suite

    extractor, _ = Judges(task, options).network("domain")
    predicted = suite.features_of(extractor, test.fields["target"][:40])["probs"].argmax(dim=1)
    assert real.metric == "class_accuracy" and real.value == pytest.approx(
        float((predicted == test.fields["label"][:40]).double().mean())
    )
    assert [s.metric for s in result.baselines["mean_train_target"][-2:]] == ["class_accuracy", "worst_class_accuracy"]
    worst = result.baselines["real_target"][1]
    per_class = [float((predicted[:40][test.fields["label"][:40] == c] == c).double().mean())
                 for c in test.fields["label"][:40].unique()]
    assert worst.metric == "worst_class_accuracy" and worst.value == pytest.approx(min(per_class))
    assert worst.value <= real.value
