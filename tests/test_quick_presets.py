"""The presets' headline claims, end to end. Slow (minutes on 2 CPU cores): run with `-m slow`."""

import pytest

from genlab.evaluate import EvalOptions, evaluate_run
from genlab.runs import build_run_config
from genlab.train.trainer import train


@pytest.mark.slow
def test_quick_pix2pix_beats_the_baselines_on_facades_synth(tmp_path):
    config = build_run_config("pix2pix", "quick", {"data.task": "facades-synth"})
    train(config, tmp_path / "p2p", progress=False)
    options = EvalOptions(features=(), lpips=False, diversity_inputs=0, baselines=True)
    results = evaluate_run(tmp_path / "p2p", options, device="cpu")
    model = results["metrics"]
    for baseline in results["baselines"].values():
        assert model["ssim"]["value"] > baseline["ssim"]["value"]
        assert model["psnr"]["value"] > baseline["psnr"]["value"]
