"""Loading trained runs for use from Python and by the evaluate/translate/sample commands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genlab import checkpoint as ckpt
from genlab.config import RunConfig
from genlab.data.tasks import Task, TaskSpec, get_task
from genlab.models.base import GenerativeModel, Runtime, get_model_class
from genlab.runs import run_config_from_dict
from genlab.utils import select_device


@dataclass
class LoadedRun:
    """A trained model with the config and task it was trained with."""

    run_dir: Path
    config: RunConfig
    model: GenerativeModel
    step: int

    def task(self) -> Task:
        return get_task(self.config.data)


def load_run(run_dir: str | Path, device: str = "auto", checkpoint: str | None = None) -> LoadedRun:
    """Rebuild a run's model from its checkpoint alone (the config is stored inside it), in eval mode."""
    run_dir = ckpt.require_run_dir(run_dir)
    path = Path(checkpoint) if checkpoint else ckpt.checkpoint_dir(run_dir) / ckpt.LAST
    document = ckpt.load_checkpoint(path)
    config = run_config_from_dict(document["config"], source=f"{path} (stored config)")
    spec = TaskSpec.from_dict(document["spec"]) if "spec" in document else get_task(config.data).spec
    model = get_model_class(config.model).build(config.net, spec)
    model.load_training_state(document["state"], weights_only=True)
    model.attach(Runtime.for_device(select_device(device), "fp32"))
    model.eval()
    return LoadedRun(run_dir, config, model, int(document.get("step", 0)))
