"""The streaming metrics on torchmetrics' Metric base: equal to the pure functions, alone and synced over processes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torchmetrics import Metric

from genlab.metrics.distribution import FeatureStatistics, fid, kid, merge_statistics
from genlab.metrics.pixel import MS_SSIM_MIN_SIZE, ms_ssim, psnr, ssim
from genlab.metrics.streaming import FID, KID, MSSSIM, PSNR, SSIM
from genlab.utils import GenlabError


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=generator, dtype=torch.float64) / d**0.5  # correlated features
    return torch.randn(n, d, generator=generator, dtype=torch.float64) @ mixing + shift


def _pair(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth targets and noisy, clipped copies of them (N, 3, size, size) in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.nn.functional.avg_pool2d(torch.rand(n, 3, size + 4, size + 4, generator=generator), 5, 1)
    pred = (target + 0.1 * torch.randn(target.shape, generator=generator)).clamp(0.0, 1.0)
    return pred, target


# ------------------------------------------------------------------------------------------- pixel


@pytest.mark.parametrize(
    ("metric_class", "function", "size"),
    [(PSNR, psnr, 32), (SSIM, ssim, 32), (MSSSIM, ms_ssim, MS_SSIM_MIN_SIZE)],
)
def test_pixel_classes_are_torchmetrics_metrics_that_match_the_functions(metric_class, function, size: int) -> None:
    pred, target = _pair(5, size)
    metric = metric_class(data_range=1.0, keep_per_image=True)
    assert isinstance(metric, Metric)
    for start in range(0, 5, 2):  # batches of 2, 2 and 1
        metric.update(pred[start : start + 2], target[start : start + 2])
    expected = function(pred, target, data_range=1.0, reduction="none").double()
    assert int(metric.count) == 5
    torch.testing.assert_close(metric.compute_per_image(), expected)
    torch.testing.assert_close(metric.compute(), expected.mean())
    assert metric.compute().dtype == torch.float64
    metric.reset()
    with pytest.raises(GenlabError, match="before any update"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics' own "compute before update" warning
        metric.compute()


def test_ssim_class_takes_the_border_convention() -> None:
    pred, target = _pair(3, 32)
    for border in ("valid", "reflect"):
        metric = SSIM(data_range=1.0, border=border)
        metric.update(pred, target)
        torch.testing.assert_close(metric.compute(), ssim(pred, target, 1.0, border=border).double())


def test_per_image_values_need_keep_per_image() -> None:
    metric = SSIM(data_range=1.0)
    metric.update(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
    with pytest.raises(GenlabError, match="keep_per_image=True"):
        metric.compute_per_image()


def test_psnr_class_reports_infinity_for_identical_pairs() -> None:
    metric = PSNR(data_range=1.0)
    image = torch.rand(2, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero warning either
        metric.update(image, image)
    assert math.isinf(metric.compute())


def test_pixel_classes_refuse_nan_input() -> None:
    broken = torch.rand(1, 1, 16, 16)
    broken[0, 0, 3, 3] = float("nan")
    with pytest.raises(GenlabError, match="NaN or Inf"):
        SSIM(data_range=1.0).update(broken, torch.rand(1, 1, 16, 16))


# --------------------------------------------------------------------------------------------- FID


def test_merged_statistics_equal_one_stream() -> None:
    features = _features(700, 12, seed=1, shift=3e3)  # a large mean: each part's own shift differs a lot
    parts = []
    for index, chunk in enumerate(features.split([300, 1, 399])):
        part = FeatureStatistics()
        part.update(chunk + (0.0 if index else 50.0) - (0.0 if index else 50.0))
        parts.append(part)
    merged = merge_statistics(parts)
    assert merged.count == 700
    np.testing.assert_allclose(merged.mean.numpy(), features.mean(dim=0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(merged.covariance.numpy(), np.cov(features.numpy(), rowvar=False), rtol=1e-8, atol=1e-9)
    with pytest.raises(GenlabError, match="no features"):
        merge_statistics([FeatureStatistics()])


def test_fid_class_streams_and_keeps_real_statistics() -> None:
    real, fake, other = _features(300, 16, seed=5), _features(250, 16, seed=6, shift=0.5), _features(250, 16, seed=7)
    metric = FID()
    assert isinstance(metric, Metric)
    for batch in real.split(64):
        metric.update(batch, real=True)
    for batch in fake.split(50):
        metric.update_fake(batch)
    torch.testing.assert_close(metric.compute(), fid(real, fake))
    metric.reset_fake()
    metric.update(other, real=False)
    torch.testing.assert_close(metric.compute(), fid(real, other))

    cached = FeatureStatistics()
    cached.load_state_dict(metric.statistics(real=True).state_dict())
    fresh = FID()
    fresh.load_real(cached)
    fresh.update_fake(other)
    torch.testing.assert_close(fresh.compute(), fid(real, other))

    metric.reset()
    with pytest.raises(GenlabError, match="at least 2"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric.compute()
    with pytest.raises(GenlabError, match="dimensions"):
        fresh.update(torch.randn(4, 9), real=False)


# --------------------------------------------------------------------------------------------- KID


def test_kid_class_without_cap_equals_function() -> None:
    real, fake = _features(150, 8, seed=13), _features(120, 8, seed=14, shift=0.2)
    metric = KID(subsets=5, subset_size=100, generator=torch.Generator().manual_seed(3))
    assert isinstance(metric, Metric)
    for batch in real.split(40):
        metric.update_real(batch)
    for batch in fake.split(40):
        metric.update(batch, real=False)
    expected = kid(real, fake, subsets=5, subset_size=100, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(metric.compute(), expected)
    with pytest.raises(GenlabError, match="dimensions"):
        metric.update(torch.randn(4, 9), real=True)
    metric.reset()
    with pytest.raises(GenlabError, match="no real features"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric.compute()


def test_kid_reservoir_is_bounded_and_uniform() -> None:
    kept_means = []
    for seed in range(20):
        metric = KID(subsets=2, subset_size=50, max_samples=100, generator=torch.Generator().manual_seed(seed))
        stream = torch.arange(2000, dtype=torch.float64)[:, None]  # row i holds the value i
        for batch in stream.split(64):
            metric.update(batch, real=True)
        kept = metric.kept(real=True)[:, 0]
        assert kept.shape == (100,)
        assert kept.unique().numel() == 100  # a sample without replacement from the stream
        kept_means.append(float(kept.mean()))
    # Uniform over 0..1999: the mean of 20 x 100 kept values is 999.5 with a standard error of about 13.
    assert np.mean(kept_means) == pytest.approx(999.5, abs=60)
    assert min(kept_means) > 600 and max(kept_means) < 1400  # not stuck on the first or last rows
    metric.reset()  # the reservoirs start again too
    metric.update(torch.ones(3, 1, dtype=torch.float64), real=True)
    assert metric.kept(real=True).shape == (3, 1)


# ------------------------------------------------------------------------------- two processes


# Run by torchrun on each of two gloo ranks: every metric gets the rank's half of the data, then computes (synced).
RANK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    from genlab.metrics.streaming import FID, KID, PSNR, SSIM

    rank = int(os.environ["RANK"])
    torch.distributed.init_process_group("gloo")
    data = torch.load(sys.argv[1])
    out = {}
    for name, metric in {"psnr": PSNR(1.0, keep_per_image=True), "ssim": SSIM(1.0, keep_per_image=True)}.items():
        metric.update(data["pred"].chunk(2)[rank], data["target"].chunk(2)[rank])
        out[name], out[name + "_per_image"] = metric.compute(), metric.compute_per_image()
    fid, kid = FID(), KID(subsets=4, subset_size=50, generator=torch.Generator().manual_seed(0))
    for metric in (fid, kid):
        metric.update(data["real"].chunk(2)[rank], real=True)
        metric.update(data["fake"].chunk(2)[rank], real=False)
    out["fid"], out["kid"] = fid.compute(), kid.compute()[0]
    out["local_count"] = fid.statistics(real=True).count  # unsynced again after compute()
    torch.save(out, os.path.join(sys.argv[2], f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()
    """
)


def test_two_processes_compute_the_value_of_all_their_data(tmp_path) -> None:
    pred, target = _pair(6, 24)
    real, fake = _features(200, 6, seed=21), _features(160, 6, seed=22, shift=1.0)
    torch.save({"pred": pred, "target": target, "real": real, "fake": fake}, tmp_path / "data.pt")
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(tmp_path / "rank.py"), str(tmp_path / "data.pt"), str(tmp_path)]
    finished = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]

    expected = {
        "psnr": psnr(pred, target, 1.0).double(),
        "ssim": ssim(pred, target, 1.0).double(),
        "psnr_per_image": psnr(pred, target, 1.0, reduction="none").double(),
        "ssim_per_image": ssim(pred, target, 1.0, reduction="none").double(),
        "fid": fid(real, fake),
    }
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for rank, result in enumerate(results):
        for key, value in expected.items():
            torch.testing.assert_close(result[key], value, msg=f"rank {rank}: {key}")
        assert result["local_count"] == 100
    # KID draws its subsets from the gathered features (rank 0's then rank 1's): the function's value on both.
    kid_expected = kid(real, fake, subsets=4, subset_size=50, generator=torch.Generator().manual_seed(0))[0]
    for result in results:
        torch.testing.assert_close(result["kid"], kid_expected)
