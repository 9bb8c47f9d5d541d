"""Training metrics: always RUN/metrics.csv, plus TensorBoard or Weights & Biases (offline) when asked for."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from torch import Tensor

from genlab.utils import GenlabError, atomic_path

LOGGERS = ("csv", "tensorboard", "wandb")  # the choices of train.logger (config.Logger)


def scalar_tag(key: str) -> str:
    """The grouped name of a metrics.csv column for TensorBoard / W&B: one prefix per kind of value.

    >>> [scalar_tag(key) for key in ("loss_g", "loss", "ae_loss", "images_per_s", "elapsed_s", "kl")]
    ['loss/g', 'loss/total', 'loss/ae', 'speed/images_per_s', 'time/elapsed_s', 'train/kl']
    """
    if key == "loss":
        return "loss/total"
    if key.startswith("loss_"):
        return f"loss/{key.removeprefix('loss_')}"
    if key.endswith("_loss"):
        return f"loss/{key.removesuffix('_loss')}"
    if key == "images_per_s":
        return "speed/images_per_s"
    if key == "elapsed_s":
        return "time/elapsed_s"
    return f"train/{key}"


class _TensorBoard:
    """Scalars and preview images as TensorBoard event files in RUN/tensorboard/."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise GenlabError(
                "train.logger=tensorboard needs the tensorboard package: pip install tensorboard "
                "(or use --logger csv)"
            ) from error
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        self.writer.add_image(tag, image, step, dataformats="CHW")

    def close(self) -> None:
        self.writer.close()


class _WandB:
    """Scalars and preview images to a Weights & Biases run kept offline in RUN/wandb/ (`wandb sync` uploads it;
    WANDB_MODE=online in the environment logs online instead)."""

    def __init__(self, run_dir: Path) -> None:
        try:
            import wandb
        except ImportError as error:
            raise GenlabError(
                "train.logger=wandb needs the wandb package: pip install wandb (or use --logger csv / tensorboard)"
            ) from error
        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE", "offline")
        self.run = wandb.init(dir=str(run_dir), mode=mode, name=run_dir.name)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        self.run.log({tag: self.wandb.Image(image.permute(1, 2, 0).numpy())}, step=step)  # (H, W, C)

    def close(self) -> None:
        self.run.finish()


class MetricsLog:
    """Appends rows of {step, elapsed_s, images_per_s, losses...} to a CSV. A key no earlier row had (ldm's
    diffusion losses after its autoencoder stage) widens the header: the file is rewritten once with the new
    column, earlier rows leaving it empty, so no logged value is ever dropped.

    `logger` "tensorboard" or "wandb" also sends each row (under `scalar_tag` names, e.g. loss/g) and the
    preview grids (`log_image`) there, the files going under `run_dir` (default: the CSV's folder). A logger
    whose package is missing is a GenlabError naming the pip install.
    """

    def __init__(self, path: Path, logger: str = "csv", run_dir: Path | None = None) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.exists():
            with open(path, newline="") as handle:
                header = next(csv.reader(handle), None)
            self.columns = header or None
        if logger not in LOGGERS:
            raise GenlabError(f"unknown logger {logger!r} (choose from {', '.join(LOGGERS)})")
        run_dir = path.parent if run_dir is None else run_dir
        sinks = {"tensorboard": _TensorBoard, "wandb": _WandB}
        self._sink = sinks[logger](run_dir) if logger in sinks else None
        self.sends_images = self._sink is not None  # whether log_image goes anywhere (callers skip the grid if not)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (a run killed after logging but before its checkpoint, then resumed)."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [row for row in rows if int(float(row["step"])) <= step]
        if len(kept) != len(rows) and self.columns:
            with open(self.path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(kept)

    def write(self, row: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = list(row)
            with open(self.path, "w", newline="") as handle:
                csv.writer(handle).writerow(self.columns)
        new = [key for key in row if key not in self.columns]
        if new:
            self._widen(new)
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(row)
        if self._sink is not None:
            scalars = {scalar_tag(key): value for key, value in row.items() if key != "step"}
            self._sink.scalars(scalars, int(row["step"]))

    def log_image(self, tag: str, image: Tensor, step: int) -> None:
        """Send a uint8 (3, H, W) image (a preview grid) to TensorBoard / W&B; nothing for the CSV alone."""
        if self._sink is not None:
            self._sink.image(tag, image, step)

    def _widen(self, new_columns: list[str]) -> None:
        """Rewrite the CSV (atomically) with extra columns; earlier rows get empty cells there."""
        with open(self.path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        self.columns = [*self.columns, *new_columns]
        with atomic_path(self.path) as temporary, open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


def read_metrics(path: Path) -> dict[str, list[float]]:
    """metrics.csv as columns of floats aligned with `step` (NaN where a row did not log that key)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: [float(row[key]) if row.get(key) not in ("", None) else math.nan for row in rows] for key in rows[0]}
