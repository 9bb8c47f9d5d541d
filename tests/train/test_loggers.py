"""train.logger: grouped tags for TensorBoard / W&B, event files when tensorboard is installed, a clear error
when a logger's package is missing. metrics.csv is written whatever the logger."""

from __future__ import annotations

import builtins
import importlib.util
import sys

import pytest
import torch

from genlab.cli import main
from genlab.runs import build_run_config
from genlab.train.logging import MetricsLog, read_metrics, scalar_tag
from genlab.train.trainer import train
from genlab.utils import GenlabError


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _hide(monkeypatch, package: str) -> None:
    """Make `import package` fail, as if it were not installed."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == package or name.startswith(f"{package}."):
            raise ImportError(f"No module named {package!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_scalar_tags_are_grouped_by_kind():
    assert scalar_tag("loss_g") == "loss/g" and scalar_tag("loss_d") == "loss/d"
    assert scalar_tag("loss_d_real") == "loss/d_real" and scalar_tag("ae_loss") == "loss/ae"
    assert scalar_tag("loss") == "loss/total"
    assert scalar_tag("images_per_s") == "speed/images_per_s"
    assert scalar_tag("elapsed_s") == "time/elapsed_s"
    assert scalar_tag("kl") == "train/kl"


def test_csv_logger_writes_only_the_csv(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    log.write({"step": 1, "loss_g": 0.5})
    log.log_image("preview", torch.zeros(3, 4, 4, dtype=torch.uint8), 1)  # goes nowhere, no error
    log.close()
    assert not log.sends_images and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_unknown_logger_is_refused(tmp_path):
    with pytest.raises(GenlabError, match="unknown logger 'mlflow'"):
        MetricsLog(tmp_path / "metrics.csv", "mlflow")


def test_wandb_missing_names_the_pip_install(tmp_path, monkeypatch):
    _hide(monkeypatch, "wandb")
    with pytest.raises(GenlabError, match="pip install wandb"):
        MetricsLog(tmp_path / "metrics.csv", "wandb")


def test_tensorboard_missing_names_the_pip_install(tmp_path, monkeypatch):
    _hide(monkeypatch, "tensorboard")
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)  # re-imported, so it fails
    with pytest.raises(GenlabError, match="pip install tensorboard"):
        MetricsLog(tmp_path / "metrics.csv", "tensorboard")


def test_train_cli_with_wandb_missing_is_a_clear_error(tmp_path, monkeypatch, capsys, toy_task, l1_unet):
    _hide(monkeypatch, "wandb")
    code = main(["train", l1_unet, "--task", toy_task, "--steps", "2", "--logger", "wandb", "--quiet",
                 "--out", str(tmp_path / "run")])
    assert code != 0
    assert "pip install wandb" in capsys.readouterr().err


@pytest.mark.skipif(not _has("tensorboard"), reason="tensorboard is not installed")
def test_tensorboard_logger_writes_grouped_scalars_and_previews(tmp_path, toy_task, l1_unet):
    config = build_run_config(
        l1_unet, "quick", {"data.task": toy_task, "train.steps": 4},
        ["train.log_every=2", "train.sample_every=2", "train.logger=tensorboard", "train.preview_count=2"],
    )
    train(config, tmp_path / "run", progress=False)
    assert read_metrics(tmp_path / "run" / "metrics.csv")["step"] == [2.0, 4.0]
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    accumulator = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    accumulator.Reload()
    tags = accumulator.Tags()
    assert {"loss/l1", "speed/images_per_s", "time/elapsed_s"} <= set(tags["scalars"])
    assert "loss_l1" not in tags["scalars"] and "preview" in tags["images"]
