"""`genlab export`: inference weights as safetensors plus config.json; `genlab.load(DIR)` gives the same model."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

import genlab
from genlab import checkpoint as ckpt
from genlab.cli import main
from genlab.data.tasks import TaskSpec
from genlab.export import export_run, inference_weights
from genlab.models import get_model_class
from genlab.runs import build_run_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    code = main(["train", "pix2pix", "--task", "facades-synth", "--size", "16", "--steps", "2", "--batch-size", "2",
                 "--out", str(run), "--set", "net.width=4", "--quiet"])
    assert code == 0
    return run


def test_export_then_load_gives_identical_outputs(trained_run, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(trained_run), "--out", str(out)]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    document = json.loads((out / "config.json").read_text())
    assert document["config"]["model"] == "pix2pix" and document["spec"]["name"] == "facades-synth"
    original, exported = genlab.load(trained_run, device="cpu"), genlab.load(out, device="cpu")
    source = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(original.translate_batch(source), exported.translate_batch(source))
    tensors = load_file(str(out / "model.safetensors"))
    assert set(tensors) <= set(original.state_dict())  # networks only: no optimiser moments
    last = trained_run / "checkpoints" / "last.pt"
    assert (out / "model.safetensors").stat().st_size < last.stat().st_size / 2


def test_ema_families_export_the_average(tmp_path):
    spec = TaskSpec("toy-labelled", "labelled", 16, 1, 1)
    config = build_run_config("ddpm", "quick", {}, ["net.timesteps=10"])
    model = get_model_class("ddpm").build(config.net, spec)
    with torch.no_grad():
        for parameter in model.ema_network.parameters():
            parameter.add_(1.0)  # the average differs from the trained network
    weights = inference_weights(model)
    assert not any(key.startswith("network.") for key in weights)
    run = tmp_path / "run"
    ckpt.save_checkpoint(run / "checkpoints" / "last.pt", {
        "model": "ddpm", "config": config.to_dict(), "spec": dataclasses.asdict(spec),
        "state": model.training_state(), "step": 7,
    })
    config.save(run / "config.yaml")
    export_run(run, tmp_path / "out")
    loaded = genlab.load(tmp_path / "out", device="cpu")
    for key, value in model.ema_network.state_dict().items():
        assert torch.equal(loaded.ema_network.state_dict()[key], value)
        assert torch.equal(loaded.network.state_dict()[key], value)  # filled from the average


@pytest.mark.parametrize(
    "family, generator, net", [("pix2pix", "generator", []), ("cyclegan", "generator_ba", ["net.n_blocks=1"])]
)
@pytest.mark.parametrize("ema_length", ["null", "0.1"])
def test_gan_families_export_their_generator_average_when_they_keep_one(tmp_path, family, generator, net, ema_length):
    run = tmp_path / "run"
    options = [item for setting in ["net.width=4", f"net.ema_length={ema_length}", *net] for item in ("--set", setting)]
    assert main(["train", family, "--task", "facades-synth", "--size", "16", "--steps", "3", "--batch-size", "2",
                 "--out", str(run), *options, "--quiet"]) == 0
    export_run(run, tmp_path / "out")
    tensors = load_file(str(tmp_path / "out" / "model.safetensors"))
    averaged = ema_length != "null"
    assert any(key.startswith(f"{generator}.") for key in tensors) != averaged  # the average replaces the last
    assert any(key.startswith(f"ema_{generator}.") for key in tensors) == averaged
    assert json.loads((tmp_path / "out" / "config.json").read_text())["ema"] == averaged
    original, exported = genlab.load(run, device="cpu"), genlab.load(tmp_path / "out", device="cpu")
    source = torch.rand(2, 3, 16, 16) * 2 - 1
    for direction in ["AtoB", "BtoA"] if family == "cyclegan" else ["AtoB"]:
        options = {"direction": direction} if family == "cyclegan" else {}
        assert torch.equal(original.translate_batch(source, **options), exported.translate_batch(source, **options))


def test_a_diffusion_run_loads_in_channels_last_and_exports_contiguous_weights(tmp_path):
    """Loaded diffusion runs sample with channels_last weights (faster on CPUs) and the same images as in
    the default layout; export still writes (safetensors refuses non-contiguous tensors)."""
    from genlab.api import load_run
    from genlab.sample import sample_images

    run = tmp_path / "ddpm"
    assert main(["train", "ddpm", "--task", "fashion-mnist", "--size", "16", "--steps", "2", "--batch-size", "4",
                 "--out", str(run), "--set", "data.train_limit=16", "--set", "net.timesteps=20", "--quiet"]) == 0
    fast = load_run(run, device="cpu")
    plain = load_run(run, device="cpu", channels_last=False)
    assert fast.model.runtime.channels_last and not plain.model.runtime.channels_last
    conv = next(m for m in fast.model.ema_network.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
                and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    labels = torch.arange(4)
    expected = sample_images(plain.model, 4, labels, seed=1, steps=3)
    torch.testing.assert_close(sample_images(fast.model, 4, labels, seed=1, steps=3), expected, rtol=1e-4, atol=1e-4)
    assert main(["export", str(run), "--out", str(tmp_path / "exported")]) == 0
    exported = load_run(tmp_path / "exported", device="cpu")
    torch.testing.assert_close(sample_images(exported.model, 4, labels, seed=1, steps=3), expected, rtol=1e-4,
                               atol=1e-4)


def test_other_families_load_in_the_default_layout(trained_run):
    assert not genlab.load(trained_run, device="cpu").runtime.channels_last  # pix2pix: no measured gain


def test_a_run_with_the_value_prior_exports_its_statistics(tmp_path):
    from genlab.api import load_run
    from genlab.sample import sample_images

    run = tmp_path / "ddpm"
    assert main(["train", "ddpm", "--task", "fashion-mnist", "--size", "16", "--steps", "2", "--batch-size", "4",
                 "--out", str(run), "--set", "data.train_limit=16", "--set", "net.timesteps=20",
                 "--set", "net.value_prior=true", "--quiet"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "exported")]) == 0
    original, exported = load_run(run, device="cpu"), load_run(tmp_path / "exported", device="cpu")
    assert original.model.value_histogram.sum().item() == 16 * 16 * 16  # the 16 training images, every pixel
    assert torch.equal(exported.model.value_histogram, original.model.value_histogram)
    assert exported.model.value_error_std.item() == original.model.value_error_std.item() > 0
    labels = torch.arange(4)
    torch.testing.assert_close(sample_images(exported.model, 4, labels, seed=1, steps=3),
                               sample_images(original.model, 4, labels, seed=1, steps=3), rtol=1e-4, atol=1e-4)
