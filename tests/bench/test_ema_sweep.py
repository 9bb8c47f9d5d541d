import pytest
import torch

from genlab.api import load_run
from genlab.bench.ema_sweep import SnapshotAverages, sweep
from genlab.runs import build_run_config
from genlab.train.trainer import train
from genlab.utils import GenlabError

TINY = ["net.base_width=8", "net.channel_mults=[1,2]", "net.timesteps=20", "net.sample_steps=3",
        "net.autoguide_at=null", "net.autoguidance=1", "train.preview_count=2"]


def tiny_cddim(run, *overrides):
    config = build_run_config(
        "cddim", "quick", {"data.task": "facades-synth", "data.image_size": 16, "train.steps": 6,
                           "train.batch_size": 2},
        [*TINY, *overrides],
    )
    train(config, run, progress=False)
    return run


@pytest.fixture(scope="module")
def every_step_run(tmp_path_factory):
    """6 steps of a tiny cddim with the average of width 0.09, a checkpoint (and so a stored average) per step."""
    return tiny_cddim(tmp_path_factory.mktemp("runs") / "a", "train.checkpoint_every=1", "train.keep_checkpoints=100")


def test_rebuilt_average_is_the_one_another_width_would_have_kept(every_step_run, tmp_path):
    # The same seed trains the same weights whatever the average's width (it only reads them), so a run at width
    # 0.2 kept exactly the average that 6 snapshots of 6 updates rebuild (they span every profile).
    other = load_run(tiny_cddim(tmp_path / "b", "net.ema_length=0.2")).model.ema_network.state_dict()
    loaded = load_run(every_step_run)
    snapshots = SnapshotAverages(every_step_run, loaded.model, loaded.step)
    assert snapshots.steps == [1, 2, 3, 4, 5, 6]
    rebuilt, residual = snapshots.rebuild(0.2)
    assert residual < 1e-9
    for key, value in other.items():
        torch.testing.assert_close(rebuilt[key].float(), value, rtol=1e-5, atol=1e-6, msg=key)
    own, _ = snapshots.rebuild(0.09)  # the run's own width: its own average back
    for key, value in loaded.model.ema_network.state_dict().items():
        torch.testing.assert_close(own[key].float(), value, rtol=1e-5, atol=1e-6, msg=key)


def test_sweep_scores_each_width(every_step_run):
    rows = sweep(every_step_run, [0.09, 0.2], limit=4, batch_size=4, features=())
    assert [row["ema_length"] for row in rows] == [0.09, 0.2]
    assert rows[0]["residual"] < 1e-9 and rows[0]["psnr"] != rows[1]["psnr"]


def test_sweep_needs_the_checkpoints(tmp_path):
    run = tiny_cddim(tmp_path / "c", "train.keep_checkpoints=0")
    with pytest.raises(GenlabError, match="no numbered checkpoints besides last.pt"):
        sweep(run, [0.1], limit=2, features=())
