"""Checkpoints: atomic save, safe load (`weights_only=True`), RNG capture, and run-directory checks."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from genlab import __version__
from genlab.utils import GenlabError, atomic_path

FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


def capture_rng() -> dict[str, Any]:
    """The random states a training step consumes (torch CPU and CUDA, Python); data order needs none."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(item) for item in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write {format_version, genlab_version, **payload} to a temp file, then rename it over `path`."""
    document = {"format_version": FORMAT_VERSION, "genlab_version": __version__, **payload}
    with atomic_path(path) as temporary:
        torch.save(document, temporary)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, with clear errors for missing or damaged files."""
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise GenlabError(f"{path}: checkpoint is empty (0 bytes)")
    try:
        document = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise GenlabError(f"{path}: not a readable genlab checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(document, dict) or "format_version" not in document:
        raise GenlabError(f"{path}: not a genlab checkpoint (no format_version)")
    if document["format_version"] > FORMAT_VERSION:
        raise GenlabError(
            f"{path}: checkpoint format {document['format_version']} is newer than this genlab "
            f"({__version__}, format {FORMAT_VERSION}); upgrade genlab"
        )
    return document


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def require_run_dir(run_dir: str | Path) -> Path:
    """Check that `run_dir` holds a genlab run (config.yaml and checkpoints/last.pt); name what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GenlabError(f"{run_dir}: no such run directory")
    if not (run_dir / CONFIG_FILE).is_file():
        raise GenlabError(f"{run_dir}: not a genlab run directory (no {CONFIG_FILE})")
    if not (checkpoint_dir(run_dir) / LAST).is_file():
        raise GenlabError(f"{run_dir}: the run has no checkpoint yet ({CHECKPOINT_DIR}/{LAST} missing)")
    return run_dir


def numbered_checkpoint(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:07d}.pt"


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete the oldest numbered checkpoints beyond `keep` (last.pt is never touched)."""
    numbered = sorted(checkpoint_dir(run_dir).glob("step_*.pt"))
    for old in numbered[: max(0, len(numbered) - keep)]:
        old.unlink(missing_ok=True)
