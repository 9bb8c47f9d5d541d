"""Several processes through Hugging Face Accelerate: one rank per process, gradients averaged before each step.

`accelerate launch --num_processes 2 --cpu -m genlab train ...` and `torchrun --nproc_per_node 2 -m genlab train ...`
both set WORLD_SIZE/RANK; `Distributed.from_environment` then builds an `accelerate.Accelerator`, which opens the
process group (gloo on CPUs, NCCL on GPUs: the same code) and picks each rank's device. A single process (no
WORLD_SIZE, or 1) needs no Accelerate at all and every method is a no-op.

What each rank does (the trainer follows it):
- data: `train.batch_size` is the global batch; rank r takes rows [r*b, (r+1)*b) of step k's batch, so the
  (seed, step) order is the single-process one and the ranks together see exactly its images;
- gradients: averaged across ranks after backward and before the optimiser step (`sync_gradients`, handed to the
  model through `Runtime.gradient_sync`), so the parameters stay identical; BatchNorm running statistics are
  broadcast from rank 0 after each step;
- writes: only rank 0 takes the run lock and writes config, metrics, previews, checkpoints and reports; the other
  ranks only read (the checkpoint, on resume). Evaluation hooks run on rank 0 only, between two steps;
- control: losses are averaged across ranks every step (so a NaN on any rank stops every rank at the same step),
  and "keep going" (budget and Ctrl-C/SIGTERM) is agreed by all ranks, so no rank waits on a collective that the
  others never reach;
- exit: each process leaves the process group when its interpreter exits (an atexit handler), not at the end of
  `train`, so a process may train several runs (a benchmark) in one group. Leaving it while Python is still alive
  matters: gloo's worker threads otherwise free their tensors during finalisation and the process can abort
  ("terminate called without an active exception", SIGABRT) after a run that succeeded.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from genlab.utils import GenlabError, derive_seed, select_device


def world_size_from_environment() -> int:
    """WORLD_SIZE as torchrun and accelerate launch set it (1 when unset)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise GenlabError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


@dataclass
class Distributed:
    """This process's place among the ranks; `accelerator` is None for a single process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    accelerator: Any = field(default=None, repr=False)

    @staticmethod
    def from_environment(device_name: str = "auto") -> Distributed:
        """One process: the device `device_name` picks. Several (WORLD_SIZE > 1): an Accelerator on each rank's
        device (cuda:LOCAL_RANK with GPUs, else the CPU); `device_name` "cpu" keeps a GPU machine on gloo/CPU."""
        world_size = world_size_from_environment()
        if world_size <= 1:
            return Distributed(select_device(device_name))
        try:
            from accelerate import Accelerator
        except ImportError:
            raise GenlabError(
                f"this run was launched with WORLD_SIZE={world_size}: training in several processes needs "
                "Hugging Face Accelerate (pip install 'genlab[distributed]')"
            ) from None
        if device_name not in ("auto", "cpu", "cuda"):
            raise GenlabError(
                f"train.device={device_name!r}: in a {world_size}-process run each rank picks its own device; "
                "use auto, cuda or cpu"
            )
        # Mixed precision stays genlab's own (Runtime.autocast), so Accelerate is asked for none.
        accelerator = Accelerator(cpu=device_name == "cpu" or not torch.cuda.is_available(), mixed_precision="no")
        atexit.unregister(leave_process_group)  # registered once, however many runs this process trains
        atexit.register(leave_process_group)
        return Distributed(
            accelerator.device, accelerator.process_index, accelerator.num_processes, accelerator=accelerator
        )

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes."""
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world_size > 1

    # --- data --------------------------------------------------------------------------------------------------
    def local_batch_size(self, global_batch_size: int) -> int:
        """Rows of each step's batch this rank trains on; the global batch must split evenly."""
        if global_batch_size % self.world_size:
            raise GenlabError(
                f"train.batch_size={global_batch_size} is the global batch and must split evenly over the "
                f"{self.world_size} processes (use a multiple of {self.world_size})"
            )
        return global_batch_size // self.world_size

    def shard(self, batch: dict[str, torch.Tensor], global_batch_size: int) -> dict[str, torch.Tensor]:
        """This rank's rows of a global batch (every field: paired, unpaired and labelled batches alike)."""
        if not self.several:
            return batch
        size = self.local_batch_size(global_batch_size)
        return {key: value[self.rank * size : (self.rank + 1) * size] for key, value in batch.items()}

    def seed_rank(self, seed: int, step: int) -> None:
        """Give ranks > 0 their own noise stream (diffusion timesteps, dropout) after the identical initialisation;
        rank 0 keeps the stream a single process has (and saves in checkpoints). Seeded by (seed, step, rank), so
        a resumed run re-derives it."""
        if self.several and self.rank > 0:
            torch.manual_seed(derive_seed(seed, step, self.rank) % 2**63)

    # --- synchronisation ---------------------------------------------------------------------------------------
    def sync_gradients(self, parameters: list[nn.Parameter]) -> None:
        """Average the gradients of `parameters` across ranks, in place: one flat all-reduce (Accelerate's
        `reduce`) instead of one per tensor. Called by GenerativeModel.optimize after backward (on fp16's scaled
        gradients, so every rank's GradScaler sees the same inf/NaN and skips the same steps)."""
        if not self.several:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat = self.accelerator.reduce(flat, reduction="mean")
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (after set-up: identical starts whatever the seed)."""
        if not self.several:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def broadcast_norm_statistics(self, model: nn.Module) -> None:
        """BatchNorm running statistics from rank 0 (each rank saw its own shard), as DDP's broadcast_buffers."""
        if not self.several:
            return
        import torch.distributed as dist

        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                for buffer in (module.running_mean, module.running_var):
                    if buffer is not None:
                        dist.broadcast(buffer, src=0)

    def mean_losses(self, losses: dict[str, float]) -> dict[str, float]:
        """The losses averaged over ranks (what metrics.csv logs); a NaN on any rank is a NaN on all."""
        if not self.several or not losses:
            return losses
        values = torch.tensor(list(losses.values()), dtype=torch.float64, device=self.device)
        values = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(losses, values.tolist()))

    def all_agree(self, flag: bool) -> bool:
        """True only when `flag` is true on every rank (keep training while every rank wants to)."""
        if not self.several:
            return flag
        value = torch.tensor([0.0 if flag else 1.0], device=self.device)
        return float(self.accelerator.reduce(value, reduction="sum")) == 0.0


def leave_process_group() -> None:
    """Destroy the default process group, if one is open (run at interpreter exit; see the module's "exit")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
