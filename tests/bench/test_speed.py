"""`genlab speed`: the report's fields, FLOPs counted as closed forms say, and --json for scripts."""

import json

import torch

from genlab.bench.speed import count_flops, format_report, measure, speed_config
from genlab.cli import main


def test_flops_of_a_matmul_and_a_linear_backward_are_the_closed_forms():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    layer = torch.nn.Linear(16, 4, bias=False)
    # forward 2mnk, backward 2mnk for the weight's gradient (the input needs none)
    assert count_flops(lambda: layer(a).sum().backward()) == 2 * 2 * 8 * 16 * 4
    a.requires_grad_(True)  # and 2mnk more for the input's
    assert count_flops(lambda: layer(a).sum().backward()) == 3 * 2 * 8 * 16 * 4


def test_speed_reports_the_step_its_flops_and_the_peak(capsys):
    config = speed_config("pix2pix", size=16, batch_size=2, assignments=["net.width=4", "train.device=cpu"])
    report = measure(config, steps=2, warmup=1, inference_repeats=1, peak_size=128)
    assert report.step_seconds > 0 and report.images_per_second > 0
    assert report.flops_per_step > 0 and report.achieved_gflops > 0 and report.peak_fp32_gflops > 0
    assert report.inference == "translate" and report.inference_flops_per_image > 0
    assert report.data_to_step_ratio > 0 and report.precision == "fp32"
    assert "GFLOP/s achieved" in format_report(report)

    code = main(["speed", "ddpm", "--size", "8", "--batch-size", "2", "--steps", "1", "--warmup", "0",
                 "--sample-steps", "2", "--peak-size", "64", "--set", "net.base_width=8", "--set", "train.device=cpu",
                 "--precision", "bf16", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == "ddpm" and printed["precision"] == "bf16" and printed["inference"] == "sample"
    assert printed["flops_per_step"] > 0 and printed["peak_bf16_gflops"] > 0
