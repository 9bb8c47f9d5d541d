"""Training curves from metrics.csv: one panel per loss, runs overlaid, NaN gaps, log scale by span."""

import math

import pytest
from PIL import Image

from genlab.cli import main
from genlab.plot import plot_curves, wants_log_scale
from genlab.utils import GenlabError


def _metrics(run, rows):
    run.mkdir(parents=True)
    keys = list(dict.fromkeys(key for row in rows for key in row))
    lines = [",".join(keys)] + [",".join(str(row.get(key, "")) for key in keys) for row in rows]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_plot_two_runs_with_gaps(tmp_path, capsys):
    _metrics(tmp_path / "a", [{"step": s, "elapsed_s": s, "loss_g": 10 / s, "loss_d": 0.5} for s in range(1, 20)])
    # run b logs loss_ae only in its first stage: the other rows leave it empty (NaN)
    _metrics(tmp_path / "b", [{"step": s, "loss_g": 1 / s, "loss_ae": (1.0 if s < 5 else "")} for s in range(1, 10)])
    out = plot_curves([tmp_path / "a", tmp_path / "b"], tmp_path / "curves.png", names=["pix2pix", "cddim"])
    assert Image.open(out).size[0] >= 3 * 400  # three loss panels side by side
    assert main(["plot", str(tmp_path / "a"), "--out", str(tmp_path / "cli.png")]) == 0
    assert (tmp_path / "cli.png").is_file() and "wrote" in capsys.readouterr().out
    with pytest.raises(GenlabError, match="no metrics.csv"):
        plot_curves([tmp_path / "missing"], tmp_path / "x.png")


def test_log_scale_only_for_positive_values_spanning_ten_times():
    assert wants_log_scale([100.0, math.nan, 1.0])
    assert not wants_log_scale([2.0, 1.0])
    assert not wants_log_scale([100.0, -1.0])
    assert not wants_log_scale([math.nan])
