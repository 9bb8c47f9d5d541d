"""Checkpoints: atomic, finite-checked save; safe load (`weights_only=True`); RNG capture; run-directory checks
and the one-writer lock of a run directory."""

from __future__ import annotations

import errno
import math
import os
import pickle
import random
import re
import shutil
import socket
import warnings
from pathlib import Path
from typing import Any

import torch

from genlab import __version__
from genlab.utils import GenlabError, atomic_path

FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
LOCK_FILE = ".lock"


class NonFiniteError(GenlabError):
    """A state holds NaN or Inf values; `names` lists the dotted names of the tensors concerned."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


class DiskWriteError(GenlabError):
    """Writing a checkpoint failed (a full disk, a read-only or vanished folder); the previous file is kept."""


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


def nonfinite_tensors(state: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors (and floats) in a nested dict/list holding NaN or Inf.

    Example: `nonfinite_tensors({"w": torch.tensor([1.0, float("nan")])})` -> `["w"]`.
    """
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            return [] if bool(torch.isfinite(state).all()) else [prefix or "tensor"]
        return []
    if isinstance(state, float):
        return [] if math.isfinite(state) else [prefix or "value"]
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    names: list[str] = []
    for key, value in items:
        names += nonfinite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    return names


def count_tensors(state: Any) -> int:
    """The number of floating-point tensors in a nested dict/list (the denominator of a non-finite report)."""
    if isinstance(state, torch.Tensor):
        return int(state.is_floating_point() or state.is_complex())
    if isinstance(state, dict):
        return sum(count_tensors(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return sum(count_tensors(value) for value in state)
    return 0


def require_finite(state: Any, what: str) -> None:
    """Raise NonFiniteError naming the first non-finite tensor of `state` and how many there are."""
    names = nonfinite_tensors(state)
    if names:
        raise NonFiniteError(
            f"{what}: {len(names)} of {count_tensors(state)} tensors hold NaN or Inf (first: {names[0]})", names
        )


def save_checkpoint(path: str | Path, payload: dict[str, Any], check_finite: bool = True) -> None:
    """Write {format_version, genlab_version, **payload} to a temp file, then rename it over `path`.

    With `check_finite` a payload whose "state" holds NaN or Inf raises NonFiniteError and nothing is written,
    so a checkpoint on disk is always finite. A failed write (full disk...) raises DiskWriteError, one line with
    the path and the space needed and free; the file at `path` is then the previous one, untouched.
    """
    path = Path(path)
    if check_finite:
        require_finite(payload.get("state", payload), f"{path}: not saved")
    document = {"format_version": FORMAT_VERSION, "genlab_version": __version__, **payload}
    try:
        with atomic_path(path) as temporary:
            torch.save(document, temporary)
    except OSError as error:
        raise DiskWriteError(_write_failure(path, document, error)) from None
    except RuntimeError as error:  # torch's zip writer reports a failed write as RuntimeError (iostream error)
        raise DiskWriteError(_write_failure(path, document, error)) from None


def _payload_bytes(state: Any) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_payload_bytes(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_payload_bytes(value) for value in state)
    return 0


def _write_failure(path: Path, document: dict[str, Any], error: BaseException) -> str:
    """One line: what failed, where, the space needed against the space free, and the cause."""
    needed = _payload_bytes(document)
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    code = getattr(error, "errno", None)
    text = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    if code == errno.ENOSPC:
        cause = "no space left on device"
    elif code:
        cause = os.strerror(code)
    elif "iostream" in text:
        cause = f"the write failed, is the disk full? ({text})"
    else:
        cause = text
    return (
        f"could not write checkpoint {path}: {cause} (needs about {needed / 2**20:.1f} MiB, {free}); "
        "the previous checkpoint is kept"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, with clear errors for missing or damaged files."""
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise GenlabError(f"{path}: checkpoint is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # A foreign pickle's header makes torch warn about its protocol before the load fails (or returns
            # something checked below): noise beside genlab's own error, so it is not shown.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            document = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises weights_only=False, which would run the file's code: it is never repeated.
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        if refused:
            raise GenlabError(
                f"{path}: refused: it asks to run Python code ({refused.group(1)}) to load, which genlab never "
                "does; use only checkpoints that genlab wrote"
            ) from None
        raise GenlabError(f"{path}: not a readable genlab checkpoint (damaged, or not a checkpoint)") from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise GenlabError(f"{path}: not a readable genlab checkpoint ({type(error).__name__}: {reason})") from None
    if not isinstance(document, dict) or "format_version" not in document:
        raise GenlabError(f"{path}: not a genlab checkpoint (no format_version)")
    version = document["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise GenlabError(f"{path}: not a genlab checkpoint (format_version {version!r})")
    if version > FORMAT_VERSION:
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
        raise GenlabError(
            f"{run_dir}: the run has no checkpoint yet ({CHECKPOINT_DIR}/{LAST} missing): its set-up did not finish; "
            "run the same command without --resume to start it over"
        )
    return run_dir


def unfinished_setup(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a config.yaml but no checkpoint: a run whose set-up failed before its first save."""
    run_dir = Path(run_dir)
    return (run_dir / CONFIG_FILE).is_file() and not (checkpoint_dir(run_dir) / LAST).is_file()


class RunLock:
    """One writer per run directory: RUN/.lock holds "pid host" of the process training into it.

    Taken atomically (the lock is written under a private name, then hard-linked to .lock, which fails when
    .lock exists), so its content is always complete. A lock of a dead process on this host is stale: it is
    cleared and `stale_message` says so. A live one (or one from another host) is refused naming the pid.
    """

    def __init__(self, path: Path, stale_message: str | None) -> None:
        self.path = path
        self.stale_message = stale_message
        self.owner = _lock_text()

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_FILE
        stale_message = None
        for _ in range(3):
            if _try_link_lock(path):
                return cls(path, stale_message)
            holder = _read_lock(path)
            if holder is None:
                continue  # released between our attempt and the read: try again
            pid, host = holder
            if host != socket.gethostname():
                raise GenlabError(
                    f"{run_dir}: another genlab process (pid {pid} on {host}) is training into this run; "
                    f"if it is gone, delete {path}"
                )
            if _alive(pid):
                raise GenlabError(
                    f"{run_dir}: another genlab process (pid {pid}) is already training into this run; "
                    "wait for it or choose another --out"
                )
            path.unlink(missing_ok=True)
            stale_message = f"{run_dir}: cleared the stale lock of process {pid}, which is no longer running"
        raise GenlabError(f"{run_dir}: could not take the lock {path}")

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        try:
            if self.path.read_text() == self.owner:
                self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_text() -> str:
    return f"{os.getpid()} {socket.gethostname()}\n"


def _try_link_lock(path: Path) -> bool:
    private = path.with_name(f"{LOCK_FILE}.{os.getpid()}.{random.getrandbits(32):08x}")
    private.write_text(_lock_text())
    try:
        os.link(private, path)
        return True
    except FileExistsError:
        return False
    finally:
        private.unlink(missing_ok=True)


def _read_lock(path: Path) -> tuple[int, str] | None:
    try:
        pid, host = path.read_text().split()
        return int(pid), host
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return -1, socket.gethostname()  # unreadable: no live process can own it


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    """A killed child not yet reaped by its parent still answers kill(pid, 0); /proc tells it is a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] != "Z"


def numbered_checkpoint(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:07d}.pt"


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete the oldest numbered checkpoints beyond `keep` (last.pt is never touched)."""
    numbered = sorted(checkpoint_dir(run_dir).glob("step_*.pt"))
    for old in numbered[: max(0, len(numbered) - keep)]:
        old.unlink(missing_ok=True)
