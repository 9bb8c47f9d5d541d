"""Pixel metrics between paired images: PSNR, SSIM and MS-SSIM.

Each metric is a pure function on batched images (N, C, H, W) with an explicit `data_range` (1.0 for [0, 1],
2.0 for [-1, 1], 255 for [0, 255]). Their streaming classes (update()/compute()/reset(), synced across
processes) are in `genlab.metrics.streaming`, on torchmetrics' Metric base, and call the same per-image
helpers (`psnr_per_image`, `ssim_per_image`, `ms_ssim_per_image`), so function and class always agree.

Example:
    >>> import torch
    >>> from genlab.metrics.pixel import psnr, ssim
    >>> pred, target = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    >>> psnr(pred, target, data_range=1.0).shape
    torch.Size([])
    >>> ssim(pred, target, data_range=1.0, reduction="none").shape
    torch.Size([4])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from genlab.utils import GenlabError

__all__ = [
    "MS_SSIM_MIN_SIZE",
    "MS_SSIM_WEIGHTS",
    "ms_ssim",
    "psnr",
    "ssim",
    "ssim_maps",
]

Reduction = Literal["mean", "none"]
# Where SSIM is averaged: "valid" (windows fully inside the image: scikit-image, Wang et al.'s code) or
# "reflect" (every pixel, the window reflected at the borders: torchmetrics 1.x).
Border = Literal["valid", "reflect"]

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


def check_pair(
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


def check_values(values: torch.Tensor, name: str) -> torch.Tensor:
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


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """PSNR of each image pair in dB (N,); +inf where the two images are identical (MSE = 0)."""
    mse = (pred - target).square().flatten(1).mean(dim=1)  # (N,)
    # 10 log10(MAX^2 / MSE) written as a difference of logs: log10(0) = -inf gives +inf without a warning.
    return 20.0 * math.log10(data_range) - 10.0 * torch.log10(mse)


def _gaussian_1d(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The normalised 1-D Gaussian of the SSIM window (11,): sigma 1.5, radius 5."""
    radius = SSIM_WINDOW // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    window = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return (window / window.sum()).to(dtype=dtype, device=device)


def _gaussian_band(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The valid 1-D Gaussian filter as a matrix (size, size - 10): column j holds the window at rows j..j+10."""
    window = _gaussian_1d(dtype, device)
    lag = torch.arange(size, device=device)[:, None] - torch.arange(size - SSIM_WINDOW + 1, device=device)[None, :]
    inside = (lag >= 0) & (lag < SSIM_WINDOW)
    return torch.where(inside, window[lag.clamp(0, SSIM_WINDOW - 1)], torch.zeros((), dtype=dtype, device=device))


# Up to this side length the separable filter runs as two matrix products with banded matrices; above it a
# depthwise 11x11 convolution does less work (measured on 2 CPU cores, torch 2.13: the products are 1.9x faster
# at 32 px, 1.4x at 64, equal at 128, and the convolution 1.2x faster at 256, 2.1x at 512).
_BAND_MAX_SIZE = 128


def _gaussian_filter_valid(images: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted local means at every position where the 11x11 window fits: (N, K, H, W) -> (N, K, H-10, W-10).

    The window is separable (the outer product of a 1-D Gaussian). For small images it is applied as
    B_h^T X B_w with banded matrices (dense BLAS products beat PyTorch's CPU depthwise kernels there); for large
    ones as one 11x11 depthwise convolution (two 1-D depthwise passes ran slower than one 2-D pass on the CPU).
    The two agree to rounding.
    """
    height, width = images.shape[-2:]
    if max(height, width) <= _BAND_MAX_SIZE:
        rows = _gaussian_band(height, images.dtype, images.device)  # (H, H - 10)
        columns = _gaussian_band(width, images.dtype, images.device)  # (W, W - 10)
        return torch.matmul(rows.T, torch.matmul(images, columns))
    window_1d = _gaussian_1d(images.dtype, images.device)
    window = torch.outer(window_1d, window_1d).expand(images.shape[1], 1, SSIM_WINDOW, SSIM_WINDOW)
    return F.conv2d(images, window.contiguous(), groups=images.shape[1])


def ssim_maps(
    pred: torch.Tensor, target: torch.Tensor, data_range: float, border: Border = "valid"
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps, each (N, C, H - 10, W - 10), or (N, C, H, W) with border="reflect".

    Differentiable when its inputs need gradients (a training loss, such as the VAE's ssim_l1); the metric path
    works in place.

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
    if border not in ("valid", "reflect"):
        raise GenlabError(f"ssim: border must be 'valid' or 'reflect', got {border!r}")
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    channels = pred.shape[1]
    # Variances are E[x^2] - E[x]^2, which cancels badly in float32 when the mean is large (e.g. 0-255 images).
    # They do not depend on a common shift, so remove one per image and channel first and add it back to the
    # local means only.
    offset = 0.5 * (pred.mean(dim=(2, 3), keepdim=True) + target.mean(dim=(2, 3), keepdim=True))  # (N, C, 1, 1)
    if border == "reflect":
        # torchmetrics' convention: reflect-pad by the window radius (torch's "reflect" leaves the edge pixel
        # out of the mirror image), so a map value exists at every pixel and the mean runs over all of them.
        radius = SSIM_WINDOW // 2
        pred, target = (F.pad(t, (radius,) * 4, mode="reflect") for t in (pred, target))
    x, y = pred - offset, target - offset
    stacked = torch.cat((x, y, x * x, y * y, x * y), dim=1)  # (N, 5 C, H', W')
    # With no padding of its own the filter keeps the positions where the window fits: for border="valid" the
    # region scikit-image averages over (it filters with reflected borders, then crops (win_size - 1) // 2
    # pixels on each side); for "reflect" the padding above gives every pixel one.
    moments = _gaussian_filter_valid(stacked)
    mu_x, mu_y, xx, yy, xy = moments.split(channels, dim=1)  # each (N, C, H or H - 10, W or W - 10)
    if torch.is_grad_enabled() and (pred.requires_grad or target.requires_grad):
        # A training loss (the VAE's ssim_l1 reconstruction): out of place, so autograd can differentiate it.
        contrast_structure = (2.0 * (xy - mu_x * mu_y) + c2) / (xx + yy - mu_x.square() - mu_y.square() + c2)
        mu_x, mu_y = mu_x + offset, mu_y + offset
        luminance = (2.0 * mu_x * mu_y + c1) / (mu_x.square() + mu_y.square() + c1)
        return luminance * contrast_structure, contrast_structure
    # The metric: in place where a temporary is not needed again, as the maps are its largest tensors.
    mu_xy = mu_x * mu_y
    contrast_structure = (xy - mu_xy).mul_(2.0).add_(c2)  # 2 sigma_xy + C2
    contrast_structure.div_(xx.add_(yy).sub_(mu_x.square()).sub_(mu_y.square()).add_(c2))  # / (s_x^2 + s_y^2 + C2)
    mu_x, mu_y = mu_x.add_(offset), mu_y.add_(offset)
    luminance = (mu_x * mu_y).mul_(2.0).add_(c1)
    luminance.div_(mu_x.square_().add_(mu_y.square_()).add_(c1))
    return luminance.mul_(contrast_structure), contrast_structure


def ssim_per_image(
    pred: torch.Tensor, target: torch.Tensor, data_range: float, border: Border = "valid"
) -> torch.Tensor:
    """Mean SSIM of each image pair over channels and pixels (N,): the valid ones, or all with border="reflect"."""
    ssim_map, _ = ssim_maps(pred, target, data_range, border)
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
        ssim_map, cs_map = ssim_maps(pred, target, data_range)
        last = scale == len(MS_SSIM_WEIGHTS) - 1
        # Wang et al. 2003, eq. 7: contrast-structure at every scale, luminance only at the coarsest.
        terms.append((ssim_map if last else cs_map).flatten(1).mean(dim=1))  # (N,)
        if not last:
            pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
    return torch.stack(terms, dim=1).clamp_min(0.0)  # (N, 5)


def ms_ssim_per_image(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
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
    pred, target = check_pair(pred, target, data_range, "psnr")
    return _reduce(check_values(psnr_per_image(pred, target, data_range), "psnr"), reduction, "psnr")


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float,
    reduction: Reduction = "mean",
    border: Border = "valid",
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, eq. 13; seed report eqs. 22-25) averaged over channels and pixels.

    Gaussian window 11 with sigma 1.5, K1 = 0.01, K2 = 0.03, C3 = C2 / 2, alpha = beta = gamma = 1, population
    local statistics and averaging over the valid region (windows fully inside the image). This matches
    scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=data_range, channel_axis=0)` applied per image. Needs H, W >= 11.

    `border="reflect"` averages over every pixel instead, the window reflected at the image borders: the
    convention of torchmetrics 1.x's `structural_similarity_index_measure` (same values to rounding). It
    weighs the borders, where the window sees mirrored pixels, like the interior; the default does not.

    Args:
        pred, target: (N, C, H, W) images of the same shape, on any device.
        data_range: the span of valid pixel values (1.0, 2.0, 255...).
        reduction: "mean" -> a scalar, "none" -> per-image values (N,).
        border: "valid" (scikit-image) or "reflect" (torchmetrics), see above.

    Returns: float32 (float64 for float64 input) tensor, () or (N,).

    Example:
        >>> image = torch.rand(2, 3, 16, 16)
        >>> float(ssim(image, image, data_range=1.0))
        1.0
    """
    pred, target = check_pair(pred, target, data_range, "ssim")
    return _reduce(check_values(ssim_per_image(pred, target, data_range, border), "ssim"), reduction, "ssim")


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
    pred, target = check_pair(pred, target, data_range, "ms_ssim")
    return _reduce(check_values(ms_ssim_per_image(pred, target, data_range), "ms_ssim"), reduction, "ms_ssim")
