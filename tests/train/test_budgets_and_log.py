"""Budgets in steps, images or minutes resolved in one place; metrics.csv keeps every key; tasks register."""

import csv
import math
import warnings

import pytest

from genlab.config import TrainConfig, set_budget
from genlab.data import tasks
from genlab.data.tasks import TaskEntry, get_task
from genlab.runs import build_run_config
from genlab.train.logging import MetricsLog, read_metrics
from genlab.train.trainer import train
from genlab.utils import GenlabError


def test_an_images_budget_becomes_steps_by_the_batch_size():
    config = TrainConfig(steps=None, images=100, batch_size=8)
    assert config.step_budget() == 13  # ceil(100 / 8): the last batch may pass the budget
    config.steps = 5
    assert config.step_budget() == 5  # whichever ends first


def test_a_given_budget_replaces_the_presets():
    config = TrainConfig(steps=1500, batch_size=4)
    assert set_budget(config, minutes=2.0)
    assert (config.steps, config.minutes, config.images) == (None, 2.0, None)
    assert set_budget(config, images=400) and config.step_budget() == 100 and config.minutes is None
    assert not set_budget(config) and config.images == 400  # nothing given: kept


def test_training_stops_at_the_images_budget(tmp_path, toy_task, l1_unet):
    config = build_run_config(l1_unet, "quick", {"data.task": toy_task, "train.batch_size": 4})
    set_budget(config.train, images=10)
    result = train(config, tmp_path / "run", progress=False)
    assert result.steps == 3
    assert read_metrics(tmp_path / "run" / "metrics.csv")["step"][-1] == 3


def test_metrics_log_widens_its_header_for_new_keys(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    log.write({"step": 1, "ae_loss": 0.5})
    log.write({"step": 2, "ae_loss": 0.4})
    log.write({"step": 3, "loss": 0.9})  # a key the first rows did not have
    log.close()
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "ae_loss", "loss"]
    assert [row["loss"] for row in rows] == ["", "", "0.9"] and rows[2]["ae_loss"] == ""
    columns = read_metrics(tmp_path / "metrics.csv")
    assert columns["step"] == [1.0, 2.0, 3.0] and math.isnan(columns["loss"][0]) and columns["loss"][2] == 0.9


def test_ldm_logs_both_stages(tmp_path):
    config = build_run_config(
        "ldm", "quick", {"data.image_size": 16, "train.steps": 4, "train.batch_size": 2},
        ["net.base_width=8", "net.channel_mults=[1,2]", "net.num_res_blocks=1", "net.timesteps=20",
         "net.ae_width=8", "net.autoencoder_steps=2", "train.log_every=1", "train.preview_count=2",
         "net.preview_steps=2", "data.train_limit=16", "data.task=facades-synth"],
    )
    train(config, tmp_path / "ldm", progress=False)
    columns = read_metrics(tmp_path / "ldm" / "metrics.csv")
    assert columns["step"] == [1.0, 2.0, 3.0, 4.0]
    assert all(math.isfinite(v) for v in columns["ae_reconstruction"][:2])
    assert all(math.isfinite(v) for v in columns["loss"][2:]) and math.isnan(columns["loss"][0])


def test_register_task_adds_and_refuses_clashes():
    entry = TaskEntry("my-task", "paired", "a user's task", lambda config: None, lambda config: True)
    tasks.register_task(entry)
    try:
        assert tasks.task_entries()["my-task"] is entry
        with pytest.raises(GenlabError, match="already registered"):
            tasks.register_task(entry)
        with pytest.raises(GenlabError, match="already registered"):
            tasks.register_task(TaskEntry("facades-synth", "paired", "x", entry.build, entry.available))
    finally:
        tasks.unregister_task("my-task")
    with pytest.raises(GenlabError, match="unknown task 'my-task'"):
        get_task(build_run_config("pix2pix", "quick", {"data.task": "my-task"}).data)


def test_pix2pix_decays_its_learning_rate_over_the_budget(tmp_path, toy_task):
    config = build_run_config("pix2pix", "quick", {"data.task": toy_task, "data.image_size": 16},
                              ["net.width=4", "net.lr_decay_start=0.5", "train.batch_size=2"])
    set_budget(config.train, images=20)  # 10 steps: the last one runs at progress 9/10
    result = train(config, tmp_path / "run", progress=False)
    for optimizer in result.model.optimizers.values():
        group = optimizer.param_groups[0]
        assert group["initial_lr"] == config.net.lr == 2e-3  # the quick preset's rate
        assert group["lr"] == pytest.approx(2e-3 * (1 - 0.9) / 0.5)


@pytest.mark.parametrize(
    ("model", "overrides", "warns"),
    [
        ("pix2pix", ["net.norm=batch", "train.batch_size=1"], True),
        ("cgan", ["net.norm=batch", "train.batch_size=1"], True),
        ("pix2pix", ["net.norm=batch", "train.batch_size=2"], False),
        ("pix2pix", ["net.norm=instance", "train.batch_size=1"], False),
    ],
)
def test_batch_norm_on_one_image_per_step_is_flagged_once(tmp_path, toy_task, model, overrides, warns):
    """Training would normalise each image by its own statistics, sampling by their running averages."""
    config = build_run_config(model, "quick", {"data.task": toy_task, "data.image_size": 16},
                              ["net.width=4", "train.steps=2", *overrides])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config, tmp_path / "run", progress=False)
    flagged = [w for w in caught if "batch norm with 1 image per step" in str(w.message)]
    assert len(flagged) == int(warns)
    assert all(str(w.message).startswith(f"{model}: ") for w in flagged)


LDM_SMALL = ["net.base_width=8", "net.channel_mults=[1,2]", "net.num_res_blocks=1", "net.timesteps=20",
             "net.ae_width=8", "train.log_every=1", "train.preview_count=2", "net.preview_steps=2",
             "data.train_limit=16", "data.task=facades-synth"]


def test_ldm_stage_one_takes_a_fraction_of_any_budget(tmp_path):
    config = build_run_config("ldm", "quick", {"data.image_size": 16, "train.batch_size": 2},
                              LDM_SMALL + ["net.autoencoder_fraction=0.4"])
    set_budget(config.train, images=20)  # 10 steps: the autoencoder for the first 4
    result = train(config, tmp_path / "ldm", progress=False)
    assert int(result.model.stage_two_step) == 4
    columns = read_metrics(tmp_path / "ldm" / "metrics.csv")
    assert [math.isnan(v) for v in columns["loss"]] == [True] * 4 + [False] * 6


def test_ldm_refuses_a_budget_that_ends_before_its_diffusion_stage(tmp_path):
    config = build_run_config("ldm", "quick", {"data.image_size": 16, "train.steps": 5}, LDM_SMALL +
                              ["net.autoencoder_steps=5"])
    with pytest.raises(GenlabError, match="ends before the diffusion stage"):
        train(config, tmp_path / "ldm", progress=False)
    assert not (tmp_path / "ldm" / "checkpoints").exists()


@pytest.mark.parametrize(
    "model, overrides, rate",
    [
        ("cvae", ["net.width=4", "net.latent_dim=4"], 1e-3),
        ("cddim", ["net.base_width=8", "net.channel_mults=[1,2]", "net.num_res_blocks=1", "net.timesteps=20",
                   "net.warmup_steps=2", "net.preview_steps=2"], 1e-3),
    ],
)
def test_vae_and_diffusion_decay_their_learning_rate_over_the_budget(tmp_path, toy_task, model, overrides, rate):
    config = build_run_config(model, "quick", {"data.task": toy_task, "data.image_size": 16},
                              overrides + ["net.lr_decay_start=0.5", "train.batch_size=2", "train.preview_count=2"])
    set_budget(config.train, images=20)  # 10 steps
    result = train(config, tmp_path / "run", progress=False)
    group = next(iter(result.model.optimizers.values())).param_groups[0]
    assert group["initial_lr"] == rate
    # The VAE sets the rate of step n from the progress n / 10 when it begins; the diffusion scheduler sets the
    # rate of step n + 1 after step n from that same progress. So the last step ran at 9/10, and the rate
    # left for an 11th step is that of 9/10 (the VAE: of the last step; diffusion: past its warm-up).
    assert group["lr"] == pytest.approx(rate * (1 - 0.9) / 0.5)


def test_a_constant_schedule_is_the_default_for_vae_and_diffusion():
    for model in ("cvae", "cddim"):
        assert build_run_config(model, "quick", {}).net.lr_decay_start == 1.0
    assert build_run_config("ddpm", "paper", {}).net.lr_decay_start == 1.0
    assert build_run_config("ddpm", "quick", {}).net.lr_decay_start == 0.5  # measured (README)
