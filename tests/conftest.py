"""Shared fixtures: a tiny in-memory paired task, a test-only model family (an L1 U-Net regressor), and a
trainer of tiny cddim runs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from genlab.data import tasks
from genlab.data.tasks import ImageSplit, Task, TaskEntry, TaskSpec
from genlab.models.base import MODELS, Abilities, GenerativeModel
from genlab.nn.unet import UNetGenerator, unet_depth

torch.set_num_threads(1)  # 2 cores are shared by the whole test run; keeps timings stable too

# Tests never touch the user's cache and never download: every weight URL points at a closed local port.
_TEST_CACHE = tempfile.mkdtemp(prefix="genlab-test-cache-")
atexit.register(shutil.rmtree, _TEST_CACHE, True)
os.environ["GENLAB_CACHE"] = _TEST_CACHE
os.environ["TORCH_HOME"] = os.path.join(_TEST_CACHE, "torch")
os.environ["GENLAB_WEIGHTS_MIRROR"] = "http://127.0.0.1:9"
os.environ["GENLAB_INCEPTION_URL"] = "http://127.0.0.1:9/pt_inception.pth"
for _variable in ("GENLAB_INCEPTION_WEIGHTS", "GENLAB_LPIPS_WEIGHTS_DIR", "GENLAB_DATA"):
    os.environ.pop(_variable, None)


def make_toy_split(count: int, size: int, seed: int) -> ImageSplit:
    """Random coloured blocks as sources; targets are the colour-inverted source (a learnable mapping)."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (count, 3, 4, 4), generator=generator, dtype=torch.uint8)
    source = blocks.repeat_interleave(size // 4, dim=2).repeat_interleave(size // 4, dim=3)
    return ImageSplit({"source": source, "target": 255 - source}, [f"toy_{i:03d}" for i in range(count)])


def build_toy_task(config) -> Task:
    size = config.image_size
    spec = TaskSpec("toy-paired", "paired", size, 3, 3)
    counts = {"train": 24, "val": 4, "test": 6}
    offsets = {"train": 0, "val": 1, "test": 2}
    return Task(spec, lambda split: make_toy_split(counts[split], size, offsets[split]), config)


@pytest.fixture
def toy_task(monkeypatch):
    """Register `toy-paired` (16 px by default in the toy presets) for the duration of a test."""
    tasks.register_task(TaskEntry("toy-paired", "paired", "test task", build_toy_task, lambda config: True, None))
    yield "toy-paired"
    tasks.unregister_task("toy-paired")


@dataclass
class L1UNetConfig:
    width: int = 8
    lr: float = 1e-3


class L1UNet(GenerativeModel):
    """A second family used only in tests: a U-Net regressed with L1. It touches nothing in the trainer."""

    name = "l1-unet"
    config_class = L1UNetConfig
    task_kinds = frozenset({"paired"})
    abilities = Abilities(translates=True)
    presets = {"quick": {"data.image_size": 16, "train.batch_size": 4, "train.steps": 20}}

    def __init__(self, config: L1UNetConfig, spec) -> None:
        super().__init__(config, spec)
        self.net = UNetGenerator(
            spec.source_channels,
            spec.target_channels,
            unet_depth(spec.image_size),
            width=config.width,
            dropout_blocks=0,
        )
        self.optimizers = {"net": torch.optim.Adam(self.net.parameters(), lr=config.lr)}

    def training_step(self, batch):
        self.train()
        with self.autocast():
            loss = F.l1_loss(self.net(batch["source"]).float(), batch["target"])
        self.optimize(loss, "net")
        return {"loss_l1": loss.item()}

    @torch.no_grad()
    def translate_batch(self, source, generator=None, **options):
        self.eval()
        return self.net(source.to(self.device)).float()


@pytest.fixture
def l1_unet(monkeypatch):
    monkeypatch.setitem(MODELS, "l1-unet", L1UNet)
    return "l1-unet"


@pytest.fixture(scope="session")
def tiny_cddim():
    """train(run, *overrides, steps=4): a tiny facades-synth cddim run at 16 px that keeps a checkpoint per step
    (the diffusion sweeps and probes read them); returns its folder. Later overrides win over earlier ones. The
    value prior, which cddim's quick preset turns on at 32 px and below, is off unless an override turns it on
    (the value-prior probe reads a run trained without it)."""
    from genlab.runs import build_run_config
    from genlab.train.trainer import train

    def train_tiny(run, *overrides: str, steps: int = 4):
        config = build_run_config(
            "cddim", "quick", {"data.task": "facades-synth", "data.image_size": 16, "train.steps": steps,
                               "train.batch_size": 2},
            ["net.base_width=8", "net.channel_mults=[1,2]", "net.timesteps=20", "net.sample_steps=3",
             "train.checkpoint_every=1", "train.keep_checkpoints=100", "train.preview_count=2",
             "net.value_prior=false", *overrides],
        )
        train(config, run, progress=False)
        return run

    return train_tiny
