"""The comparison scripts run and say what they compared: same values for torchmetrics, both layouts for diffusers."""

import pytest

from genlab.bench import compare_diffusers, compare_torchmetrics


def test_torchmetrics_comparison_finds_the_same_values(capsys):
    pytest.importorskip("torchmetrics")
    assert compare_torchmetrics.main(["--images", "4", "--size", "32", "--rounds", "1"]) == 0  # 1 if they differ
    out = capsys.readouterr().out
    ssim_line = next(line for line in out.splitlines() if line.startswith("SSIM:"))
    assert "same value" in ssim_line  # border="reflect" against torchmetrics' definition
    assert "another border convention" in out  # the default, scikit-image's, is reported apart


@pytest.mark.parametrize("flags", [[], ["--channels-last", "--fused-both"]])
def test_diffusers_comparison_runs_in_both_layouts(capsys, flags):
    pytest.importorskip("diffusers")
    args = ["--size", "16", "--batch", "2", "--ddim-steps", "2", "--train-steps", "1", "--rounds", "1", *flags]
    assert compare_diffusers.main(args) == 0
    out = capsys.readouterr().out
    assert "genlab fused" in out and ("channels_last" in out) == bool(flags)
    assert "diffusers fused" in out if flags else "diffusers torch default" in out
    assert out.count("x diffusers'") == 2  # the training and the sampling ratio


def test_diffusers_sampling_comparison_over_layouts_and_precisions(capsys):
    pytest.importorskip("diffusers")
    args = ["--layouts", "--size", "16", "--batch", "2", "--ddim-steps", "2", "--rounds", "1"]
    assert compare_diffusers.main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "images/s" in line]
    names = [" ".join(row.split()[:3]) for row in rows]
    assert names == ["genlab NCHW fp32", "genlab NCHW bf16", "genlab channels_last fp32", "genlab channels_last bf16",
                     "diffusers NCHW fp32", "diffusers channels_last fp32"]
    assert all(row.count("x diffusers") == 2 for row in rows)
    assert "1.00x diffusers NCHW's" in rows[4] and "1.00x diffusers channels_last's" in rows[5]  # themselves
