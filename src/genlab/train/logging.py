"""Training metrics to RUN/metrics.csv (and TensorBoard when it is installed)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from genlab.utils import atomic_path


class MetricsLog:
    """Appends rows of {step, elapsed_s, images_per_s, losses...} to a CSV. A key no earlier row had (ldm's
    diffusion losses after its autoencoder stage) widens the header: the file is rewritten once with the new
    column, earlier rows leaving it empty, so no logged value is ever dropped."""

    def __init__(self, path: Path, tensorboard_dir: Path | None = None) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.exists():
            with open(path, newline="") as handle:
                header = next(csv.reader(handle), None)
            self.columns = header or None
        self._writer = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(tensorboard_dir))
            except ImportError:  # TensorBoard is optional
                self._writer = None

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
        if self._writer is not None:
            for key, value in row.items():
                if key != "step":
                    self._writer.add_scalar(key, value, int(row["step"]))

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
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: Path) -> dict[str, list[float]]:
    """metrics.csv as columns of floats aligned with `step` (NaN where a row did not log that key)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: [float(row[key]) if row.get(key) not in ("", None) else math.nan for row in rows] for key in rows[0]}
