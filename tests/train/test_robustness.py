"""Robustness of training: numerical faults, one writer per run, resume checks, disk faults, crashes.

The slow ones (`-m slow`) kill a training subprocess at random moments, fill a disk, race two writers.
"""

import errno
import os
import random
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import genlab
from genlab import checkpoint as ckpt
from genlab.cli import main
from genlab.runs import build_run_config
from genlab.train.logging import read_metrics
from genlab.train.trainer import resume_config, train
from genlab.utils import GenlabError, atomic_path

TESTS = Path(__file__).resolve().parents[1]


def toy_config(model="pix2pix", steps=8, overrides=()):
    return build_run_config(
        model,
        "quick",
        {"data.task": "toy-paired", "data.image_size": 16, "train.steps": steps, "train.batch_size": 2},
        ["train.log_every=1", "train.sample_every=1000", "train.checkpoint_every=4", "train.preview_count=2"]
        + (["net.width=4"] if model == "pix2pix" else [])
        + list(overrides),
    )


def poison_weights_from(family, first_step):
    """Make the family's update write NaN into one weight from `first_step` on, while its losses stay finite."""
    honest_step = family.training_step

    def step(self, batch):
        losses = honest_step(self, batch)
        if self.step + 1 >= first_step and self.poisoned < 1:
            with torch.no_grad():
                next(self.parameters()).fill_(float("nan"))
            self.poisoned += 1
        return losses

    family.poisoned = 0
    return step


# --- 1. numerical faults -------------------------------------------------------------------------------------
def test_nan_weights_with_finite_losses_are_never_saved(toy_task, l1_unet, tmp_path, monkeypatch):
    from genlab.models.base import MODELS

    family = MODELS[l1_unet]
    monkeypatch.setattr(family, "training_step", poison_weights_from(family, 8))  # the update into step 8
    with pytest.raises(GenlabError) as error:
        train(toy_config(l1_unet, steps=20, overrides=["train.log_every=1000"]), tmp_path / "run", progress=False)
    message = str(error.value)
    assert "step 8: weights" in message and "hold NaN or Inf (first: net." in message  # step and tensor named
    assert "last finite checkpoint" in message and "(step 4)" in message and "\n" not in message
    document = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert document["step"] == 4 and not ckpt.nonfinite_tensors(document["state"])
    assert not (tmp_path / "run" / "checkpoints" / "step_0000008.pt").exists()


def test_nan_before_any_checkpoint_says_none_is_kept(toy_task, l1_unet, tmp_path, monkeypatch):
    from genlab.models.base import MODELS

    family = MODELS[l1_unet]
    honest_step = family.training_step
    monkeypatch.setattr(family, "training_step", lambda self, batch: {**honest_step(self, batch), "loss_l1": 1e999})
    with pytest.raises(GenlabError, match="step 0: loss_l1 is inf; training stopped: no checkpoint had been saved"):
        train(toy_config(l1_unet, steps=20), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_cli_exits_non_zero_on_nan(toy_task, l1_unet, tmp_path, monkeypatch, capsys):
    from genlab.models.base import MODELS

    family = MODELS[l1_unet]
    honest_step = family.training_step
    monkeypatch.setattr(family, "training_step", lambda self, batch: {**honest_step(self, batch), "x": float("nan")})
    code = main(["train", l1_unet, "--task", "toy-paired", "--steps", "3", "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2 and "x is nan" in capsys.readouterr().err


def test_rollback_reloads_the_last_good_checkpoint_with_a_lower_lr(toy_task, l1_unet, tmp_path, monkeypatch, capsys):
    from genlab.models.base import MODELS

    family = MODELS[l1_unet]
    monkeypatch.setattr(family, "training_step", poison_weights_from(family, 6))
    config = toy_config(l1_unet, steps=12, overrides=["train.on_nan=rollback", "train.nan_lr_factor=0.5"])
    result = train(config, tmp_path / "run", progress=False)
    assert result.steps == 12
    out = capsys.readouterr().out
    assert "rolled back to" in out and "(step 4)" in out and "learning rates x0.5: net 0.001 -> 0.0005" in out
    document = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert document["state"]["optimizers"]["net"]["param_groups"][0]["lr"] == pytest.approx(0.5e-3)
    assert read_metrics(tmp_path / "run" / "metrics.csv")["step"] == list(range(1, 13))


def test_rollback_gives_up_after_max_rollbacks(toy_task, l1_unet, tmp_path, monkeypatch):
    from genlab.models.base import MODELS

    family = MODELS[l1_unet]
    honest_step = family.training_step

    def always_nan_after_5(self, batch):
        losses = honest_step(self, batch)
        return {"loss_l1": float("nan")} if self.step >= 5 else losses

    monkeypatch.setattr(family, "training_step", always_nan_after_5)
    config = toy_config(l1_unet, steps=20, overrides=["train.on_nan=rollback", "train.max_rollbacks=2"])
    with pytest.raises(GenlabError, match="after 2 rollbacks, the most allowed.*step 4"):
        train(config, tmp_path / "run", progress=False)


def test_save_checkpoint_refuses_non_finite_state(tmp_path):
    state = {"networks": {"a": torch.ones(2), "b": torch.tensor([float("nan")])}}
    with pytest.raises(ckpt.NonFiniteError, match="1 of 2 tensors hold NaN or Inf .first: networks.b"):
        ckpt.save_checkpoint(tmp_path / "x.pt", {"state": state})
    assert not list(tmp_path.iterdir())


# --- 2. one writer per run directory ---------------------------------------------------------------------------
def test_a_live_lock_is_refused_naming_the_pid(toy_task, tmp_path):
    run = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.mkdir()
        (run / ".lock").write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        with pytest.raises(GenlabError, match=f"another genlab process \\(pid {sleeper.pid}\\) is already training"):
            train(toy_config(steps=2), run, progress=False)
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stale_lock_is_cleared_with_a_message(toy_task, tmp_path, capsys):
    run = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.mkdir()
    (run / ".lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    train(toy_config(steps=2), run, progress=False)
    assert f"cleared the stale lock of process {dead.pid}" in capsys.readouterr().out
    assert not (run / ".lock").exists()  # released at the end


# --- 4. resume checks what it is given ---------------------------------------------------------------------------
@pytest.fixture
def short_run(toy_task, tmp_path):
    run = tmp_path / "run"
    code = main(["train", "pix2pix", "--task", "toy-paired", "--size", "16", "--steps", "2", "--batch-size", "2",
                 "--set", "net.width=4", "--out", str(run), "--quiet"])
    assert code == 0
    return run


@pytest.mark.parametrize(
    "options, named",
    [
        (["--size", "32"], "--size (16 -> 32)"),
        (["--batch-size", "4"], "--batch-size (2 -> 4)"),
        (["--seed", "7"], "--seed (0 -> 7)"),
        (["--task", "facades-synth"], "--task ('toy-paired' -> 'facades-synth')"),
        (["--set", "net.width=8"], "--set net.width (4 -> 8)"),
        (["--set", "data.image_size=32"], "(16 -> 32)"),
    ],
)
def test_resume_refuses_what_changes_the_model_or_data(short_run, capsys, options, named):
    code = main(["train", "--resume", "--out", str(short_run), "--steps", "4", "--quiet", *options])
    err = capsys.readouterr().err
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1


def test_resume_applies_and_logs_safe_options(short_run, capsys):
    code = main(["train", "--resume", "--out", str(short_run), "--steps", "4", "--device", "cpu",
                 "--set", "train.log_every=2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "resume: train.steps 2 -> 4" in err and "resume: train.log_every 25 -> 2" in err
    assert ckpt.load_checkpoint(short_run / "checkpoints" / "last.pt")["step"] == 4


def test_resume_with_a_config_of_another_family_is_a_clear_error(short_run, capsys):
    other = build_run_config("cyclegan", "quick", {"data.task": "toy-paired", "data.image_size": 16})
    other.save(short_run / "config.yaml")
    code = main(["train", "--resume", "--out", str(short_run), "--steps", "4", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "last.pt: a pix2pix checkpoint, but the config is for cyclegan" in err


def test_resume_with_an_edited_size_is_refused_before_load_state_dict(short_run):
    config = resume_config(short_run)
    config.data.image_size = 32
    config.train.steps = 4
    with pytest.raises(GenlabError, match=r"last.pt: the config differs .*data.image_size 16 -> 32"):
        train(config, short_run, resume=True, progress=False)


def test_a_mismatched_state_dict_names_the_file(short_run):
    from genlab.train.trainer import load_state

    model = genlab.load(short_run, device="cpu")
    with pytest.raises(GenlabError, match="bad.pt: does not fit this pix2pix model"):
        load_state(model, {"state": {"networks": {"nonsense": torch.zeros(1)}}}, Path("bad.pt"))


# --- 5. disk faults and unfinished set-ups ------------------------------------------------------------------------
def test_enospc_is_one_clear_line_and_keeps_the_previous_checkpoint(short_run, monkeypatch):
    last = short_run / "checkpoints" / "last.pt"
    before = last.read_bytes()

    def full_disk(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    config = resume_config(short_run)
    config.train.steps = 4
    with pytest.raises(GenlabError) as error:
        train(config, short_run, resume=True, progress=False)
    message = str(error.value)
    assert "could not write checkpoint" in message and str(last) in message and "no space left" in message
    assert "MiB free" in message and "needs about" in message and "\n" not in message
    assert last.read_bytes() == before
    assert not list(last.parent.glob(".*.tmp"))


def test_torch_iostream_error_becomes_a_disk_message(tmp_path, monkeypatch):
    def failing(obj, path, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\nbasic_ios::clear: "
                           "iostream error")

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(ckpt.DiskWriteError, match="could not write checkpoint .*x.pt"):
        ckpt.save_checkpoint(tmp_path / "x.pt", {"state": {}})


def test_stale_temporaries_of_a_killed_save_are_removed(short_run, capsys):
    leftover = short_run / "checkpoints" / ".last.pt.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    config = resume_config(short_run)
    config.train.steps = 3
    train(config, short_run, resume=True, progress=False)
    assert not leftover.exists() and "removed" in capsys.readouterr().out


def test_a_failed_set_up_can_be_retried(toy_task, tmp_path, monkeypatch, capsys):
    from genlab.train import trainer

    run = tmp_path / "run"
    real_get_task = trainer.get_task

    def broken_data(config):
        raise GenlabError("data: a bad file")

    monkeypatch.setattr(trainer, "get_task", broken_data)
    assert main(["train", "pix2pix", "--task", "toy-paired", "--size", "16", "--steps", "2", "--set", "net.width=4",
                 "--out", str(run), "--quiet"]) == 2
    capsys.readouterr()
    assert not run.exists()  # refused before it wrote anything: no empty folder left
    run.mkdir()
    (run / "config.yaml").write_text("model: pix2pix\n")  # as a set-up that failed after saving its config leaves
    code = main(["train", "--resume", "--out", str(run), "--quiet"])
    assert code == 2 and "run the same command without --resume" in capsys.readouterr().err
    monkeypatch.setattr(trainer, "get_task", real_get_task)
    assert main(["train", "pix2pix", "--task", "toy-paired", "--size", "16", "--steps", "2", "--set", "net.width=4",
                 "--out", str(run), "--quiet"]) == 0
    assert "starting it over" in capsys.readouterr().out
    assert ckpt.load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2


# --- 6. untrusted files ------------------------------------------------------------------------------------------
class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_a_malicious_checkpoint_is_refused_in_two_lines_at_most(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "payload": _RunsCode()}, path)
    with pytest.raises(GenlabError) as error:
        ckpt.load_checkpoint(path)
    message = str(error.value)
    assert "evil.pt: refused" in message and len(message.splitlines()) <= 2
    assert "weights_only" not in message and "False" not in message


def test_atomic_path_removes_its_temporary_on_error(tmp_path):
    with pytest.raises(OSError), atomic_path(tmp_path / "file.bin") as temporary:
        temporary.write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not list(tmp_path.iterdir())


# --- slow: crashes, a full disk, two writers, NaN at a checkpoint step ----------------------------------------------
SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import conftest
    from genlab.data import tasks
    from genlab.data.tasks import TaskEntry
    tasks.register_task(TaskEntry("toy-paired", "paired", "test", conftest.build_toy_task, lambda c: True, None))
    from genlab.cli import main
    sys.exit(main(["train", "pix2pix", "--task", "toy-paired", "--size", "16", "--batch-size", "2",
                   "--steps", {steps!r}, "--set", "net.width=4", "--set", "train.checkpoint_every=1",
                   "--set", "train.log_every=1", "--set", "train.sample_every=1000000", "--quiet",
                   "--out", {run!r}] + {extra!r}))
    """
)


def _trainer_process(tmp_path, run, steps="100000", extra=()):
    script = tmp_path / f"train_{random.getrandbits(32):08x}.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), run=str(run), steps=steps, extra=list(extra)))
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


CRASH_TRIALS = 20


@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_the_run(tmp_path):
    """20 SIGKILLs at random moments (inside saves, logging, steps): last.pt always loads and the run resumes."""
    rng = random.Random(0)
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    survived = 0
    for _ in range(CRASH_TRIALS):
        before = last.stat().st_mtime_ns if last.exists() else 0
        process = _trainer_process(tmp_path, run, extra=["--resume"] if last.exists() else [])
        deadline = time.monotonic() + 120
        while not (last.exists() and last.stat().st_mtime_ns != before):  # training (and saving) is under way
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))  # a random moment: mid-step, mid-save, mid-log
        process.kill()
        process.communicate(timeout=30)
        document = ckpt.load_checkpoint(last)
        assert not ckpt.nonfinite_tensors(document["state"])
        survived += 1
    assert survived == CRASH_TRIALS
    step = ckpt.load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    final = _trainer_process(tmp_path, run, steps=str(step + 2), extra=["--resume"])
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    assert ckpt.load_checkpoint(run / "checkpoints" / "last.pt")["step"] == step + 2
    assert not list(run.rglob(".*.tmp"))
    assert read_metrics(run / "metrics.csv")["step"] == list(range(1, step + 3))


@pytest.mark.slow
def test_two_concurrent_writers_one_is_refused(toy_task, tmp_path):
    run = tmp_path / "run"
    first = _trainer_process(tmp_path, run)
    deadline = time.monotonic() + 120
    while not (run / ".lock").exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    second = _trainer_process(tmp_path, run)
    _, stderr = second.communicate(timeout=120)
    first.kill()
    first.communicate(timeout=30)
    assert second.returncode == 2
    assert f"another genlab process (pid {first.pid}) is already training" in stderr


@pytest.mark.slow
def test_full_disk_on_a_small_tmpfs(toy_task, tmp_path):
    """A real ENOSPC: a 2 MiB tmpfs (needs root; skipped otherwise) filled by a run whose checkpoints are larger."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        config = toy_config(steps=8, overrides=["net.width=16"])
        with pytest.raises(GenlabError) as error:
            train(config, mount / "run", progress=False)
        message = str(error.value)
        assert "could not write" in message and "MiB free" in message and "\n" not in message
        assert not list((mount / "run").rglob(".*.tmp"))
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # lazy: a handle still open must not keep it


@pytest.mark.slow
def test_nan_exactly_at_a_checkpoint_step_with_real_divergence(toy_task, tmp_path):
    """A huge learning rate: the run stops (or rolls back) and every checkpoint on disk stays finite."""
    config = toy_config(steps=60, overrides=["net.lr=1e6", "train.checkpoint_every=1"])
    try:
        train(config, tmp_path / "run", progress=False)
    except GenlabError as error:
        assert "training stopped" in str(error)
    for path in (tmp_path / "run" / "checkpoints").glob("*.pt"):
        assert not ckpt.nonfinite_tensors(ckpt.load_checkpoint(path)["state"])
