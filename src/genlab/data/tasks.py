"""The task registry: the built-in tasks and any a user registers, looked up by name or `folder:PATH`.

What a task is (its spec, splits and training batches) lives in `genlab.data.base`; its names are re-exported
here, where most callers look for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from genlab.config import DataConfig
from genlab.data import download, facades_synth, fashion_mnist, folders
from genlab.data.base import (  # noqa: F401  (re-exported: the names callers import from the registry)
    FIELDS,
    SPLITS,
    ImageSplit,
    Task,
    TaskKind,
    TaskSpec,
    epoch_batch_indices,
    label_map_legend,
)
from genlab.utils import GenlabError


@dataclass(frozen=True)
class TaskEntry:
    """A registered task: its kind, a one-line description, and how to build it from a DataConfig."""

    name: str
    kind: TaskKind
    description: str
    build: Callable[[DataConfig], Task]
    available: Callable[[DataConfig], bool]
    native_size: int | None = None  # the size of the source images, None if any size


# The built-in tasks; `register_task` adds more.
BUILTIN_TASKS = (
    TaskEntry(
        "facades-synth",
        "paired",
        "procedural building facades: 12-class label map -> photo-like rendering (embedded, any size)",
        facades_synth.build_task,
        lambda config: True,
        None,
    ),
    TaskEntry(
        "facades",
        "paired",
        "pix2pix CMP facades: label map -> photo, 400 train pairs (downloaded once, then cached)",
        download.build_facades_task,
        download.facades_available,
        256,
    ),
    TaskEntry(
        "fashion-mnist",
        "labelled",
        "Fashion-MNIST garments, 10 classes (IDX files; Debian package dataset-fashion-mnist)",
        fashion_mnist.build_fashion_mnist_task,
        fashion_mnist.available,
        28,
    ),
    TaskEntry(
        "edges2fashion",
        "paired",
        "Fashion-MNIST edge map -> garment (IDX files; Debian package dataset-fashion-mnist)",
        fashion_mnist.build_edges2fashion_task,
        fashion_mnist.available,
        28,
    ),
    TaskEntry(
        "edges2fashion-unpaired",
        "unpaired",
        "edges2fashion with the pairing removed: edges and garments from disjoint halves (for CycleGAN)",
        fashion_mnist.build_edges2fashion_unpaired_task,
        fashion_mnist.available,
        28,
    ),
)
TASKS: dict[str, TaskEntry] = {entry.name: entry for entry in BUILTIN_TASKS}


def register_task(entry: TaskEntry, replace: bool = False) -> TaskEntry:
    """Add a task to the registry (as `register_model` adds a family); a taken name is an error unless `replace`."""
    if entry.name in TASKS and not replace:
        raise GenlabError(f"task {entry.name!r} is already registered (pass replace=True to replace it)")
    if entry.name.startswith("folder:"):
        raise GenlabError(f"task names may not start with 'folder:' (that prefix names folders): {entry.name!r}")
    TASKS[entry.name] = entry
    return entry


def unregister_task(name: str) -> None:
    """Remove a task added with `register_task` (tests use it to clean up)."""
    TASKS.pop(name, None)


def task_entries() -> dict[str, TaskEntry]:
    """Every registered task by name (folder:PATH tasks are not listed: they are any folder)."""
    return dict(TASKS)


def get_task(config: DataConfig) -> Task:
    """Build the task named by `config.task`: a registered name or `folder:PATH`."""
    name = config.task
    if name.startswith("folder:"):
        return folders.build_folder_task(config)
    entries = task_entries()
    if name not in entries:
        raise GenlabError(f"unknown task {name!r} (valid: {', '.join(entries)}, or folder:PATH)")
    return entries[name].build(config)


def check_task_name(name: str) -> str:
    """Check that `name` is a registered task or `folder:PATH` (an existing folder) without loading any data, so
    `genlab train --dry-run` refuses an unknown task as a real run would; returns the name.

    >>> check_task_name("facades-synth")
    'facades-synth'
    """
    if name.startswith("folder:"):
        from pathlib import Path

        folder = Path(name[len("folder:") :]).expanduser()
        if not folder.is_dir():
            raise GenlabError(f"data.task {name!r}: {folder} is not a folder")
        return name
    entries = task_entries()
    if name not in entries:
        raise GenlabError(f"unknown task {name!r} (valid: {', '.join(entries)}, or folder:PATH)")
    return name
