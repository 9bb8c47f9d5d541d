"""Training in several processes: sharding, gradient averaging, rank-0 writes and resume (2 CPU processes, gloo)."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from genlab.train.distributed import Distributed

pytest.importorskip("accelerate", reason="multi-process training needs accelerate (pip install 'genlab[distributed]')")

# Run by torchrun on each rank: a tiny pix2pix at 16 px, then every rank saves the weights it ended with, and
# at exit whether the process group is still open (registered before `train`, so atexit runs it after genlab's
# handler: an open group at finalisation can abort a process that trained fine).
RANK_SCRIPT = textwrap.dedent(
    """
    import atexit, os, sys
    import torch
    from genlab.runs import build_run_config
    from genlab.train.trainer import train

    run_dir, steps, dumps, norm = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    exit_record = os.path.join(dumps, f"open_at_exit{os.environ['RANK']}.txt")
    atexit.register(lambda: open(exit_record, "w").write(str(torch.distributed.is_initialized())))
    overrides = ["net.width=4", "net.dropout=0.0", "train.checkpoint_every=2", "train.sample_every=2",
                 "train.log_every=1", "train.device=cpu", f"net.norm={norm}"]
    config = build_run_config("pix2pix", "quick", {"data.image_size": 16, "train.batch_size": 2}, overrides)
    config.train.steps = steps
    result = train(config, run_dir, progress=False)
    torch.save(result.model.state_dict(), os.path.join(dumps, f"rank{os.environ['RANK']}.pt"))
    """
)


def _single_process_config(steps: int):
    from genlab.runs import build_run_config

    # Instance norm: each rank's BatchNorm would normalise over its own shard (as under DDP without SyncBatchNorm),
    # so only a batch-independent norm makes 2 processes compute what 1 process computes on the whole batch.
    overrides = ["net.width=4", "net.dropout=0.0", "train.checkpoint_every=2", "train.sample_every=2",
                 "train.log_every=1", "train.device=cpu", "net.norm=instance"]
    config = build_run_config("pix2pix", "quick", {"data.image_size": 16, "train.batch_size": 2}, overrides)
    config.train.steps = steps
    return config


def test_shards_of_a_global_batch_are_its_rows_in_order():
    batch = {"source": torch.arange(12.0).view(6, 2), "target": -torch.arange(12.0).view(6, 2)}
    shards = [Distributed(torch.device("cpu"), rank, 3).shard(batch, 6) for rank in range(3)]
    for key in batch:
        assert torch.equal(torch.cat([shard[key] for shard in shards]), batch[key])
    with pytest.raises(Exception, match="must split evenly over the 3 processes"):
        Distributed(torch.device("cpu"), 0, 3).local_batch_size(4)


def _train_in_two_processes(tmp_path, norm: str) -> tuple[dict, dict]:
    """Train the tiny pix2pix for 2 steps with torchrun on 2 CPU processes; the state_dict each rank ended with."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    run_dir, dumps = tmp_path / "run", tmp_path / "dumps"
    dumps.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(run_dir), "2", str(dumps), norm]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-3000:]
    for rank in (0, 1):  # each rank left the process group before its interpreter was torn down
        assert (dumps / f"open_at_exit{rank}.txt").read_text() == "False", rank
    return tuple(torch.load(dumps / f"rank{rank}.pt") for rank in (0, 1))


def test_two_processes_keep_identical_weights_write_once_and_resume_in_one(tmp_path):
    from genlab.checkpoint import load_checkpoint
    from genlab.train.trainer import train

    run_dir = tmp_path / "run"
    rank0, rank1 = _train_in_two_processes(tmp_path, "instance")
    assert rank0.keys() == rank1.keys()
    for key in rank0:  # gradients were averaged: the same weights on both ranks, bit for bit
        assert torch.equal(rank0[key], rank1[key]), key
    # Only rank 0 wrote: one metrics row per step, and checkpoints that name no DDP wrapper.
    assert len((run_dir / "metrics.csv").read_text().strip().splitlines()) == 1 + 2
    document = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert document["step"] == 2 and document["state"]["networks"].keys() == rank0.keys()

    # The two ranks together trained on step k's global batch: the weights match one process on batch 2.
    single = train(_single_process_config(2), tmp_path / "single", progress=False).model.state_dict()
    # (Weights only: a bias just before an InstanceNorm has a true gradient of zero, so Adam's normalised step
    # turns the rounding noise of either run into steps of size lr; those biases do not change the outputs.)
    for key, value in rank0.items():
        if key.endswith("weight"):
            torch.testing.assert_close(value, single[key], rtol=0, atol=1e-6, msg=key)

    # The 2-process checkpoint resumes in a single process.
    config = _single_process_config(3)
    resumed = train(config, run_dir, resume=True, progress=False)
    assert resumed.steps == 3 and all(torch.isfinite(v).all() for v in resumed.model.state_dict().values()
                                      if v.is_floating_point())


def test_two_processes_share_rank_zeros_batch_norm_statistics(tmp_path):
    """Each rank's BatchNorm sees its own shard; rank 0's running statistics are broadcast after every step (DDP's
    broadcast_buffers), so both ranks end with the same parameters and buffers, and the statistics have moved."""
    rank0, rank1 = _train_in_two_processes(tmp_path, "batch")
    running = [key for key in rank0 if key.endswith(("running_mean", "running_var"))]
    assert running, "the pix2pix quick nets have BatchNorm layers"
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert any(not torch.equal(rank0[key], torch.zeros_like(rank0[key])) for key in running if "mean" in key)
