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
from genlab.models.base import get_model_class
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
