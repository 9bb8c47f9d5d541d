import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import genlab
from genlab import checkpoint as ckpt
from genlab.runs import build_run_config
from genlab.train.logging import read_metrics
from genlab.train.trainer import resume_config, train
from genlab.utils import GenlabError

TESTS = Path(__file__).resolve().parents[1]


def toy_config(model="pix2pix", steps=8, **train_values):
    config = build_run_config(
        model,
        "quick",
        {"data.task": "toy-paired", "data.image_size": 16, "train.steps": steps, "train.batch_size": 2},
        ["train.log_every=1", "train.sample_every=4", "train.checkpoint_every=4", "train.preview_count=3"]
        # A budget-defined LR decay changes when the budget is raised; these tests raise it, so keep LR constant.
        + ([] if model != "pix2pix" else ["net.width=4", "net.lr_decay_start=1.0"]),
    )
    for key, value in train_values.items():
        setattr(config.train, key, value)
    return config


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(toy_task, tmp_path):
    full = train(toy_config(steps=10), tmp_path / "full", progress=False)
    assert full.steps == 10
    train(toy_config(steps=5), tmp_path / "split", progress=False)
    config = resume_config(tmp_path / "split")
    config.train.steps = 10
    train(config, tmp_path / "split", resume=True, progress=False)
    uninterrupted = read_metrics(tmp_path / "full" / "metrics.csv")
    resumed = read_metrics(tmp_path / "split" / "metrics.csv")
    assert resumed["step"] == list(range(1, 11))
    for key in ("loss_g", "loss_d", "loss_g_l1", "loss_d_fake"):
        assert resumed[key] == uninterrupted[key], key  # exact: same batches, RNG and optimiser state
    # and the same weights, the generator's average (the quick preset keeps one) included
    networks = [ckpt.load_checkpoint(tmp_path / run / "checkpoints" / "last.pt")["state"]["networks"]
                for run in ("full", "split")]
    assert any(key.startswith("ema_generator.") for key in networks[0])
    assert networks[0].keys() == networks[1].keys()
    for key, value in networks[0].items():
        assert torch.equal(value, networks[1][key]), key


def test_run_directory_layout_and_loading(toy_task, tmp_path):
    result = train(toy_config(steps=8), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt", "step_0000004.pt", "step_0000008.pt"]
    assert (run / "samples" / "step_0000004.png").is_file()
    document = ckpt.load_checkpoint(run / "checkpoints" / "last.pt")
    assert document["step"] == 8 and document["format_version"] == ckpt.FORMAT_VERSION
    assert document["config"]["model"] == "pix2pix"
    model = genlab.load(run, device="cpu")
    source = torch.rand(2, 3, 16, 16) * 2 - 1
    expected = result.model.eval().translate_batch(source)
    assert torch.allclose(model.translate(source), expected, atol=1e-6)



def test_the_task_s_jitter_is_recorded_in_the_run(toy_task, tmp_path):
    """An unset data.load_scale trains with the task's own and writes it down, so a resume or a later genlab
    with another default cannot train the rest of the run differently."""
    config = toy_config(steps=2)
    assert config.data.load_scale is None
    train(config, tmp_path / "run", progress=False)
    assert resume_config(tmp_path / "run").data.load_scale == 300 / 256  # toy-paired: a photo task's default
    document = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert document["config"]["data"]["load_scale"] == 300 / 256


def test_a_folder_s_jitter_is_read_off_its_images_said_and_recorded(tmp_path, capsys):
    """A folder of objects on black trains without the resize-and-crop jitter: the trainer says why (with the
    setting that jitters anyway) and writes load_scale 1 into the run."""
    from PIL import Image

    for n in range(4):
        pair = torch.zeros(8, 16, dtype=torch.uint8)
        pair[2:6, 2:6], pair[2:6, 10:14] = 255, 40 * (n + 1)  # outline | object, centred on black
        (tmp_path / "data" / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pair.numpy()).save(tmp_path / "data" / "train" / f"{n}.png")
    config = toy_config(steps=1)
    config.data.task, config.data.image_size = f"folder:{tmp_path / 'data'}", 8
    train(config, tmp_path / "run", progress=True)
    said = capsys.readouterr()
    assert "objects on a plain background" in said.out + said.err and "data.load_scale=1)" in said.out + said.err
    assert resume_config(tmp_path / "run").data.load_scale == 1.0


def test_keep_checkpoints_prunes_oldest(toy_task, tmp_path):
    config = toy_config(steps=12, keep_checkpoints=2)
    config.train.checkpoint_every = 2
    train(config, tmp_path / "run", progress=False)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["last.pt", "step_0000010.pt", "step_0000012.pt"]


def test_a_new_family_plugs_in_without_touching_the_trainer(toy_task, l1_unet, tmp_path):
    config = toy_config(model=l1_unet, steps=40)
    result = train(config, tmp_path / "run", progress=False)
    losses = read_metrics(tmp_path / "run" / "metrics.csv")["loss_l1"]
    assert result.steps == 40 and losses[-1] < losses[0] * 0.7
    assert type(genlab.load(tmp_path / "run", device="cpu")).__name__ == "L1UNet"


def test_existing_run_is_not_overwritten(toy_task, tmp_path):
    train(toy_config(steps=2), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(GenlabError, match="already holds a run"):
        train(toy_config(steps=2), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


def test_a_run_refused_before_writing_leaves_no_folder(toy_task, tmp_path):
    """ddpm cannot train on a paired task: the refusal comes after the lock made the folder, which goes again,
    while a folder that was there before stays."""
    with pytest.raises(GenlabError, match="does not support paired tasks"):
        train(toy_config("ddpm", steps=1), tmp_path / "new" / "run", progress=False)
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(GenlabError, match="does not support paired tasks"):
        train(toy_config("ddpm", steps=1), tmp_path / "kept", progress=False)
    assert (tmp_path / "kept").is_dir()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(toy_task, l1_unet, tmp_path, monkeypatch):
    from genlab.models.base import MODELS

    family = MODELS[l1_unet]
    honest_step = family.training_step

    def step_that_diverges(self, batch):
        losses = honest_step(self, batch)
        return {"loss_l1": float("nan")} if self.step >= 6 else losses

    monkeypatch.setattr(family, "training_step", step_that_diverges)
    config = toy_config(model=l1_unet, steps=20)
    with pytest.raises(GenlabError, match="step 6: loss_l1 is nan"):
        train(config, tmp_path / "run", progress=False)
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4


def test_crash_while_saving_keeps_the_previous_checkpoint(toy_task, tmp_path, monkeypatch):
    train(toy_config(steps=4), tmp_path / "run", progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()

    def failing_save(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    config = resume_config(tmp_path / "run")
    config.train.steps = 6
    with pytest.raises(GenlabError, match="could not write checkpoint .*last.pt: No space"):
        train(config, tmp_path / "run", resume=True, progress=False)
    assert last.read_bytes() == before
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    assert ckpt.load_checkpoint(last)["step"] == 4


def test_budget_in_minutes(toy_task, tmp_path):
    config = toy_config(steps=None, minutes=0.002)
    result = train(config, tmp_path / "run", progress=False)
    assert result.stopped_by == "budget" and result.steps >= 1
    assert result.seconds >= 0.002 * 60


def test_resume_requires_a_run_directory(tmp_path):
    with pytest.raises(GenlabError, match="no such run directory"):
        resume_config(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenlabError, match="not a genlab run directory"):
        resume_config(tmp_path / "empty")


def test_damaged_checkpoints_get_clear_errors(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(GenlabError, match="empty.pt: checkpoint is empty"):
        ckpt.load_checkpoint(empty)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02not a checkpoint at all")
    with pytest.raises(GenlabError, match="garbage.pt: not a readable genlab checkpoint"):
        ckpt.load_checkpoint(garbage)


@pytest.mark.filterwarnings("error")
def test_a_foreign_pickle_gets_genlab_s_error_and_no_torch_warning(tmp_path):
    # Any pickle protocol but 2 makes torch's weights-only unpickler warn before it fails on the header; the
    # user should see genlab's one-line error, not torch's advice to "file an issue" (found by the fuzz test).
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(pickle.dumps({"format_version": 1}, protocol=4))
    with pytest.raises(GenlabError, match=r"foreign.pt: not a readable genlab checkpoint \((?!UserWarning)"):
        ckpt.load_checkpoint(foreign)


SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import conftest
    from genlab.data import tasks
    from genlab.data.tasks import TaskEntry
    tasks.register_task(TaskEntry("toy-paired", "paired", "test", conftest.build_toy_task, lambda c: True, None))
    from genlab.runs import build_run_config
    from genlab.train.trainer import train
    config = build_run_config("pix2pix", "quick", {{"data.task": "toy-paired", "data.image_size": 16,
        "train.steps": 100000, "train.batch_size": 2}}, ["net.width=4", "train.checkpoint_every=1",
        "train.log_every=1", "train.sample_every=1000000"])
    result = train(config, {run!r}, progress=False)
    print("STOPPED", result.stopped_by, result.steps)
    """
)


def _start_training(tmp_path):
    run = tmp_path / "run"
    script = tmp_path / "train_forever.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), run=str(run)))
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    last = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 60
    while not (last.exists() and ckpt.load_checkpoint(last)["step"] >= 3):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.1)
    return process, run


def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path):
    process, run = _start_training(tmp_path)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "STOPPED signal" in stdout
    steps = int(stdout.split()[-1])
    assert ckpt.load_checkpoint(run / "checkpoints" / "last.pt")["step"] == steps
    assert read_metrics(run / "metrics.csv")["step"][-1] == steps


def test_a_killed_run_leaves_a_loadable_checkpoint_and_resumes(tmp_path):
    process, run = _start_training(tmp_path)
    time.sleep(0.3)  # land somewhere inside the checkpoint-every-step loop
    process.kill()
    process.wait(timeout=30)
    document = ckpt.load_checkpoint(run / "checkpoints" / "last.pt")
    assert document["step"] >= 3
    model = genlab.load(run, device="cpu")
    assert model.translate(torch.full((1, 3, 16, 16), -0.5)).shape == (1, 3, 16, 16)
