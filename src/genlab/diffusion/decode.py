"""The last step's decoder: each pixel of a sample read under the training images' histogram of 8-bit values.

A sampler's final image is an estimate of the clean image, x0_hat = x0 + e, and it is then quantised to 8 bits.
Where the data puts a point mass, such as the exact black background of Fashion-MNIST (46% of its pixels), an
estimate with an error e of a few levels lands on both sides of it: the side below is clipped to black, the side
above stays as a faint haze (1-8 of 255) over every background, which no real image has and a feature network sees.
Reading each pixel instead as the posterior mean of its true value v given the observed level o,

    E[v | o] = sum_v v p(v) N(o; v, s^2) / sum_v p(v) N(o; v, s^2),

with p(v) the training images' histogram of levels (per channel) and s the error's standard deviation in levels,
puts the levels near a point mass onto it and leaves a smooth histogram's levels where they are (the posterior
mean of a flat prior is the observation). Per channel it is a 256-entry lookup table.
"""

from __future__ import annotations

import torch

from genlab.utils import signed_to_uint8

LEVELS = 256


def level_histogram(images: torch.Tensor) -> torch.Tensor:
    """Counts of each 8-bit level per channel, (C, 256) float64, of images (B, C, H, W) in [-1, 1]."""
    levels = signed_to_uint8(images).long()  # (B, C, H, W)
    channels = levels.shape[1]
    offsets = torch.arange(channels, device=levels.device).view(1, channels, 1, 1) * LEVELS
    counts = torch.bincount((levels + offsets).flatten(), minlength=channels * LEVELS)
    return counts.view(channels, LEVELS).double().cpu()


def posterior_mean_table(histogram: torch.Tensor, error_std: float) -> torch.Tensor:
    """E[v | observed level o] for o = 0..255 per channel, (C, 256) float64, under the prior `histogram` (C, 256)
    and a Gaussian error of `error_std` levels (> 0)."""
    if not error_std > 0:
        raise ValueError(f"the error's std must be > 0 levels, got {error_std}")
    if not (histogram.sum(dim=1) > 0).all():
        raise ValueError("every channel's histogram needs at least one count")
    values = torch.arange(LEVELS, dtype=torch.float64)
    # log N(o; v, s^2) up to a constant, (256 observed, 256 true); the largest term of each row is exp(0).
    log_likelihood = -0.5 * ((values[:, None] - values[None, :]) / error_std) ** 2
    prior = histogram.double() / histogram.double().sum(dim=1, keepdim=True)  # (C, 256)
    weights = torch.exp(log_likelihood)[None] * prior[:, None, :]  # (C, observed, true)
    # An observation no level of the prior can explain (all weights underflow) keeps its own value.
    total = weights.sum(dim=2)
    mean = (weights * values).sum(dim=2) / total.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(total > 0, mean, values.expand_as(mean))


def decode_levels(images: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) in [-1, 1], each pixel quantised to its 8-bit level o and replaced by table[c, o]
    (a (C, 256) table of levels, e.g. `posterior_mean_table`), back in [-1, 1] in the input's dtype."""
    levels = signed_to_uint8(images).long()  # (B, C, H, W)
    channels = levels.shape[1]
    if table.shape != (channels, LEVELS):
        raise ValueError(f"a table for {channels} channels is ({channels}, {LEVELS}), got {tuple(table.shape)}")
    lookup = table.to(device=images.device, dtype=torch.float32)
    decoded = torch.gather(lookup.view(1, channels, LEVELS).expand(len(levels), -1, -1), 2, levels.flatten(2))
    return (decoded.view_as(levels) / 127.5 - 1.0).to(images.dtype)

