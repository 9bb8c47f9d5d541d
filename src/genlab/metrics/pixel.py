"""Pixel metrics between paired images: PSNR, SSIM and MS-SSIM.

Each metric is a pure function on batched images (N, C, H, W) with an explicit `data_range` (1.0 for [0, 1],
2.0 for [-1, 1], 255 for [0, 255]) and a streaming class with update()/compute()/reset() in the torchmetrics
style. The function and the class share the same private per-image helpers, so they always agree.

Example:
    >>> import torch
    >>> from genlab.metrics.pixel import SSIM, psnr, ssim
    >>> pred, target = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    >>> psnr(pred, target, data_range=1.0).shape
    torch.Size([])
    >>> ssim(pred, target, data_range=1.0, reduction="none").shape
    torch.Size([4])
    >>> metric = SSIM(data_range=1.0)
    >>> metric.update(pred, target)
    >>> abs(float(metric.compute()) - float(ssim(pred, target, data_range=1.0))) < 1e-6
    True
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from genlab.utils import GenlabError

__all__ = [
    "MSSSIM",
    "MS_SSIM_MIN_SIZE",
    "MS_SSIM_WEIGHTS",
    "PSNR",
    "SSIM",
    "ms_ssim",
    "psnr",
    "ssim",
]

Reduction = Literal["mean", "none"]

# Wang et al. 2004, section III-C: an 11x11 circular-symmetric Gaussian window with sigma 1.5, K1 = 0.01,
# K2 = 0.03. A radius of 5 is also what scikit-image's gaussian_filter uses for sigma 1.5 (truncate=3.5).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# Wang, Simoncelli and Bovik 2003, section 3.2: the exponents of the five scales (finest first).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# Four 2x poolings leave H // 16 pixels at the coarsest scale, which must still hold one 11-pixel window.
MS_SSIM_MIN_SIZE = SSIM_WINDOW * 2 ** (len(MS_SSIM_WEIGHTS) - 1)  # 176


# ----------------------------------------------------------------------------------------------- helpers


def _prepare_pair(
    pred: torch.Tensor, target: torch.Tensor, data_range: float, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (pred, target) pair and cast both to the working dtype: float64 if given, else float32.

    Integer images are cast before any arithmetic so that uint8 differences cannot wrap around.
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise GenlabError(f"{name}: pred and target must be torch tensors")
    if pred.ndim != 4 or pred.shape != target.shape:
        raise GenlabError(
            f"{name}: pred and target must both be (N, C, H, W) with the same shape; "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.shape[0] == 0:
        raise GenlabError(f"{name}: the batch is empty")
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise GenlabError(f"{name}: data_range must be a positive number (1.0, 2.0, 255...), got {data_range!r}")
    dtype = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32
    return pred.detach().to(dtype), target.detach().to(dtype)


def _check_result(values: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if per-image values (N,) show NaN or Inf in the input; returns the values.

    Checking the N results instead of the N x C x H x W inputs saves two full passes over the images: a NaN
    or Inf pixel always turns the image's score into NaN (or -inf for PSNR, whose +inf means identical images).
    """
    if torch.isnan(values).any() or torch.isneginf(values).any():
        raise GenlabError(f"{name}: pred or target contains NaN or Inf")
    return values


def _reduce(values: torch.Tensor, reduction: Reduction, name: str) -> torch.Tensor:
    """Per-image values (N,) -> their mean () or themselves."""
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise GenlabError(f"{name}: reduction must be 'mean' or 'none', got {reduction!r}")


def _psnr_per_image(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """PSNR of each image pair in dB (N,); +inf where the two images are identical (MSE = 0)."""
    mse = (pred - target).square().flatten(1).mean(dim=1)  # (N,)
    # 10 log10(MAX^2 / MSE) written as a difference of logs: log10(0) = -inf gives +inf without a warning.
    return 20.0 * math.log10(data_range) - 10.0 * torch.log10(mse)


def _gaussian_window(channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The normalised 11x11 Gaussian window as a depthwise conv2d weight (channels, 1, 11, 11).

    The window is separable (the outer product of a 1-D Gaussian), but it is applied as one 2-D depthwise pass:
    PyTorch's CPU depthwise kernels ran two 1-D passes slower than one 11x11 pass (measured on torch 2.13),
    and torchmetrics uses the same one-pass form on every device. The result is the same up to rounding.
    """
    radius = SSIM_WINDOW // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    window_1d = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    window_1d = window_1d / window_1d.sum()
    window_2d = torch.outer(window_1d, window_1d).to(dtype=dtype, device=device)
    return window_2d.expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def _ssim_maps(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps over the valid region, each (N, C, H - 10, W - 10).

    Wang et al. 2004, eq. 13 with alpha = beta = gamma = 1 and C3 = C2 / 2:
        SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    and cs, the product of the contrast and structure terms (eqs. 9 and 10), is its second factor.
    Population (biased) local moments, as scikit-image with use_sample_covariance=False.
    """
    height, width = pred.shape[-2:]
    if min(height, width) < SSIM_WINDOW:
        raise GenlabError(
            f"ssim: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (the Gaussian window), "
            f"got {height}x{width}"
        )
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    # Variances are E[x^2] - E[x]^2, which cancels badly in float32 when the mean is large (e.g. 0-255 images).
    # They do not depend on a common shift, so remove one per image and channel first and add it back to the
    # local means only.
    offset = 0.5 * (pred.mean(dim=(2, 3), keepdim=True) + target.mean(dim=(2, 3), keepdim=True))  # (N, C, 1, 1)
    x, y = pred - offset, target - offset
    stacked = torch.cat((x, y, x * x, y * y, x * y), dim=1)  # (N, 5 C, H, W)
    window = _gaussian_window(stacked.shape[1], pred.dtype, pred.device)  # (5 C, 1, 11, 11)
    # Gaussian-weighted local means over the valid region only (no padding): windows fully inside the image,
    # exactly the region scikit-image averages over (it filters with reflected borders, then crops
    # (win_size - 1) // 2 pixels on each side).
    moments = F.conv2d(stacked, window, groups=stacked.shape[1])  # (N, 5 C, H - 10, W - 10)
    mu_x, mu_y, xx, yy, xy = moments.chunk(5, dim=1)  # each (N, C, H - 10, W - 10)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov_xy = xy - mu_x * mu_y
    mu_x, mu_y = mu_x + offset, mu_y + offset
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    contrast_structure = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
    return luminance * contrast_structure, contrast_structure


def _ssim_per_image(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean SSIM of each image pair over channels and valid pixels (N,)."""
    ssim_map, _ = _ssim_maps(pred, target, data_range)
    return ssim_map.flatten(1).mean(dim=1)


def _ms_ssim_terms(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """The five per-scale factors of MS-SSIM before weighting (N, 5): cs at scales 1-4, SSIM at scale 5.

    Each factor is averaged over channels and valid pixels, then clamped at 0 (see `ms_ssim`).
    """
    height, width = pred.shape[-2:]
    if min(height, width) < MS_SSIM_MIN_SIZE:
        raise GenlabError(
            f"ms_ssim: images must be at least {MS_SSIM_MIN_SIZE}x{MS_SSIM_MIN_SIZE} pixels (5 scales with 2x "
            f"average pooling leave H/16, which must hold an {SSIM_WINDOW}-pixel window); got {height}x{width}. "
            "Use ssim for smaller images."
        )
    terms = []
    for scale in range(len(MS_SSIM_WEIGHTS)):
        ssim_map, cs_map = _ssim_maps(pred, target, data_range)
        last = scale == len(MS_SSIM_WEIGHTS) - 1
        # Wang et al. 2003, eq. 7: contrast-structure at every scale, luminance only at the coarsest.
        terms.append((ssim_map if last else cs_map).flatten(1).mean(dim=1))  # (N,)
        if not last:
            pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
    return torch.stack(terms, dim=1).clamp_min(0.0)  # (N, 5)


def _ms_ssim_per_image(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """MS-SSIM of each image pair (N,): the weighted geometric product of the per-scale factors."""
    terms = _ms_ssim_terms(pred, target, data_range)  # (N, 5)
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=terms.dtype, device=terms.device)
    return (terms**weights).prod(dim=1)


# ------------------------------------------------------------------------------------------ functions


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float, reduction: Reduction = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB: PSNR = 10 log10(MAX^2 / MSE) (seed report eq. 26-27, with MAX = data_range).

    The MSE is taken per image over channels and pixels, so the result is the mean over images of per-image
    PSNR (not the PSNR of the batch-wide MSE). Identical images have MSE = 0 and PSNR = +inf: that value is
    kept, so one identical pair makes the mean +inf; use reduction="none" to see or filter such pairs.

    Args:
        pred, target: (N, C, H, W) images of the same shape, on any device.
        data_range: the span of valid pixel values, MAX (1.0 for [0, 1], 2.0 for [-1, 1], 255 for [0, 255]).
        reduction: "mean" -> a scalar, "none" -> per-image values (N,).

    Returns: float32 (float64 for float64 input) tensor, () or (N,).

    Example:
        >>> float(psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.1), data_range=1.0))
        20.0
    """
    pred, target = _prepare_pair(pred, target, data_range, "psnr")
    return _reduce(_check_result(_psnr_per_image(pred, target, data_range), "psnr"), reduction, "psnr")


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float, reduction: Reduction = "mean") -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, eq. 13; seed report eqs. 22-25) averaged over channels and pixels.

    Gaussian window 11 with sigma 1.5, K1 = 0.01, K2 = 0.03, C3 = C2 / 2, alpha = beta = gamma = 1, population
    local statistics and averaging over the valid region (windows fully inside the image). This matches
    scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=data_range, channel_axis=0)` applied per image. Needs H, W >= 11.

    Args:
        pred, target: (N, C, H, W) images of the same shape, on any device.
        data_range: the span of valid pixel values (1.0, 2.0, 255...).
        reduction: "mean" -> a scalar, "none" -> per-image values (N,).

    Returns: float32 (float64 for float64 input) tensor, () or (N,).

    Example:
        >>> image = torch.rand(2, 3, 16, 16)
        >>> float(ssim(image, image, data_range=1.0))
        1.0
    """
    pred, target = _prepare_pair(pred, target, data_range, "ssim")
    return _reduce(_check_result(_ssim_per_image(pred, target, data_range), "ssim"), reduction, "ssim")


def ms_ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float, reduction: Reduction = "mean") -> torch.Tensor:
    """Multi-scale SSIM (Wang, Simoncelli and Bovik 2003, eq. 7) with the five standard scales and weights.

        MS-SSIM = l_5^w5 * prod_{j=1..5} cs_j^wj = SSIM_5^w5 * prod_{j=1..4} cs_j^wj,
        w = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),

    where scale j + 1 is scale j average-pooled 2x2 (odd rows/columns dropped), and every factor uses the
    same window and constants as `ssim` and is averaged over channels and valid pixels of each image.

    Negative factors: cs (and SSIM) can be negative for anti-correlated images, and a negative number to a
    fractional power is undefined. Each factor is therefore clamped at 0 before the power (the "relu" choice,
    torchmetrics' default `normalize="relu"`), so MS-SSIM lies in [0, 1].

    Differences from torchmetrics' `multiscale_structural_similarity_index_measure`: the cs factors are the
    same; at the coarsest scale genlab averages SSIM over the valid region like every other scale, while
    torchmetrics averages over the reflect-padded full image, so results differ slightly (about 1e-3).

    Args:
        pred, target: (N, C, H, W) images of the same shape with H, W >= 176 (MS_SSIM_MIN_SIZE).
        data_range: the span of valid pixel values (1.0, 2.0, 255...).
        reduction: "mean" -> a scalar, "none" -> per-image values (N,).

    Returns: float32 (float64 for float64 input) tensor, () or (N,).

    Raises: GenlabError if the images are smaller than 176 pixels on a side.
    """
    pred, target = _prepare_pair(pred, target, data_range, "ms_ssim")
    return _reduce(_check_result(_ms_ssim_per_image(pred, target, data_range), "ms_ssim"), reduction, "ms_ssim")


# -------------------------------------------------------------------------------------------- classes


class _PerImageMean:
    """A streaming mean of a per-image score: update() adds a batch, compute() averages, reset() clears.

    State is a float64 sum and an image count kept on the CPU; with keep_per_image=True the per-image values
    are kept too (N floats) for compute_per_image().
    """

    name = "metric"

    def __init__(self, data_range: float, keep_per_image: bool = False) -> None:
        self.data_range = data_range
        self.keep_per_image = keep_per_image
        self.reset()

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every image seen so far."""
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = 0
        self._values: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of image pairs (N, C, H, W)."""
        pred, target = _prepare_pair(pred, target, self.data_range, self.name)
        values = _check_result(self._per_image(pred, target), self.name).to(device="cpu", dtype=torch.float64)
        self.total += values.sum()
        self.count += values.numel()
        if self.keep_per_image:
            self._values.append(values)

    def compute(self) -> torch.Tensor:
        """The mean over every image seen since the last reset (float64 scalar)."""
        if self.count == 0:
            raise GenlabError(f"{self.name}: compute() called before any update()")
        return self.total / self.count

    def compute_per_image(self) -> torch.Tensor:
        """Every per-image value seen since the last reset, in order (float64, (N,)); needs keep_per_image."""
        if not self.keep_per_image:
            raise GenlabError(f"{self.name}: per-image values were not kept; build it with keep_per_image=True")
        if not self._values:
            raise GenlabError(f"{self.name}: compute_per_image() called before any update()")
        return torch.cat(self._values)


class PSNR(_PerImageMean):
    """Streaming mean of per-image PSNR in dB (see `psnr`; an identical pair makes the mean +inf)."""

    name = "psnr"

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _psnr_per_image(pred, target, self.data_range)


class SSIM(_PerImageMean):
    """Streaming mean of per-image SSIM (see `ssim`)."""

    name = "ssim"

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _ssim_per_image(pred, target, self.data_range)


class MSSSIM(_PerImageMean):
    """Streaming mean of per-image MS-SSIM (see `ms_ssim`; images of at least 176x176)."""

    name = "ms_ssim"

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _ms_ssim_per_image(pred, target, self.data_range)
