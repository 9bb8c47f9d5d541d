"""Exponential moving averages of network weights: the power-function EMA (EDM2), whose width follows the run."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def power_ema_gamma(relative_std: float) -> float:
    """The exponent gamma of the power-function EMA whose average has a relative standard deviation `relative_std`.

    The power-function EMA (Karras et al. 2024, EDM2) with decay (1 - 1/(n+1))^(gamma+1) at update n averages the
    weights seen so far with density proportional to t^gamma over training time t in [0, T], whatever T is: its
    width is a fixed fraction of the training done, so one setting suits every budget. The relative std of that
    density is sqrt((gamma+1) / ((gamma+2)^2 (gamma+3))) (EDM2 eq. 3); this is its inverse, the largest real root
    of gamma^3 + 7 gamma^2 + (16 - s^-2) gamma + 12 - s^-2. Valid for 0 < relative_std < 12^-0.5 (gamma > 0).
    """
    if not 0 < relative_std < 12**-0.5:
        raise ValueError(f"the relative std of an EMA profile lies in (0, {12**-0.5:.4f}), got {relative_std}")
    inverse_square = relative_std**-2
    # Newton's method on the cubic from gamma = 1/s (the large-gamma limit, where s ~ 1/gamma): the cubic is
    # increasing and convex for gamma > 0, so from the right of the root the iterates fall monotonically onto it.
    gamma = max(1.0 / relative_std, 1.0)
    for _ in range(100):
        value = ((gamma + 7.0) * gamma + 16.0 - inverse_square) * gamma + 12.0 - inverse_square
        slope = (3.0 * gamma + 14.0) * gamma + 16.0 - inverse_square
        step = value / slope
        gamma -= step
        if abs(step) < 1e-12 * max(1.0, gamma):
            break
    return gamma


def power_ema_decay(step: int, gamma: float) -> float:
    """Decay of the power-function EMA at update `step` (0-based): (1 - 1/(step+1))^(gamma+1), so update 0 copies
    the weights and the average keeps its shape (density t^gamma) as training goes on."""
    return (step / (step + 1.0)) ** (gamma + 1.0)


def ema_decay(step: int, gamma: float, cap: float | None = None) -> float:
    """Decay for update number `step` (0-based): the power-function EMA's (1 - 1/(step+1))^(gamma+1), at most `cap`.

    A fixed 0.9999 keeps the average near the initialisation for ~10k steps, useless on a CPU budget; the power
    function starts by copying the weights and keeps the average's width a fixed fraction of the training done
    (`power_ema_gamma`), so it suits a 5-minute run and an 800k-step one alike. A cap makes the average's width
    fixed in steps once the decay reaches it, at update cap^(1/(gamma+1)) / (1 - cap^(1/(gamma+1))).
    """
    decay = power_ema_decay(step, gamma)
    return decay if cap is None else min(cap, decay)


def first_capped_update(gamma: float, cap: float) -> int:
    """The first update at which `ema_decay(n, gamma, cap)` equals the cap (the power decay reaches it); cap < 1."""
    root = cap ** (1.0 / (gamma + 1.0))
    return math.ceil(root / (1.0 - root))


def averaged_copy(network: nn.Module) -> nn.Module:
    """A frozen copy of `network` to hold its average: no gradients, eval mode (the first update, whose decay is
    0, overwrites it with the trained weights)."""
    return copy.deepcopy(network).requires_grad_(False).eval()


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float, average_buffers: bool = False) -> None:
    """average <- decay * average + (1 - decay) * model, for parameters; buffers are copied, or with
    `average_buffers` the floating-point ones (batch norm's running statistics) are averaged the same way, so
    the averaged weights normalise with statistics gathered over the same stretch of training (integer buffers
    such as batch norm's step count are still copied).

    One batched (foreach) lerp over all parameters: a per-tensor loop cost 5x more on a small U-Net (120
    tensors, 2.4 ms against 0.5 ms a step on 2 CPU cores), the same values.
    """
    averages = list(average.parameters())
    params = [param.detach().to(avg.dtype) for avg, param in zip(averages, model.parameters())]
    if averages:
        torch._foreach_lerp_(averages, params, 1.0 - decay)
    for average_buffer, buffer in zip(average.buffers(), model.buffers()):
        if average_buffers and average_buffer.is_floating_point():
            average_buffer.lerp_(buffer.to(average_buffer.dtype), 1.0 - decay)
        else:
            average_buffer.copy_(buffer)


def average_coefficients(decays: Sequence[float]) -> np.ndarray:
    """How much each trained weight vector counts in the average after the updates with these `decays`.

    Update n (0-based) sets average <- decay_n * average + (1 - decay_n) * theta_{n+1}, theta_k being the weights
    after optimiser step k; so after N updates average = sum_k c_k theta_k, and this returns c (N,), c[k - 1]
    the weight of theta_k (float64; it sums to 1 when decay_0 = 0, the first update copying the weights). For
    the uncapped power-function EMA c_k = (k^(gamma+1) - (k-1)^(gamma+1)) / N^(gamma+1) (tests/nn).
    """
    decays = np.asarray(decays, dtype=np.float64)
    # theta_k enters at update k - 1 with weight 1 - decay_{k-1} and is then scaled by every later decay
    later = np.append(np.cumprod(decays[::-1])[::-1][1:], 1.0)  # (N,): product of the decays after update k - 1
    return (1.0 - decays) * later


def posthoc_average_weights(
    snapshot_coefficients: np.ndarray, target_coefficients: np.ndarray
) -> tuple[np.ndarray, float]:
    """Mix weights x of stored averages whose mix best matches a target average (post-hoc EMA, EDM2 sec. 3.2).

    `snapshot_coefficients` (S, N): row s is `average_coefficients` of snapshot s padded with zeros to the N
    updates of the target; `target_coefficients` (N,). Least squares: x = argmin ||x^T A - target||_2, so
    sum_s x_s average_s is the average the target profile would have kept. Returns x (S,) and the residual as a
    fraction of the target's mass, sum |x^T A - target| / sum |target| (0 when the target is in the snapshots'
    span; a few percent means the snapshots are too sparse for it).
    """
    weights, *_ = np.linalg.lstsq(snapshot_coefficients.T, target_coefficients, rcond=None)
    residual = np.abs(weights @ snapshot_coefficients - target_coefficients).sum() / np.abs(target_coefficients).sum()
    return weights, float(residual)
