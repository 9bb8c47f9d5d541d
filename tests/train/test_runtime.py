import pytest
import torch

from genlab.models.base import Runtime
from genlab.train.distributed import Distributed
from genlab.utils import GenlabError, select_device


def test_cpu_runs_fp32_by_default_bf16_on_request_and_fp16_needs_cuda():
    cpu = torch.device("cpu")
    assert Runtime.for_device(cpu, "auto").autocast_dtype is None
    assert Runtime.for_device(cpu, "fp32").autocast_dtype is None
    assert Runtime.for_device(cpu, "bf16").autocast_dtype is torch.bfloat16
    with pytest.raises(GenlabError, match="train.precision=fp16 needs a CUDA device"):
        Runtime.for_device(cpu, "fp16")


def test_device_selection_errors_name_the_value():
    assert select_device("cpu").type == "cpu"
    with pytest.raises(GenlabError, match="unknown device 'gpu0'"):
        select_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(GenlabError, match="CUDA is not available"):
            select_device("cuda")


def test_a_single_process_needs_no_accelerate(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    dist = Distributed.from_environment("cpu")
    assert (dist.rank, dist.world_size, dist.accelerator, dist.is_main) == (0, 1, None, True)
    assert dist.local_batch_size(3) == 3
