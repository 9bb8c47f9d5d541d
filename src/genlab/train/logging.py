"""Training metrics to RUN/metrics.csv (and TensorBoard when it is installed)."""

from __future__ import annotations

import csv
from pathlib import Path


class MetricsLog:
    """Appends rows of {step, elapsed_s, images_per_s, losses...} to a CSV; columns fixed by the first row."""

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
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        if self._writer is not None:
            for key, value in row.items():
                if key != "step":
                    self._writer.add_scalar(key, value, int(row["step"]))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: Path) -> dict[str, list[float]]:
    """metrics.csv as columns of floats (for curves and tests)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: [float(row[key]) for row in rows if row[key] != ""] for key in rows[0]}
