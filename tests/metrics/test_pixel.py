"""PSNR, SSIM and MS-SSIM against scikit-image, torchmetrics and a direct SciPy implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from genlab.metrics.pixel import (
    MS_SSIM_MIN_SIZE,
    MS_SSIM_WEIGHTS,
    _ms_ssim_terms,
    ms_ssim,
    psnr,
    ssim,
    ssim_maps,
)
from genlab.utils import GenlabError

# --------------------------------------------------------------------------------------------- images


def _random(n: int, c: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=generator)


def _gradient(n: int, c: int, size: int, generator: torch.Generator) -> torch.Tensor:
    ramp = torch.linspace(0, 1, size)
    base = 0.5 * (ramp[:, None] + ramp[None, :])  # (H, W) diagonal ramp
    phase = torch.rand(n, c, 1, 1, generator=generator)
    return (base + phase).remainder(1.0)


def _checkerboard(n: int, c: int, size: int, generator: torch.Generator) -> torch.Tensor:
    index = torch.arange(size)
    board = ((index[:, None] // 4 + index[None, :] // 4) % 2).float()  # 4-pixel squares
    low = 0.4 * torch.rand(n, c, 1, 1, generator=generator)
    return low + (1.0 - low) * board


def _blurred_noise(n: int, c: int, size: int, generator: torch.Generator) -> torch.Tensor:
    noise = torch.rand(n * c, 1, size, size, generator=generator)
    return F.avg_pool2d(noise, 7, stride=1, padding=3, count_include_pad=False).view(n, c, size, size)


def _constant(n: int, c: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, c, 1, 1, generator=generator).expand(n, c, size, size).clone()


PATTERNS = {
    "random": _random,
    "gradient": _gradient,
    "checkerboard": _checkerboard,
    "blurred_noise": _blurred_noise,
    "constant": _constant,
}


def _pair(pattern: str, channels: int, data_range: float, size: int = 32, n: int = 3, seed: int = 0):
    """A (pred, target) pair: a pattern and a noisy, clipped copy of it (a constant copy for `constant`)."""
    generator = torch.Generator().manual_seed(seed)
    target = PATTERNS[pattern](n, channels, size, generator)
    if pattern == "constant":
        pred = _constant(n, channels, size, generator)
    else:
        pred = (target + 0.1 * torch.randn(target.shape, generator=generator)).clamp(0.0, 1.0)
    return pred * data_range, target * data_range


def _skimage_ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> np.ndarray:
    return np.array(
        [
            structural_similarity(
                p.double().numpy(),
                t.double().numpy(),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=data_range,
                channel_axis=0,
            )
            for p, t in zip(pred, target, strict=True)
        ]
    )


# ----------------------------------------------------------------------------------------------- PSNR


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_psnr_matches_skimage(pattern: str, channels: int, data_range: float) -> None:
    pred, target = _pair(pattern, channels, data_range)
    reference = np.array(
        [
            peak_signal_noise_ratio(t.double().numpy(), p.double().numpy(), data_range=data_range)
            for p, t in zip(pred, target, strict=True)
        ]
    )
    per_image = psnr(pred, target, data_range=data_range, reduction="none")
    assert per_image.shape == (3,)
    np.testing.assert_allclose(per_image.numpy(), reference, atol=1e-4, rtol=0)
    assert float(psnr(pred, target, data_range=data_range)) == pytest.approx(reference.mean(), abs=1e-4)


def test_psnr_identical_images_are_infinite() -> None:
    pred, target = _pair("random", 3, 1.0)
    pred[1] = target[1]
    per_image = psnr(pred, target, data_range=1.0, reduction="none")
    assert math.isinf(per_image[1]) and per_image[1] > 0
    assert torch.isfinite(per_image[[0, 2]]).all()
    assert math.isinf(psnr(pred, target, data_range=1.0)) and psnr(pred, target, data_range=1.0) > 0


def test_psnr_known_value_and_uint8_input() -> None:
    zeros = torch.zeros(1, 1, 4, 4)
    assert float(psnr(zeros, torch.full_like(zeros, 0.1), data_range=1.0)) == pytest.approx(20.0, abs=1e-5)
    # uint8 inputs must not wrap around when subtracted: 10 - 20 is -10, not 246.
    low, high = torch.full((1, 3, 8, 8), 10, dtype=torch.uint8), torch.full((1, 3, 8, 8), 20, dtype=torch.uint8)
    expected = 10 * math.log10(255.0**2 / 100.0)
    assert float(psnr(low, high, data_range=255)) == pytest.approx(expected, abs=1e-4)


# ----------------------------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ssim_matches_skimage(pattern: str, channels: int, data_range: float) -> None:
    pred, target = _pair(pattern, channels, data_range)
    reference = _skimage_ssim(pred, target, data_range)
    per_image = ssim(pred, target, data_range=data_range, reduction="none")
    np.testing.assert_allclose(per_image.numpy(), reference, atol=1e-4, rtol=0)
    assert float(ssim(pred, target, data_range=data_range)) == pytest.approx(reference.mean(), abs=1e-4)


def test_ssim_signed_range_non_square_and_float64() -> None:
    generator = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 24, 40, generator=generator, dtype=torch.float64) * 2 - 1  # [-1, 1]
    pred = (target + 0.2 * torch.randn(target.shape, generator=generator, dtype=torch.float64)).clamp(-1, 1)
    result = ssim(pred, target, data_range=2.0, reduction="none")
    assert result.dtype == torch.float64
    np.testing.assert_allclose(result.numpy(), _skimage_ssim(pred, target, 2.0), atol=1e-10, rtol=0)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ssim_reflect_border_matches_torchmetrics(pattern: str, data_range: float) -> None:
    tm_image = pytest.importorskip("torchmetrics.functional.image")
    pred, target = _pair(pattern, 3, data_range, size=40, n=4)
    pred, target = pred.double(), target.double()  # float64: the two must agree to rounding, not to 1e-4
    theirs = tm_image.structural_similarity_index_measure(pred, target, data_range=data_range, reduction="none")
    ours = ssim(pred, target, data_range=data_range, reduction="none", border="reflect")
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    # float32, the benchmark's case: within its 1e-4
    ours32 = ssim(pred.float(), target.float(), data_range=data_range, reduction="none", border="reflect")
    torch.testing.assert_close(ours32.double(), theirs, atol=1e-4, rtol=0)
    # the default averages the valid region only, as scikit-image: not the same number (but for flat images)
    valid = ssim(pred, target, data_range=data_range, reduction="none")
    assert pattern == "constant" or not torch.allclose(valid, theirs, atol=1e-6)
    with pytest.raises(GenlabError, match="border must be"):
        ssim(pred, target, data_range=data_range, border="same")


def test_ssim_maps_differentiate_like_torchmetrics() -> None:
    """The out-of-place path that a training loss takes: the same maps as the metric's in-place path, and the
    gradient of their mean equal to torchmetrics' (float64)."""
    tm_image = pytest.importorskip("torchmetrics.functional.image")
    pred, target = _pair("blurred_noise", 2, 2.0, size=24, n=3)
    pred, target = pred.double() - 1.0, target.double() - 1.0  # images in [-1, 1], the VAE's
    with torch.no_grad():
        metric_map, metric_cs = ssim_maps(pred, target, 2.0, border="reflect")
    leaf = pred.clone().requires_grad_(True)
    loss_map, loss_cs = ssim_maps(leaf, target, 2.0, border="reflect")
    torch.testing.assert_close(loss_map, metric_map, atol=1e-12, rtol=0)
    torch.testing.assert_close(loss_cs, metric_cs, atol=1e-12, rtol=0)
    (ours,) = torch.autograd.grad(loss_map.mean(), leaf)
    reference = pred.clone().requires_grad_(True)
    theirs_value = tm_image.structural_similarity_index_measure(reference, target, data_range=2.0)
    (theirs,) = torch.autograd.grad(theirs_value, reference)
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-7)
    assert ours.abs().max() > 0


def test_ssim_identical_images_is_one() -> None:
    pred, _ = _pair("blurred_noise", 3, 255.0)
    assert float(ssim(pred, pred.clone(), data_range=255.0)) == pytest.approx(1.0, abs=1e-6)


def test_ssim_too_small_image() -> None:
    with pytest.raises(GenlabError, match="11x11"):
        ssim(torch.rand(1, 1, 10, 32), torch.rand(1, 1, 10, 32), data_range=1.0)


# -------------------------------------------------------------------------------------------- MS-SSIM


def _reference_ms_ssim(pred: np.ndarray, target: np.ndarray, data_range: float) -> np.ndarray:
    """Wang et al. 2003 written directly with SciPy: per image (N,), factors averaged over channels, relu."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def local_mean(image: np.ndarray) -> np.ndarray:
        # Gaussian filter over H, W only, then keep the pixels whose 11x11 window lies inside the image.
        return ndimage.gaussian_filter(image, sigma=(0, 0, 1.5, 1.5), truncate=3.5)[..., 5:-5, 5:-5]

    factors = []
    for scale in range(5):
        mu_x, mu_y = local_mean(pred), local_mean(target)
        var_x = local_mean(pred * pred) - mu_x**2
        var_y = local_mean(target * target) - mu_y**2
        cov = local_mean(pred * target) - mu_x * mu_y
        cs = (2 * cov + c2) / (var_x + var_y + c2)
        if scale < 4:
            factors.append(cs.mean(axis=(1, 2, 3)))
            height, width = pred.shape[2] // 2 * 2, pred.shape[3] // 2 * 2

            def pool(image: np.ndarray, height: int = height, width: int = width) -> np.ndarray:
                cropped = image[:, :, :height, :width]
                return cropped.reshape(*image.shape[:2], height // 2, 2, width // 2, 2).mean(axis=(3, 5))

            pred, target = pool(pred), pool(target)
        else:
            luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
            factors.append((luminance * cs).mean(axis=(1, 2, 3)))
    stacked = np.maximum(np.stack(factors, axis=1), 0.0)  # (N, 5)
    return np.prod(stacked ** np.array(MS_SSIM_WEIGHTS), axis=1)


def _ms_pair(channels: int, data_range: float, size: int = 192, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = _blurred_noise(2, channels, size, generator)
    pred = (target + 0.05 * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    return pred * data_range, target * data_range


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ms_ssim_matches_direct_scipy_implementation(channels: int, data_range: float) -> None:
    pred, target = _ms_pair(channels, data_range, size=199)  # odd size: pooling drops the last row and column
    reference = _reference_ms_ssim(pred.double().numpy(), target.double().numpy(), data_range)
    result = ms_ssim(pred, target, data_range=data_range, reduction="none")
    np.testing.assert_allclose(result.numpy(), reference, atol=1e-5, rtol=0)


def test_ms_ssim_against_torchmetrics() -> None:
    tm_image = pytest.importorskip("torchmetrics.functional.image")
    pred, target = _ms_pair(3, 1.0, size=256)
    theirs = tm_image.multiscale_structural_similarity_index_measure
    # The four contrast-structure factors are computed identically (valid region, relu): compare them exactly
    # by giving torchmetrics a zero weight at the coarsest scale.
    terms = _ms_ssim_terms(pred, target, 1.0)  # (N, 5)
    weights = torch.tensor(MS_SSIM_WEIGHTS)
    ours_cs = (terms[:, :4] ** weights[:4]).prod(dim=1)
    their_cs = theirs(pred, target, data_range=1.0, reduction="none", betas=(*MS_SSIM_WEIGHTS[:4], 0.0))
    torch.testing.assert_close(ours_cs, their_cs, atol=1e-5, rtol=0)
    # The coarsest scale is genlab's valid-region SSIM of the 16x-pooled images.
    pooled = F.avg_pool2d(pred, 16), F.avg_pool2d(target, 16)
    torch.testing.assert_close(terms[:, 4], ssim(*pooled, data_range=1.0, reduction="none"), atol=1e-6, rtol=0)
    # Whole value: torchmetrics averages the coarsest SSIM over the reflect-padded full image, so only close.
    ours = ms_ssim(pred, target, data_range=1.0, reduction="none")
    torch.testing.assert_close(ours, theirs(pred, target, data_range=1.0, reduction="none"), atol=5e-3, rtol=0)


def test_ms_ssim_negative_factors_clamp_to_zero_like_torchmetrics_relu() -> None:
    tm_image = pytest.importorskip("torchmetrics.functional.image")
    target, _ = _ms_pair(1, 1.0, size=MS_SSIM_MIN_SIZE)
    inverted = 1.0 - target  # anti-correlated: every cs factor is negative
    assert (_ms_ssim_terms(inverted, target, 1.0)[:, :4] == 0).all()
    ours = ms_ssim(inverted, target, data_range=1.0)
    theirs = tm_image.multiscale_structural_similarity_index_measure(inverted, target, data_range=1.0, normalize="relu")
    assert float(ours) == 0.0 and float(theirs) == 0.0


def test_ms_ssim_identical_is_one_and_minimum_size() -> None:
    image = _ms_pair(3, 1.0, size=MS_SSIM_MIN_SIZE)[0]
    assert float(ms_ssim(image, image.clone(), data_range=1.0)) == pytest.approx(1.0, abs=1e-5)
    small = torch.rand(1, 3, MS_SSIM_MIN_SIZE - 1, 256)
    with pytest.raises(GenlabError, match="at least 176x176"):
        ms_ssim(small, small, data_range=1.0)


# ---------------------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("function", [psnr, ssim, ms_ssim])
def test_bad_inputs_raise_genlab_error(function) -> None:
    size = MS_SSIM_MIN_SIZE if function is ms_ssim else 32
    image = torch.rand(2, 3, size, size)
    with pytest.raises(GenlabError, match="same shape"):
        function(image, image[:, :1], data_range=1.0)
    with pytest.raises(GenlabError, match="same shape"):
        function(image[0], image[0], data_range=1.0)
    with pytest.raises(GenlabError, match="data_range"):
        function(image, image, data_range=0.0)
    for bad_value in (float("nan"), float("inf"), float("-inf")):
        broken = image.clone()
        broken[1, 0, 5, 7] = bad_value
        with pytest.raises(GenlabError, match="NaN or Inf"):
            function(broken, image, data_range=1.0)
        with pytest.raises(GenlabError, match="NaN or Inf"):
            function(image, broken, data_range=1.0)
    with pytest.raises(GenlabError, match="reduction"):
        psnr(image, image, data_range=1.0, reduction="sum")
