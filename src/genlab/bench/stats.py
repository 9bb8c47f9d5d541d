"""Uncertainty for the benchmark report: bootstrap intervals over test images, spread over training seeds, and
winners decided only where intervals separate.

Two kinds of interval are used, and the report says which one a value carries:

- one training seed: the 95% percentile bootstrap interval of the mean over test images, from `Score.per_item`
  (Efron & Tibshirani 1993, ch. 13); metrics without per-image values (FID, KID, IS...) get none;
- several training seeds: mean and sample std (ddof=1) over seeds, and the Student-t interval of the mean over
  seeds, mean ± t_{0.975, n-1} · std / sqrt(n). Seeds are the dominant source of variance for trained models, so
  this interval is the honest one; pooling the images of all seeds into one bootstrap would hide it.

>>> low, high = bootstrap_interval([1.0, 2.0, 3.0, 4.0], resamples=500)
>>> 1.0 <= low < 2.5 < high <= 4.0
True
>>> winner({"a": (0.9, (0.85, 0.95)), "b": (0.5, (0.4, 0.6))}, higher_is_better=True)
'a'
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from genlab.results import EvalResult, Score

TIE = "tie"

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (scipy.stats.t.ppf(0.975, df)); SciPy is
# only a test dependency, and the report never needs more than a few dozen seeds.
_T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


def bootstrap_interval(
    values: Sequence[float] | np.ndarray, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one value per test image).

    Draws `resamples` resamples of size N with replacement in one (resamples, N) index array from
    `np.random.default_rng(seed)`, takes each resample's mean, and returns the (1 - c)/2 and (1 + c)/2 quantiles
    (NumPy's default linear interpolation). Deterministic for a given seed.

    >>> bootstrap_interval([5.0, 5.0, 5.0])
    (5.0, 5.0)
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError(f"bootstrap_interval: need a non-empty 1-D sequence, got shape {data.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_interval: confidence must lie in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, data.size, size=(resamples, data.size))  # (R, N)
    means = data[indices].mean(axis=1)  # (R,)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def seed_summary(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) over training seeds; the std of a single seed is 0.

    >>> seed_summary([1.0, 2.0, 3.0])
    (2.0, 1.0)
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("seed_summary: no values")
    std = float(data.std(ddof=1)) if data.size > 1 else 0.0
    return float(data.mean()), std


def t_quantile_975(degrees_of_freedom: int) -> float:
    """t_{0.975, df} from a table (df <= 30), beyond it the Cornish-Fisher expansion (error < 1e-4)."""
    if degrees_of_freedom < 1:
        raise ValueError(f"t_quantile_975: need at least 1 degree of freedom, got {degrees_of_freedom}")
    if degrees_of_freedom <= len(_T_975):
        return _T_975[degrees_of_freedom - 1]
    z, df = 1.959964, degrees_of_freedom  # Abramowitz & Stegun 26.7.5, first two terms
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The 95% Student-t interval of the mean over seeds, mean ± t_{0.975, n-1} · std / sqrt(n); None for n < 2."""
    if len(values) < 2:
        return None
    mean, std = seed_summary(values)
    half = t_quantile_975(len(values) - 1) * std / math.sqrt(len(values))
    return mean - half, mean + half


Comparable = Score | tuple[float, tuple[float, float] | None]


def _value_and_interval(item: Comparable) -> tuple[float, tuple[float, float] | None]:
    if isinstance(item, Score):
        return (item.value if item.ok else math.nan), item.interval
    value, interval = item
    return float(value), (tuple(interval) if interval is not None else None)


def winner(entries: Mapping[str, Comparable], higher_is_better: bool) -> str:
    """The entry whose interval lies wholly on the better side of every other entry's interval, else "tie".

    `entries` maps a name to a Score or a (value, interval) pair. Skipped scores and NaN values take no part.
    The best value wins only when its interval is strictly better than the interval of the runner-up and of
    every other entry (an entry with a wide interval can overlap even when its value is lower); when any of
    those intervals is missing there is nothing to separate, and the answer is "tie". A single valid entry is
    returned as it is (it has no rival); no valid entry gives "tie".

    >>> winner({"a": (1.0, (0.9, 1.1)), "b": (0.95, (0.8, 1.0))}, higher_is_better=True)
    'tie'
    """
    valid = {
        name: pair
        for name, pair in ((n, _value_and_interval(item)) for n, item in entries.items())
        if math.isfinite(pair[0])
    }
    if not valid:
        return TIE
    ranked = sorted(valid, key=lambda name: valid[name][0], reverse=higher_is_better)
    best = ranked[0]
    if len(ranked) == 1:
        return best
    best_interval = valid[best][1]
    if best_interval is None:
        return TIE
    for rival in ranked[1:]:
        rival_interval = valid[rival][1]
        if rival_interval is None:
            return TIE
        separated = best_interval[0] > rival_interval[1] if higher_is_better else best_interval[1] < rival_interval[0]
        if not separated:
            return TIE
    return best


def with_intervals(scores: Sequence[Score], seed: int = 0, resamples: int = 2000) -> list[Score]:
    """Scores with a bootstrap interval of the mean over images added wherever `per_item` holds 2+ values.

    Scores without per-item values (distribution metrics) or skipped ones are returned unchanged, as is an
    interval already present when no per-item values back it.
    """
    updated = []
    for score in scores:
        if score.ok and score.per_item is not None and len(score.per_item) >= 2:
            values = np.asarray(score.per_item, dtype=np.float64)
            values = values[np.isfinite(values)]
            if values.size >= 2:
                score = dataclasses.replace(score, interval=bootstrap_interval(values, resamples, seed=seed))
        updated.append(score)
    return updated


def combine_seeds(results: Sequence[EvalResult], seed: int = 0) -> list[Score]:
    """One list of Scores for an entry trained with several seeds (one EvalResult per seed).

    One result: its scores with per-image bootstrap intervals (`with_intervals`); `std` stays the spread over
    images. Several: per metric (in order of first appearance), value = mean over the seeds that computed it,
    std = sample std over those seeds, interval = the t-interval of the mean (see the module docstring),
    count = the per-seed image count; a metric skipped in every seed stays skipped with the first reason, and one
    skipped in some seeds only says so in its notes. Per-item values are dropped (they belong to single runs).
    """
    if not results:
        return []
    if len(results) == 1:
        return with_intervals(results[0].scores, seed=seed)
    metrics = list(dict.fromkeys(metric for result in results for metric in result.metrics()))
    combined = []
    for metric in metrics:
        scores = [score for result in results if (score := result.score(metric)) is not None]
        computed = [score for score in scores if score.ok and math.isfinite(score.value)]
        if not computed:
            combined.append(dataclasses.replace(scores[0], per_item=None))
            continue
        values = [score.value for score in computed]
        mean, std = seed_summary(values)
        notes = list(dict.fromkeys(note for score in computed for note in score.notes))
        notes.insert(0, f"mean ± std over {len(computed)} training seeds; 95% t-interval over seeds")
        if len(computed) < len(results):
            notes.append(f"computed in {len(computed)} of {len(results)} seeds")
        combined.append(
            dataclasses.replace(
                computed[0],
                value=mean,
                std=std,
                interval=t_interval(values),
                notes=tuple(notes),
                per_item=None,
            )
        )
    return combined
