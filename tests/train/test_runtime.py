import pytest
import torch

from genlab.models.base import Runtime
from genlab.train.distributed import require_single_process
from genlab.utils import GenlabError, select_device


def test_cpu_runs_in_fp32_and_mixed_precision_needs_cuda():
    cpu = torch.device("cpu")
    assert Runtime.for_device(cpu, "auto").autocast_dtype is None
    assert Runtime.for_device(cpu, "fp32").autocast_dtype is None
    with pytest.raises(GenlabError, match="train.precision=bf16 needs a CUDA device"):
        Runtime.for_device(cpu, "bf16")


def test_device_selection_errors_name_the_value():
    assert select_device("cpu").type == "cpu"
    with pytest.raises(GenlabError, match="unknown device 'gpu0'"):
        select_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(GenlabError, match="CUDA is not available"):
            select_device("cuda")


def test_multi_process_launch_is_refused_clearly(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    require_single_process()
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(GenlabError, match="WORLD_SIZE=4"):
        require_single_process()
