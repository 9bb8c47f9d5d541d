"""The speed switches are honoured: autocast dtype inside a forward, channels_last weights, the optimiser kernel,
torch.compile; the loss stays finite with each, and a resume may change them."""

import math

import pytest
import torch

from genlab.runs import build_run_config
from genlab.train.trainer import train
from genlab.utils import GenlabError


def _config(*overrides: str, steps: int = 1):
    config = build_run_config(
        "pix2pix",
        "quick",
        {"data.image_size": 16, "train.batch_size": 2},
        ["net.width=4", "train.device=cpu", "train.sample_every=100", "train.log_every=1", *overrides],
    )
    config.train.steps = steps
    return config


def _final_losses(run_dir):
    header, *rows = (run_dir / "metrics.csv").read_text().strip().splitlines()
    return dict(zip(header.split(","), map(float, rows[-1].split(","))))


@pytest.fixture
def conv_autocast():
    """The autocast state each Conv2d forward runs under, recorded by a global forward pre-hook."""
    seen = set()

    def record(module, inputs):
        if isinstance(module, torch.nn.Conv2d):
            seen.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    yield seen
    handle.remove()


def test_bf16_autocast_runs_on_the_cpu_and_fp32_stays_full(tmp_path, conv_autocast):
    result = train(_config("train.precision=bf16"), tmp_path / "bf16", progress=False)
    assert conv_autocast == {torch.bfloat16}
    assert result.model.runtime.autocast_dtype is torch.bfloat16
    assert all(math.isfinite(value) for value in _final_losses(tmp_path / "bf16").values())
    conv_autocast.clear()
    train(_config("train.precision=fp32"), tmp_path / "fp32", progress=False)
    assert conv_autocast == {torch.float32}


def test_fp16_on_the_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(GenlabError, match="train.precision=fp16 needs a CUDA device"):
        train(_config("train.precision=fp16"), tmp_path / "run", progress=False)


def test_channels_last_and_the_optimizer_kernel_are_honoured(tmp_path):
    result = train(_config("train.channels_last=true", "train.fused_optimizer=foreach"), tmp_path / "a", progress=False)
    convs = [m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    groups = [group for optimizer in result.model.optimizers.values() for group in optimizer.param_groups]
    assert all(group["foreach"] and not group["fused"] for group in groups)
    assert all(math.isfinite(value) for value in _final_losses(tmp_path / "a").values())

    result = train(_config("train.fused_optimizer=fused"), tmp_path / "b", progress=False)
    convs = [m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs if m.kernel_size != (1, 1))
    groups = [group for optimizer in result.model.optimizers.values() for group in optimizer.param_groups]
    assert all(group["fused"] and not group["foreach"] for group in groups)
    # A resume may change how the step runs (not what it computes): fused -> loop, fp32 -> bf16, channels_last.
    config = _config("train.fused_optimizer=loop", "train.precision=bf16", "train.channels_last=true", steps=2)
    resumed = train(config, tmp_path / "b", resume=True, progress=False)
    groups = [group for optimizer in resumed.model.optimizers.values() for group in optimizer.param_groups]
    assert resumed.steps == 2 and not any(group["fused"] or group["foreach"] for group in groups)
    assert all(math.isfinite(value) for value in _final_losses(tmp_path / "b").values())


def test_compile_compiles_every_network_in_place(tmp_path, monkeypatch):
    # The switch is what is tested; compiling for real takes minutes on 2 CPU cores (a benchmark, not a test).
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *args, **kwargs: compiled.append(type(self).__name__))
    result = train(_config("train.compile=true"), tmp_path / "run", progress=False)
    assert sorted(compiled) == sorted(type(module).__name__ for module in result.model.children() if any(
        True for _ in module.parameters()))
