"""Training curves: the losses of one or more runs over steps, read from RUN/metrics.csv, as one PNG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from genlab.train.logging import read_metrics
from genlab.utils import GenlabError, atomic_path

# Columns of metrics.csv that are bookkeeping, not losses.
NOT_LOSSES = ("step", "elapsed_s", "images_per_s")


def plot_curves(
    run_dirs: Sequence[str | Path], out_path: str | Path, names: Sequence[str] | None = None
) -> Path:
    """Plot every loss column of each run's metrics.csv against `step`: one panel per loss key, the runs
    overlaid (labelled by `names`, default the folder names). A panel uses a log y axis when all its values are
    positive and span more than 10x; steps where a run did not log a key are gaps. Writes `out_path` (PNG).

    >>> plot_curves(["runs/p2p", "runs/cddim"], "curves.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    names = list(names) if names is not None else [run_dir.name for run_dir in run_dirs]
    if len(names) != len(run_dirs):
        raise GenlabError(f"plot: {len(names)} names for {len(run_dirs)} runs")
    logs = {}
    for name, run_dir in zip(names, run_dirs):
        path = run_dir / "metrics.csv"
        if not path.is_file():
            raise GenlabError(f"{run_dir}: no metrics.csv (not a genlab run, or it has not logged yet)")
        logs[name] = read_metrics(path)
    keys = list(dict.fromkeys(key for log in logs.values() for key in log if key not in NOT_LOSSES))
    if not keys:
        raise GenlabError(f"plot: no losses logged in {', '.join(map(str, run_dirs))}")
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for axis, key in zip(axes.flat, keys):
        values = []
        for name, log in logs.items():
            if key in log:
                axis.plot(log["step"], log[key], label=name, linewidth=1.2)
                values += log[key]
        if wants_log_scale(values):
            axis.set_yscale("log")
        axis.set_title(key, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(True, alpha=0.3)
        if len(logs) > 1:
            axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    figure.tight_layout()
    out_path = Path(out_path)
    with atomic_path(out_path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
    return out_path


def wants_log_scale(values: Sequence[float]) -> bool:
    """A log y axis when every value is positive and they span more than 10x (NaN gaps ignored)."""
    finite = [value for value in values if math.isfinite(value)]
    return bool(finite) and min(finite) > 0 and max(finite) > 10 * min(finite)
