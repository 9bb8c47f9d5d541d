"""Distribution metrics from feature vectors: FID, KID, Inception Score, improved precision and recall.

Everything here starts from features (N, D) (or class probabilities (N, K) for IS) already extracted by a
network (the FID Inception, or one of genlab's domain networks); which network is the caller's business.
Each metric is a pure function; the streaming FID and KID (update()/compute()/reset(), synced across
processes) are in `genlab.metrics.streaming`, on torchmetrics' Metric base, built on the helpers here
(`FeatureStatistics`, `merge_statistics`, `fid_from_statistics`, `Reservoir`).

Example:
    >>> import torch
    >>> from genlab.metrics.distribution import fid, kid
    >>> real, fake = torch.randn(200, 8), torch.randn(200, 8) + 1.0
    >>> bool(fid(real, real) < 1e-8 < fid(real, fake))
    True
    >>> mean, std = kid(real, fake, subsets=10, subset_size=100, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from genlab.utils import GenlabError

__all__ = [
    "FeatureStatistics",
    "fid",
    "frechet_distance",
    "inception_score",
    "kid",
    "merge_statistics",
    "precision_recall",
]

# Above this many kernel entries (float64), KID evaluates each subset separately instead of computing the
# full kernel matrices once and slicing them (2**25 entries = 256 MiB).
_KID_FULL_KERNEL_MAX_ENTRIES = 2**25


# ----------------------------------------------------------------------------------------------- helpers


def check_features(features: torch.Tensor, name: str, min_rows: int = 1) -> torch.Tensor:
    """Validate a feature matrix (N, D): 2-D, at least `min_rows` rows, finite. Returns it detached."""
    if not isinstance(features, torch.Tensor):
        raise GenlabError(f"{name}: features must be a torch tensor, got {type(features).__name__}")
    if features.ndim != 2:
        raise GenlabError(f"{name}: features must be (N, D), got shape {tuple(features.shape)}")
    if features.shape[0] < min_rows:
        raise GenlabError(f"{name}: needs at least {min_rows} feature vectors, got {features.shape[0]}")
    if not torch.isfinite(features).all():
        raise GenlabError(f"{name}: features contain NaN or Inf (a diverged generator or a broken extractor?)")
    return features.detach()


def _float64_device(device: torch.device) -> torch.device:
    """Where float64 work can run: the given device, except MPS (no float64 support) which falls back to CPU."""
    return torch.device("cpu") if device.type == "mps" else device


def _to_float64(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(device=_float64_device(tensor.device), dtype=torch.float64)


# ----------------------------------------------------------------------------------------- statistics


class FeatureStatistics:
    """Streaming mean and covariance of feature vectors, with memory independent of the number seen.

    State (float64): the count, a shift vector (the first batch's mean), the running sum of shifted features
    (D,) and the running sum of their outer products (D, D). Shifting by a fixed vector does not change the
    covariance but avoids the cancellation of E[x x^T] - mu mu^T when features have a large mean.

    Example:
        >>> stats = FeatureStatistics()
        >>> for batch in torch.randn(1000, 16).split(100):
        ...     stats.update(batch)
        >>> stats.count, tuple(stats.mean.shape), tuple(stats.covariance.shape)
        (1000, (16,), (16, 16))
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every feature seen so far."""
        self.count = 0
        self._shift: torch.Tensor | None = None  # (D,)
        self._sum: torch.Tensor | None = None  # (D,)
        self._outer_sum: torch.Tensor | None = None  # (D, D)

    @property
    def dim(self) -> int | None:
        """Feature dimension D, or None before the first update."""
        return None if self._shift is None else self._shift.shape[0]

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Add a batch of feature vectors (N, D)."""
        features = check_features(features, "FeatureStatistics.update")
        if self._shift is None:
            features = _to_float64(features)
            self._shift = features.mean(dim=0)
            self._sum = torch.zeros_like(self._shift)
            self._outer_sum = torch.zeros(
                features.shape[1], features.shape[1], dtype=torch.float64, device=features.device
            )
        elif features.shape[1] != self._shift.shape[0]:
            raise GenlabError(
                f"FeatureStatistics.update: features have {features.shape[1]} dimensions, "
                f"earlier batches had {self._shift.shape[0]}"
            )
        centered = features.to(device=self._shift.device, dtype=torch.float64) - self._shift  # (N, D)
        self._sum += centered.sum(dim=0)
        self._outer_sum += centered.T @ centered
        self.count += features.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        """The mean feature vector (D,), float64."""
        if self._shift is None:
            raise GenlabError("FeatureStatistics.mean: no features seen yet")
        return self._shift + self._sum / self.count

    @property
    def covariance(self) -> torch.Tensor:
        """The unbiased covariance (D, D), float64: sum (x - mu)(x - mu)^T / (N - 1); needs N >= 2."""
        if self.count < 2:
            raise GenlabError(f"FeatureStatistics.covariance: needs at least 2 feature vectors, got {self.count}")
        shifted_mean = self._sum / self.count  # (D,)
        covariance = (self._outer_sum - self.count * torch.outer(shifted_mean, shifted_mean)) / (self.count - 1)
        return 0.5 * (covariance + covariance.T)  # exactly symmetric for eigh

    def state_dict(self, keep_device: bool = False) -> dict[str, Any]:
        """The state as plain tensors (moved to the CPU unless keep_device), e.g. to cache a real set's statistics."""
        tensors = {"shift": self._shift, "sum": self._sum, "outer_sum": self._outer_sum}
        if not keep_device:
            tensors = {k: None if v is None else v.cpu() for k, v in tensors.items()}
        return {"count": self.count, **tensors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by state_dict()."""
        self.count = int(state["count"])
        self._shift, self._sum, self._outer_sum = state["shift"], state["sum"], state["outer_sum"]


def merge_statistics(parts: list[FeatureStatistics]) -> FeatureStatistics:
    """The statistics of the union of several streams (e.g. one per process), exact in float64.

    Each part sums features shifted by its own first-batch mean s_p. Moved to the first part's shift s, a
    part's sums become sum_p + n_p d and outer_p + d sum_p^T + sum_p d^T + n_p d d^T with d = s_p - s, since
    x - s = (x - s_p) + d; the moved sums of all parts then add up. One part is returned as it is.
    """
    parts = [part for part in parts if part.count > 0]
    if not parts:
        raise GenlabError("merge_statistics: no features in any part")
    if len(parts) == 1:
        return parts[0]
    if len({part.dim for part in parts}) != 1:
        raise GenlabError(f"merge_statistics: parts have different feature dimensions {[p.dim for p in parts]}")
    shift = parts[0]._shift
    total = torch.zeros_like(shift)
    outer_sum = torch.zeros_like(parts[0]._outer_sum)
    for part in parts:
        offset = part._shift.to(shift.device) - shift  # (D,)
        part_sum, part_outer = part._sum.to(shift.device), part._outer_sum.to(shift.device)
        total += part_sum + part.count * offset
        outer_sum += part_outer + torch.outer(offset, part_sum) + torch.outer(part_sum, offset)
        outer_sum += part.count * torch.outer(offset, offset)
    merged = FeatureStatistics()
    merged.load_state_dict(
        {"count": sum(part.count for part in parts), "shift": shift.clone(), "sum": total, "outer_sum": outer_sum}
    )
    return merged


# ------------------------------------------------------------------------------------------------ FID


def _trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Tr (S1 S2)^(1/2) for symmetric positive semi-definite S1, S2 (D, D), float64.

    S1 S2 has the eigenvalues of the symmetric PSD matrix F^T S2 F for any factor S1 = F F^T (AB and BA share
    their eigenvalues), so the trace is the sum of the square roots of eigvalsh(F^T S2 F). F is the Cholesky
    factor when S1 is numerically positive definite (fast), else S1^(1/2) from eigh with tiny negative
    eigenvalues clamped to 0 (singular covariances, e.g. fewer samples than dimensions). Both are backward
    stable, and neither needs scipy.linalg.sqrtm or an epsilon offset on the diagonal.
    """
    factor, info = torch.linalg.cholesky_ex(sigma1)
    if int(info) != 0:
        eigenvalues, eigenvectors = torch.linalg.eigh(sigma1)
        factor = eigenvectors * eigenvalues.clamp_min(0.0).sqrt()  # V diag(sqrt l), so F F^T = S1
    middle = factor.T @ sigma2 @ factor  # (D, D)
    middle = 0.5 * (middle + middle.T)  # exactly symmetric for eigvalsh
    return torch.linalg.eigvalsh(middle).clamp_min(0.0).sqrt().sum()


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6; seed eq. 34).

        d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

    Computed in float64 with torch only: Tr (S1 S2)^(1/2) is the sum of the square roots of the eigenvalues of
    S1 S2, which are those of the symmetric positive semi-definite F^T S2 F with S1 = F F^T (a Cholesky factor,
    or S1^(1/2) when S1 is singular), so one symmetric eigenvalue problem suffices. Tiny negative eigenvalues
    from rounding are clamped to 0, which keeps singular covariances (fewer samples than dimensions) well
    defined without the epsilon offset that scipy.linalg.sqrtm-based code needs. The result is clamped at 0,
    a distance's floor.

    Args:
        mu1, mu2: means (D,). sigma1, sigma2: covariances (D, D), symmetric positive semi-definite.

    Returns: float64 scalar tensor.
    """
    if mu1.ndim != 1 or mu1.shape != mu2.shape or sigma1.shape != (mu1.shape[0],) * 2 or sigma2.shape != sigma1.shape:
        raise GenlabError(
            f"frechet_distance: expected means (D,) and covariances (D, D); got {tuple(mu1.shape)}, "
            f"{tuple(sigma1.shape)}, {tuple(mu2.shape)}, {tuple(sigma2.shape)}"
        )
    mu1, sigma1, mu2, sigma2 = (_to_float64(t) for t in (mu1, sigma1, mu2, sigma2))
    sigma2, mu2 = sigma2.to(sigma1.device), mu2.to(sigma1.device)
    if not all(torch.isfinite(t).all() for t in (mu1, sigma1, mu2, sigma2)):
        raise GenlabError("frechet_distance: means or covariances contain NaN or Inf")
    trace_sqrt_product = _trace_sqrt_product(sigma1, sigma2)
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2.0 * trace_sqrt_product
    return distance.clamp_min(0.0)


def fid_from_statistics(real: FeatureStatistics, fake: FeatureStatistics) -> torch.Tensor:
    """FID between two sets' streamed statistics (float64 scalar); each needs at least 2 vectors."""
    if real.count < 2 or fake.count < 2:
        raise GenlabError(f"fid: needs at least 2 feature vectors per set, got {real.count} and {fake.count}")
    if real.dim != fake.dim:
        raise GenlabError(f"fid: the two sets have different feature dimensions ({real.dim} and {fake.dim})")
    return frechet_distance(real.mean, real.covariance, fake.mean, fake.covariance)


def fid(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """Fréchet Inception Distance (Heusel et al. 2017) between two feature sets (N_a, D) and (N_b, D).

    Fits a Gaussian (mean, unbiased covariance) to each set and returns their `frechet_distance`
    (float64 scalar). Symmetric in its arguments. Needs at least 2 vectors per set.

    Example:
        >>> features = torch.randn(100, 4)
        >>> float(fid(features, features)) < 1e-8
        True
    """
    statistics = []
    for features in (features_a, features_b):
        stats = FeatureStatistics()
        stats.update(check_features(features, "fid", min_rows=2))
        statistics.append(stats)
    return fid_from_statistics(*statistics)


# ------------------------------------------------------------------------------------------------ KID


def _polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(a, b) = (a.b / d + 1)^3 for all row pairs (Bińkowski et al. 2018, section 4; seed eq. 30).

    (N, D), (M, D) -> (N, M).
    """
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _mmd2_unbiased(k_aa: torch.Tensor, k_bb: torch.Tensor, k_ab: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 from kernel matrices of two samples of equal size m (Gretton et al. 2012, eq. 3).

        MMD^2 = sum_{i!=j} k(a_i, a_j) / (m (m-1)) + sum_{i!=j} k(b_i, b_j) / (m (m-1)) - 2 sum_{i,j} k(a_i, b_j) / m^2

    The seed's eq. 33 prints the cross term with a plus sign; it is a minus.
    """
    m = k_aa.shape[0]
    within = (k_aa.sum() - k_aa.diagonal().sum() + k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return within - 2.0 * k_ab.sum() / (m * m)


def _kid_subset_indices(
    n_a: int, n_b: int, subsets: int, subset_size: int, generator: torch.Generator | None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per subset, `subset_size` indices drawn without replacement from each set: randperm(n_a) then randperm(n_b)."""
    device = generator.device if generator is not None else torch.device("cpu")
    indices = []
    for _ in range(subsets):
        index_a = torch.randperm(n_a, generator=generator, device=device)[:subset_size]
        index_b = torch.randperm(n_b, generator=generator, device=device)[:subset_size]
        indices.append((index_a, index_b))
    return indices


def _kid_subset_size(n_a: int, n_b: int, subset_size: int) -> int:
    """The subset size actually used: `subset_size`, reduced with a warning when a set is smaller."""
    if subset_size < 2:
        raise GenlabError(f"kid: subset_size must be at least 2, got {subset_size}")
    smallest = min(n_a, n_b)
    if smallest < 2:
        raise GenlabError(f"kid: needs at least 2 feature vectors per set, got {n_a} and {n_b}")
    if smallest < subset_size:
        warnings.warn(
            f"kid: only {smallest} feature vectors in the smaller set, fewer than subset_size={subset_size}; "
            f"using subset_size={smallest} (the estimate stays unbiased, its spread grows)",
            stacklevel=3,
        )
        return smallest
    return subset_size


def kid(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3.

    For each of `subsets` rounds, `subset_size` vectors are drawn without replacement from each set
    (torch.randperm(N_a) then torch.randperm(N_b) from `generator`, or torch's global RNG when None), and the
    unbiased MMD^2 of the two draws is computed (seed eqs. 30-33 with the cross term's sign corrected:
    mean k(x, x') + mean k(y, y') - 2 mean k(x, y), diagonals excluded from the within-set terms).
    The values can be slightly negative when the sets come from one distribution; that is what unbiased means.

    When a set has fewer than `subset_size` vectors, the subset size is reduced to the smaller set's size with
    a warning that states the new value. Computed in float64.

    Args:
        features_a, features_b: (N_a, D) and (N_b, D) feature sets.
        subsets: number of random subsets. subset_size: vectors per set and subset.
        generator: a torch.Generator for reproducible subsets.

    Returns: (mean, standard deviation) over subsets, float64 scalars; the std is the population one
    (ddof=0), as in the reference implementation and torchmetrics.
    """
    a = check_features(features_a, "kid", min_rows=2)
    b = check_features(features_b, "kid", min_rows=2)
    if a.shape[1] != b.shape[1]:
        raise GenlabError(f"kid: the two sets have different feature dimensions ({a.shape[1]} and {b.shape[1]})")
    if subsets < 1:
        raise GenlabError(f"kid: subsets must be at least 1, got {subsets}")
    n_a, n_b = a.shape[0], b.shape[0]
    size = _kid_subset_size(n_a, n_b, subset_size)
    a = _to_float64(a)
    b = b.to(device=a.device, dtype=torch.float64)
    indices = _kid_subset_indices(n_a, n_b, subsets, size, generator)

    # Small sets: the full kernel matrices cost less than three matrix products per subset; reuse them.
    full_entries = n_a * n_a + n_b * n_b + n_a * n_b
    if full_entries <= min(_KID_FULL_KERNEL_MAX_ENTRIES, 3 * subsets * size * size):
        scores = _mmd2_subsets_from_full_kernels(a, b, indices)
    else:
        scores = torch.stack([_mmd2_subset(a[i.to(a.device)], b[j.to(a.device)]) for i, j in indices])
    if size == n_a == n_b:
        # Every "subset" is the whole of both sets (in another order): the spread is 0, not rounding noise.
        return scores.mean(), torch.zeros((), dtype=scores.dtype, device=scores.device)
    return scores.mean(), scores.std(correction=0)


def _mmd2_subset(subset_a: torch.Tensor, subset_b: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 of two subsets (m, D), kernels computed on the subsets only."""
    return _mmd2_unbiased(
        _polynomial_kernel(subset_a, subset_a),
        _polynomial_kernel(subset_b, subset_b),
        _polynomial_kernel(subset_a, subset_b),
    )


def _mmd2_subsets_from_full_kernels(
    a: torch.Tensor, b: torch.Tensor, indices: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Unbiased MMD^2 of every subset (S,) from the full kernel matrices of both sets, all subsets at once.

    A subset's kernel sum is w^T K w with w its 0/1 indicator vector (indices are drawn without replacement),
    so the S subsets cost S matrix-vector products instead of gathering S (m, m) blocks.
    """
    m = indices[0][0].numel()
    weights_a = torch.zeros(len(indices), a.shape[0], dtype=a.dtype, device=a.device)  # (S, N_a)
    weights_b = torch.zeros(len(indices), b.shape[0], dtype=b.dtype, device=b.device)  # (S, N_b)
    weights_a.scatter_(1, torch.stack([i for i, _ in indices]).to(a.device), 1.0)
    weights_b.scatter_(1, torch.stack([j for _, j in indices]).to(b.device), 1.0)
    k_aa, k_bb, k_ab = _polynomial_kernel(a, a), _polynomial_kernel(b, b), _polynomial_kernel(a, b)
    # Within-set sums without the diagonal, and the cross sum, per subset (S,).
    sum_aa = ((weights_a @ k_aa) * weights_a).sum(dim=1) - weights_a @ k_aa.diagonal()
    sum_bb = ((weights_b @ k_bb) * weights_b).sum(dim=1) - weights_b @ k_bb.diagonal()
    sum_ab = ((weights_a @ k_ab) * weights_b).sum(dim=1)
    return (sum_aa + sum_bb) / (m * (m - 1)) - 2.0 * sum_ab / (m * m)


class Reservoir:
    """Keeps a uniform random sample of at most `capacity` rows of a stream (Vitter 1985, Algorithm R)."""

    def __init__(self, capacity: int, generator: torch.Generator | None) -> None:
        if capacity < 2:
            raise GenlabError(f"KID: max_samples must be at least 2, got {capacity}")
        self.capacity = capacity
        self.generator = generator
        self.seen = 0
        self.buffer: torch.Tensor | None = None  # (<= capacity, D)

    def add(self, rows: torch.Tensor) -> None:
        free = self.capacity - (0 if self.buffer is None else self.buffer.shape[0])
        head, rows = rows[:free], rows[free:]
        if head.shape[0]:
            self.buffer = head.clone() if self.buffer is None else torch.cat((self.buffer, head))
            self.seen += head.shape[0]
        if rows.shape[0] == 0:
            return
        # Row number i of the stream (0-based) replaces a uniform slot j in [0, i] when j < capacity.
        device = self.generator.device if self.generator is not None else torch.device("cpu")
        positions = torch.arange(self.seen, self.seen + rows.shape[0], dtype=torch.float64, device=device)
        uniform = torch.rand(rows.shape[0], generator=self.generator, dtype=torch.float64, device=device)
        slots = (uniform * (positions + 1)).floor().long().clamp_max(positions.long())  # (B,)
        self.seen += rows.shape[0]
        accepted = (slots < self.capacity).nonzero().squeeze(1)
        if accepted.numel() == 0:
            return
        # When two rows of this batch hit one slot, the later one wins, as in the sequential algorithm.
        unique_slots, inverse = torch.unique(slots[accepted], return_inverse=True)
        last = torch.full_like(unique_slots, -1).scatter_reduce(0, inverse, accepted, reduce="amax")
        self.buffer[unique_slots.to(self.buffer.device)] = rows[last.to(rows.device)]


# ------------------------------------------------------------------------------------------------- IS


def inception_score(probs: torch.Tensor, splits: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Inception Score (Salimans et al. 2016, section 4): exp(E_x KL(p(y|x) || p(y))) per split.

    The N predictions are cut into `splits` contiguous parts (rows i N / splits to (i + 1) N / splits, as in the
    reference code); in each part p(y) is the mean prediction and the score is exp of the mean KL divergence.
    Uniform predictions give 1; confident one-hot predictions spread evenly over K classes give K.

    Args:
        probs: class probabilities (N, K), rows summing to 1 (apply softmax to logits first).
        splits: number of parts, N >= splits.

    Returns: (mean, population standard deviation) over splits, float64 scalars.
    """
    probs = check_features(probs, "inception_score", min_rows=max(splits, 1))
    if splits < 1:
        raise GenlabError(f"inception_score: splits must be at least 1, got {splits}")
    probs = _to_float64(probs)
    if (probs < 0).any() or not torch.allclose(probs.sum(dim=1), torch.ones_like(probs[:, 0]), atol=1e-3):
        raise GenlabError("inception_score: rows must be probabilities summing to 1 (apply softmax to logits first)")
    n = probs.shape[0]
    scores = []
    for split in range(splits):
        part = probs[split * n // splits : (split + 1) * n // splits]  # (n / splits, K)
        marginal = part.mean(dim=0, keepdim=True)  # p(y), (1, K)
        # xlogy makes 0 log 0 = 0 for classes a prediction does not use.
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(dim=1)  # (n / splits,)
        scores.append(kl.mean().exp())
    scores_tensor = torch.stack(scores)
    return scores_tensor.mean(), scores_tensor.std(correction=0)


# ---------------------------------------------------------------------------------- precision / recall


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (N, M) between rows of a (N, D) and b (M, D), via one matrix product."""
    distances = a.square().sum(dim=1, keepdim=True) + b.square().sum(dim=1) - 2.0 * (a @ b.T)
    return distances.clamp_min(0.0)


def _knn_squared_radii(points: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Squared distance from each point (N, D) to its k-th nearest neighbour in the same set, itself excluded."""
    radii = []
    for block in points.split(batch_size):
        distances = _squared_distances(block, points)  # (B, N)
        # The k + 1 smallest include the point itself at distance 0.
        radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eqs. 1-3) between real and fake features.

    Each set's manifold is the union of balls around its points with radius the distance to the point's k-th
    nearest neighbour in its own set. Precision is the fraction of fake points inside the real manifold
    (quality), recall the fraction of real points inside the fake manifold (coverage). A point on a ball's
    boundary counts as inside.

    Distances are computed in blocks of `batch_size` rows, so memory is O(batch_size * N): N = 10,000 per set
    takes a few 40 MB blocks. Work is in float32 (float64 for float64 input), after subtracting the real mean
    from both sets, which leaves distances unchanged and keeps the squared norms small.

    Args:
        real, fake: feature sets (N_r, D) and (N_f, D), each with more than k vectors.
        k: the neighbour that sets each radius (3 in the paper).
        batch_size: rows per distance block.

    Returns: (precision, recall), float64 scalars in [0, 1].
    """
    real = check_features(real, "precision_recall", min_rows=k + 1)
    fake = check_features(fake, "precision_recall", min_rows=k + 1)
    if real.shape[1] != fake.shape[1]:
        raise GenlabError(
            f"precision_recall: the two sets have different feature dimensions ({real.shape[1]} and {fake.shape[1]})"
        )
    if k < 1 or batch_size < 1:
        raise GenlabError(f"precision_recall: k and batch_size must be positive, got {k} and {batch_size}")
    dtype = torch.float64 if torch.float64 in (real.dtype, fake.dtype) else torch.float32
    center = real.to(dtype).mean(dim=0)
    real = real.to(dtype) - center
    fake = fake.to(device=real.device, dtype=dtype) - center
    real_radii = _knn_squared_radii(real, k, batch_size)  # (N_r,)
    fake_radii = _knn_squared_radii(fake, k, batch_size)  # (N_f,)

    fake_in_real = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)
    real_in_fake = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    start = 0
    # One pass over the cross distances serves both directions.
    for block in fake.split(batch_size):
        distances = _squared_distances(block, real)  # (B, N_r)
        block_radii = fake_radii[start : start + block.shape[0]]  # (B,)
        fake_in_real[start : start + block.shape[0]] = (distances <= real_radii).any(dim=1)
        real_in_fake |= (distances <= block_radii[:, None]).any(dim=0)
        start += block.shape[0]
    return fake_in_real.double().mean(), real_in_fake.double().mean()
