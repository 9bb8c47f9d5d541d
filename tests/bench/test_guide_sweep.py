import pytest
import torch

from genlab.api import load_run
from genlab.bench.guide_sweep import (
    check_guide_run,
    guide_from_checkpoint,
    nearest_step,
    numbered_checkpoints,
    sweep,
)
from genlab.evaluate import EvalOptions, evaluate_run
from genlab.utils import GenlabError


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory, tiny_cddim):
    """A tiny cddim run of 4 steps that takes its guide half-way (after update 3) and keeps every checkpoint."""
    return tiny_cddim(tmp_path_factory.mktemp("runs") / "cddim", "net.autoguide_at=0.5")


@pytest.fixture(scope="module")
def narrow_run(tmp_path_factory, tiny_cddim):
    """A narrower network (width 4) trained on the same task, to guide `guided_run`."""
    return tiny_cddim(tmp_path_factory.mktemp("runs") / "narrow", "net.base_width=4", "net.autoguide_at=null",
                      "net.autoguidance=1", steps=2)


def test_nearest_step():
    assert nearest_step([1, 2, 3, 4], 2.4) == 2 and nearest_step([1, 2, 3, 4], 2.5) == 2  # a tie: the earlier
    assert nearest_step([500, 1000], 10_000) == 1000
    with pytest.raises(GenlabError, match="no numbered checkpoints"):
        nearest_step([], 3)


def test_guide_is_the_weight_average_of_the_chosen_checkpoint(guided_run):
    checkpoints = numbered_checkpoints(guided_run)
    assert sorted(checkpoints) == [1, 2, 3, 4]
    model = load_run(guided_run).model
    guide_from_checkpoint(model, checkpoints[1])
    early = load_run(guided_run, checkpoint=str(checkpoints[1])).model.ema_network.state_dict()
    for key, value in model.guide_network.state_dict().items():
        assert torch.equal(value, early[key]), key
    assert any(not torch.equal(a, b) for a, b in zip(model.guide_network.parameters(), model.ema_network.parameters()))


def test_sweep_at_the_trained_fraction_scores_as_the_run_itself(guided_run):
    # autoguide_at 0.5 of 4 steps: the guide is the average after update 3, i.e. checkpoint step 3 = 0.75
    rows = sweep(guided_run, [0.75, 0.25], [2.0, 3.0], limit=4, batch_size=4, features=())
    assert [(row["guide_step"], row["weight"]) for row in rows] == [(3, 2.0), (3, 3.0), (1, 2.0), (1, 3.0)]
    assert rows[0]["guide_fraction"] == 0.75
    for row in rows[:2]:
        own = evaluate_run(guided_run, EvalOptions(features=(), lpips=False, diversity_inputs=0, limit=4,
                                                   batch_size=4, autoguidance=row["weight"], progress=False),
                           write=False)
        assert row["psnr"] == own.score("psnr").value and row["ssim"] == own.score("ssim").value
    assert rows[0]["psnr"] != rows[2]["psnr"]  # another guide, other translations


def test_sweep_needs_a_run_with_a_guide(tiny_cddim, tmp_path):
    tiny_cddim(tmp_path / "plain", "net.autoguide_at=null", "net.autoguidance=1", steps=1)
    with pytest.raises(GenlabError, match="keeps no guide network"):
        sweep(tmp_path / "plain", [0.5], [2.0], limit=2, features=())


def test_a_guide_from_another_run_is_that_runs_average_and_changes_the_outputs(guided_run, narrow_run):
    checkpoints = numbered_checkpoints(narrow_run)
    guided, narrow = load_run(guided_run), load_run(narrow_run)
    check_guide_run(guided, narrow)
    guide_from_checkpoint(guided.model, checkpoints[1], narrow.model.ema_network)
    early = load_run(narrow_run, checkpoint=str(checkpoints[1])).model.ema_network.state_dict()
    guide = guided.model.guide_network.state_dict()
    assert guide.keys() == early.keys() and all(torch.equal(guide[key], early[key]) for key in early)
    assert guided.model.guide_network.config.base_width == 4  # the narrow net itself, not a copy of the guided one

    rows = sweep(guided_run, [1.0, 0.5], [2.0], limit=4, batch_size=4, features=(), guide_run=narrow_run)
    assert [(row["guide_step"], row["guide_fraction"]) for row in rows] == [(2, 1.0), (1, 0.5)]
    own = sweep(guided_run, [0.75], [2.0], limit=4, batch_size=4, features=())
    assert len({rows[0]["psnr"], rows[1]["psnr"], own[0]["psnr"]}) == 3  # each guide translates differently


def test_a_guide_run_must_predict_what_the_guided_run_does(guided_run, tiny_cddim, tmp_path):
    other = tiny_cddim(tmp_path / "eps", "net.prediction=eps", "net.autoguide_at=null", "net.autoguidance=1",
                       steps=1)
    with pytest.raises(GenlabError, match=r"its net.prediction is 'eps', the guided run's is 'v'"):
        sweep(guided_run, [1.0], [2.0], limit=2, features=(), guide_run=other)


def test_sweep_at_an_earlier_checkpoint_scores_that_network(guided_run):
    last = sweep(guided_run, [0.5], [2.0], limit=4, batch_size=4, features=())
    same = sweep(guided_run, [0.5], [2.0], limit=4, batch_size=4, features=(), at_step=4)  # 4 is the last
    assert [(row["guide_step"], row["psnr"], row["ssim"]) for row in same] == [
        (row["guide_step"], row["psnr"], row["ssim"]) for row in last
    ]
    early = sweep(guided_run, [0.5, 1.0], [2.0], limit=4, batch_size=4, features=(), at_step=2)
    assert [(row["guide_step"], row["guide_fraction"]) for row in early] == [(1, 0.5), (2, 1.0)]  # of step 2
    assert early[0]["psnr"] != last[0]["psnr"]
    with pytest.raises(GenlabError, match=r"no checkpoint of step 9 \(kept: 1, 2, 3, 4\)"):
        sweep(guided_run, [0.5], [2.0], limit=4, features=(), at_step=9)
