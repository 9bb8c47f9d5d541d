"""Streaming metrics on torchmetrics' `Metric` base: PSNR, SSIM, MS-SSIM, FID and KID that sync across processes.

Each class keeps genlab's own math (the pure functions of `genlab.metrics.pixel` and `.distribution`, tested
against scikit-image, SciPy and torchmetrics) and declares its state the torchmetrics way, with a reduction
per state. So `update()` on every rank and `compute()` on any of them gives the value of all ranks' data
together, under torch.distributed (DDP, Accelerate, torchrun), with no code of genlab's own for the sync.

States, and how processes combine them:
- PSNR / SSIM / MS-SSIM: a float64 sum and an image count ("sum"), and with keep_per_image the per-image
  values ("cat", in rank order).
- FID: per process one part of streaming moments per set (count, shift, shifted sum and outer-product sum;
  see `FeatureStatistics`); parts are concatenated ("cat") and merged exactly at compute().
- KID: the kept features themselves ("cat"). With max_samples each process keeps at most that many per set.

Example:
    >>> import torch
    >>> from genlab.metrics.distribution import fid
    >>> from genlab.metrics.streaming import FID
    >>> real, fake = torch.randn(200, 8), torch.randn(200, 8) + 1.0
    >>> metric = FID()
    >>> metric.update(real, real=True)
    >>> metric.update(fake, real=False)
    >>> bool(torch.isclose(metric.compute(), fid(real, fake)))
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from genlab.metrics.distribution import (
    FeatureStatistics,
    Reservoir,
    check_features,
    fid_from_statistics,
    kid,
    merge_statistics,
)
from genlab.metrics.pixel import (
    Border,
    check_pair,
    check_values,
    ms_ssim_per_image,
    psnr_per_image,
    ssim_per_image,
)
from genlab.utils import GenlabError

__all__ = ["FID", "KID", "MSSSIM", "PSNR", "SSIM"]


def _concatenated(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor | None:
    """A "cat" state as one tensor: a list before a sync, a tensor after one; None when nothing was added."""
    if isinstance(state, list) and not state:
        return None
    return dim_zero_cat(state)


# ------------------------------------------------------------------------------------------- pixel


class _PerImageMean(Metric):
    """A streaming mean of a per-image score: update() adds a batch of pairs, compute() averages over all seen."""

    name = "metric"
    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, data_range: float, keep_per_image: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_range = data_range
        self.keep_per_image = keep_per_image
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("values", [], dist_reduce_fx="cat")

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of image pairs (N, C, H, W)."""
        pred, target = check_pair(pred, target, self.data_range, self.name)
        values = check_values(self._per_image(pred, target), self.name)  # (N,)
        values = values.to(device=self.total.device, dtype=torch.float64)
        self.total += values.sum()
        self.count += values.numel()
        if self.keep_per_image:
            self.values.append(values)

    def compute(self) -> torch.Tensor:
        """The mean over every image seen since the last reset, on every process (float64 scalar)."""
        if int(self.count) == 0:
            raise GenlabError(f"{self.name}: compute() called before any update()")
        return self.total / self.count

    def compute_per_image(self) -> torch.Tensor:
        """Every per-image value seen since the last reset (float64, (N,)), rank by rank; needs keep_per_image."""
        if not self.keep_per_image:
            raise GenlabError(f"{self.name}: per-image values were not kept; build it with keep_per_image=True")
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            values = _concatenated(self.values)
        if values is None:
            raise GenlabError(f"{self.name}: compute_per_image() called before any update()")
        return values


class PSNR(_PerImageMean):
    """Streaming mean of per-image PSNR in dB (see `genlab.metrics.pixel.psnr`; an identical pair gives +inf)."""

    name = "psnr"

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return psnr_per_image(pred, target, self.data_range)


class SSIM(_PerImageMean):
    """Streaming mean of per-image SSIM (see `genlab.metrics.pixel.ssim`, whose `border` it takes)."""

    name = "ssim"

    def __init__(
        self, data_range: float, keep_per_image: bool = False, border: Border = "valid", **kwargs: Any
    ) -> None:
        super().__init__(data_range, keep_per_image, **kwargs)
        self.border = border

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ssim_per_image(pred, target, self.data_range, self.border)


class MSSSIM(_PerImageMean):
    """Streaming mean of per-image MS-SSIM (see `genlab.metrics.pixel.ms_ssim`; images of at least 176x176)."""

    name = "ms_ssim"

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ms_ssim_per_image(pred, target, self.data_range)


# -------------------------------------------------------------------------------------------- FID

_MOMENTS = ("count", "shift", "sum", "outer_sum")  # a FeatureStatistics' state, one row per part


class FID(Metric):
    """Streaming FID: each set's mean and covariance accumulate in float64, memory independent of the count.

    `reset_fake()` keeps the real statistics, for evaluating successive checkpoints against one real set;
    `load_real(statistics)` starts from cached ones; `statistics(real=...)` returns a set's merged moments.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for which in ("real", "fake"):
            for moment in _MOMENTS:
                self.add_state(f"{which}_{moment}", [], dist_reduce_fx="cat")

    def _parts(self, which: str) -> list[FeatureStatistics]:
        """The set's parts (one per process after a sync, else at most one) as FeatureStatistics."""
        tensors = [_concatenated(getattr(self, f"{which}_{moment}")) for moment in _MOMENTS]
        if tensors[0] is None:
            return []
        parts = []
        for count, shift, total, outer_sum in zip(*tensors):
            part = FeatureStatistics()
            part.load_state_dict({"count": int(count), "shift": shift, "sum": total, "outer_sum": outer_sum})
            parts.append(part)
        return parts

    def _store(self, which: str, statistics: FeatureStatistics) -> None:
        """Make `statistics` this process's only part of the set (rows of one, so parts concatenate)."""
        state = statistics.state_dict(keep_device=True)
        for moment in _MOMENTS:
            value = state[moment]
            device = state["shift"].device  # every state on one device, as NCCL's gather needs
            row = torch.tensor([value], dtype=torch.int64, device=device) if moment == "count" else value.unsqueeze(0)
            setattr(self, f"{which}_{moment}", [row])

    @torch.no_grad()
    def update(self, features: torch.Tensor, real: bool) -> None:
        """Add a batch of features (N, D) to the real or the fake set."""
        which = "real" if real else "fake"
        parts = self._parts(which)
        statistics = merge_statistics(parts) if parts else FeatureStatistics()
        statistics.update(features)
        self._store(which, statistics)

    def update_real(self, features: torch.Tensor) -> None:
        self.update(features, real=True)

    def update_fake(self, features: torch.Tensor) -> None:
        self.update(features, real=False)

    def statistics(self, real: bool) -> FeatureStatistics:
        """The merged moments of the real or fake set seen so far (of every process after a sync)."""
        parts = self._parts("real" if real else "fake")
        return merge_statistics(parts) if parts else FeatureStatistics()

    def load_real(self, statistics: FeatureStatistics) -> None:
        """Use `statistics` (e.g. cached with FeatureStatistics.state_dict()) as the real set."""
        if statistics.count < 2:
            raise GenlabError(f"FID.load_real: the statistics hold {statistics.count} feature vectors, need 2 or more")
        self._store("real", statistics)
        self._computed = None

    def compute(self) -> torch.Tensor:
        """FID between everything seen so far (float64 scalar)."""
        return fid_from_statistics(self.statistics(real=True), self.statistics(real=False))

    def reset_fake(self) -> None:
        """Clear the fake set only."""
        for moment in _MOMENTS:
            setattr(self, f"fake_{moment}", [])
        self._computed = None


# -------------------------------------------------------------------------------------------- KID


class KID(Metric):
    """Streaming KID: keeps the features themselves (KID needs them, not just moments).

    With max_samples=None every feature is kept (memory grows with N: 10,000 x 2048 float32 is 80 MB per set).
    With max_samples=M each set keeps a uniform random sample of at most M vectors by reservoir sampling
    (Algorithm R, using `generator`), so memory is bounded and the estimate stays unbiased over the stream;
    under several processes each keeps at most M and compute() uses them all.
    compute() returns `kid(real, fake, subsets, subset_size, generator)`: (mean, std) over subsets.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(
        self,
        subsets: int = 100,
        subset_size: int = 1000,
        max_samples: int | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.subsets = subsets
        self.subset_size = subset_size
        self.max_samples = max_samples
        self.generator = generator
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")
        self._reservoirs = self._new_reservoirs()

    def _new_reservoirs(self) -> dict[str, Reservoir] | None:
        if self.max_samples is None:
            return None
        return {which: Reservoir(self.max_samples, self.generator) for which in ("real", "fake")}

    def reset(self) -> None:
        """Clear both sets."""
        super().reset()
        self._reservoirs = self._new_reservoirs()

    def reset_fake(self) -> None:
        """Clear the fake set only."""
        self.fake_features = []
        if self._reservoirs is not None:
            self._reservoirs["fake"] = Reservoir(self.max_samples, self.generator)
        self._computed = None

    @torch.no_grad()
    def update(self, features: torch.Tensor, real: bool) -> None:
        """Add a batch of features (N, D) to the real or the fake set."""
        features = check_features(features, "KID.update")
        for kept in (self.real_features, self.fake_features):
            if kept and kept[0].shape[1] != features.shape[1]:
                raise GenlabError(
                    f"KID.update: features have {features.shape[1]} dimensions, earlier ones {kept[0].shape[1]}"
                )
        which = "real" if real else "fake"
        if self._reservoirs is None:
            getattr(self, f"{which}_features").append(features.clone())
        else:
            reservoir = self._reservoirs[which]
            reservoir.add(features)
            setattr(self, f"{which}_features", [reservoir.buffer])

    def update_real(self, features: torch.Tensor) -> None:
        self.update(features, real=True)

    def update_fake(self, features: torch.Tensor) -> None:
        self.update(features, real=False)

    def kept(self, real: bool) -> torch.Tensor:
        """The features kept for the real or fake set (N, D), of every process after a sync."""
        which = "real" if real else "fake"
        features = _concatenated(getattr(self, f"{which}_features"))
        if features is None:
            raise GenlabError(f"KID.compute: no {which} features seen yet")
        return features

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of KID over subsets between the kept real and fake features."""
        return kid(self.kept(real=True), self.kept(real=False), self.subsets, self.subset_size, self.generator)
