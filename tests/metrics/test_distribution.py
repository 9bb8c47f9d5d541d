"""FID, KID, IS and improved precision/recall against SciPy/NumPy references and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from genlab.metrics import distribution
from genlab.metrics.distribution import (
    FeatureStatistics,
    fid,
    frechet_distance,
    inception_score,
    kid,
    precision_recall,
)
from genlab.utils import GenlabError


def _features(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=generator, dtype=torch.float64) / d**0.5  # correlated features
    return torch.randn(n, d, generator=generator, dtype=torch.float64) @ mixing * scale + shift


# ------------------------------------------------------------------------------------------------ FID


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The usual pytorch-fid evaluation: sqrtm of the product, real part of its trace."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean).real)


@pytest.mark.parametrize(
    ("n", "d", "rtol"),
    [(400, 16, 1e-9), (300, 64, 1e-9), (40, 64, 1e-6), (30, 128, 1e-6)],  # last two: N < D, singular
)
def test_fid_matches_scipy_sqrtm(n: int, d: int, rtol: float) -> None:
    a = _features(n, d, seed=1)
    b = _features(n + 7, d, seed=2, shift=0.3, scale=1.5)
    expected = _scipy_fid(a.numpy(), b.numpy())
    assert float(fid(a, b)) == pytest.approx(expected, rel=rtol)
    assert float(fid(b, a)) == pytest.approx(expected, rel=rtol)  # symmetric


def test_cholesky_and_eigh_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    # Positive definite S1 takes the Cholesky path; a failed factorisation falls back to S1^(1/2) from eigh.
    a, b = _features(200, 24, seed=1), _features(150, 24, seed=2, shift=0.3, scale=1.5)
    cholesky_value = float(fid(a, b))
    real_cholesky_ex = torch.linalg.cholesky_ex

    def failing_cholesky_ex(matrix: torch.Tensor):
        factor, _ = real_cholesky_ex(matrix)
        return factor, torch.tensor(1)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", failing_cholesky_ex)
    assert float(fid(a, b)) == pytest.approx(cholesky_value, rel=1e-11)
    assert cholesky_value == pytest.approx(_scipy_fid(a.numpy(), b.numpy()), rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero() -> None:
    for n, d in [(500, 32), (20, 64)]:
        a = _features(n, d, seed=3, shift=5.0)
        assert abs(float(fid(a, a.clone()))) < 1e-8
        assert float(fid(a.float(), a.float())) < 1e-4  # float32 features are promoted to float64


def test_frechet_distance_closed_form_for_diagonal_gaussians() -> None:
    # Commuting (diagonal) covariances: Tr (S1 S2)^(1/2) = sum sqrt(s1 s2),
    # so d^2 = |mu1 - mu2|^2 + sum (sqrt s1 - sqrt s2)^2.
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0, 0.5]), torch.tensor([1.0, 1.0, 0.0, 0.0])
    s1, s2 = torch.tensor([1.0, 4.0, 0.25, 0.0]), torch.tensor([4.0, 1.0, 0.25, 9.0])  # one zero variance
    expected = (mu1 - mu2).square().sum() + (s1.sqrt() - s2.sqrt()).square().sum()
    result = frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert result.dtype == torch.float64
    assert float(result) == pytest.approx(float(expected), rel=1e-12)
    assert float(result) == pytest.approx(5.25 + 11.0, rel=1e-12)  # means (1 + 4 + 0.25), variances (1 + 1 + 9)


def test_frechet_distance_rotated_gaussians() -> None:
    # Same spectrum in a rotated basis: the covariances commute after rotation, the answer is basis-free.
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    s1, s2 = torch.arange(1.0, 7.0, dtype=torch.float64), torch.arange(6.0, 0.0, -1.0, dtype=torch.float64)
    sigma1, sigma2 = rotation @ torch.diag(s1) @ rotation.T, rotation @ torch.diag(s2) @ rotation.T
    zero = torch.zeros(6, dtype=torch.float64)
    expected = (s1.sqrt() - s2.sqrt()).square().sum()
    assert float(frechet_distance(zero, sigma1, zero, sigma2)) == pytest.approx(float(expected), rel=1e-10)


def test_feature_statistics_streaming_equals_one_shot() -> None:
    features = _features(1003, 24, seed=4, shift=1e4)  # a large mean: the shift keeps the covariance exact
    stats = FeatureStatistics()
    for batch in features.float().split(17):
        stats.update(batch)
    reference = features.float().double().numpy()
    assert stats.count == 1003 and stats.dim == 24
    np.testing.assert_allclose(stats.mean.numpy(), reference.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance.numpy(), np.cov(reference, rowvar=False), rtol=1e-8, atol=1e-9)

    restored = FeatureStatistics()
    restored.load_state_dict(stats.state_dict())
    torch.testing.assert_close(restored.covariance, stats.covariance)


def test_fid_rejects_bad_features() -> None:
    good = torch.randn(10, 4)
    for bad, message in [(good.clone().fill_(float("nan")), "NaN or Inf"), (torch.randn(10), r"\(N, D\)")]:
        with pytest.raises(GenlabError, match=message):
            fid(bad, good)
    with pytest.raises(GenlabError, match="dimensions"):
        fid(good, torch.randn(10, 5))
    infinite = good.clone()
    infinite[3, 1] = float("inf")
    with pytest.raises(GenlabError, match="NaN or Inf"):
        FeatureStatistics().update(infinite)


# ------------------------------------------------------------------------------------------------ KID


def _numpy_kid(a: np.ndarray, b: np.ndarray, subsets: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic kernel, written directly: off-diagonal means minus twice the cross mean."""
    d = a.shape[1]
    values = []
    for index_a, index_b in subsets:
        x, y = a[index_a], b[index_b]
        k_xx, k_yy, k_xy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        off_diagonal = ~np.eye(len(x), dtype=bool)
        values.append(k_xx[off_diagonal].mean() + k_yy[off_diagonal].mean() - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


def _same_subsets(n_a: int, n_b: int, subsets: int, size: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The subsets kid() draws from torch.Generator().manual_seed(seed): randperm(n_a), then randperm(n_b)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randperm(n_a, generator=generator)[:size].numpy(),
            torch.randperm(n_b, generator=generator)[:size].numpy(),
        )
        for _ in range(subsets)
    ]


@pytest.mark.parametrize("full_kernels", [True, False])
def test_kid_matches_numpy(full_kernels: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not full_kernels:
        monkeypatch.setattr(distribution, "_KID_FULL_KERNEL_MAX_ENTRIES", 0)  # force the per-subset path
    a, b = _features(220, 32, seed=8).float(), _features(180, 32, seed=9, shift=0.4).float()
    mean, std = kid(a, b, subsets=12, subset_size=100, generator=torch.Generator().manual_seed(42))
    expected_mean, expected_std = _numpy_kid(
        a.double().numpy(), b.double().numpy(), _same_subsets(220, 180, 12, 100, seed=42)
    )
    assert float(mean) == pytest.approx(expected_mean, rel=1e-10)
    assert float(std) == pytest.approx(expected_std, rel=1e-8)


def test_kid_identical_distributions_near_zero_shifted_positive() -> None:
    a, b = _features(600, 16, seed=10), _features(600, 16, seed=10)[torch.randperm(600)]
    same_mean, same_std = kid(a[:300], a[300:], subsets=20, subset_size=200, generator=torch.Generator().manual_seed(0))
    shifted_mean, shifted_std = kid(
        a[:300], b[300:] + 1.0, subsets=20, subset_size=200, generator=torch.Generator().manual_seed(0)
    )
    assert abs(float(same_mean)) < 0.05
    assert float(shifted_mean) > 10 * (abs(float(same_mean)) + float(same_std))
    assert float(shifted_std) >= 0


def test_kid_reduces_subset_size_with_a_warning() -> None:
    a, b = _features(50, 8, seed=11), _features(80, 8, seed=12)
    with pytest.warns(UserWarning, match="using subset_size=50"):
        mean, _ = kid(a, b, subsets=3, subset_size=1000, generator=torch.Generator().manual_seed(1))
    expected, _ = _numpy_kid(a.numpy(), b.numpy(), _same_subsets(50, 80, 3, 50, seed=1))
    assert float(mean) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(GenlabError, match="at least 2"):
        kid(a[:1], b)


def test_inception_score_known_answers() -> None:
    uniform = torch.full((100, 10), 0.1)
    mean, std = inception_score(uniform, splits=10)
    assert float(mean) == pytest.approx(1.0, abs=1e-12) and float(std) == pytest.approx(0.0, abs=1e-12)
    # One-hot predictions, each split using all K classes equally often: exp(log K) = K.
    classes = 7
    one_hot = torch.eye(classes).repeat(10 * 3, 1)  # 210 rows, 21 per split, 3 of each class
    mean, std = inception_score(one_hot, splits=10)
    assert float(mean) == pytest.approx(classes, rel=1e-12) and float(std) == pytest.approx(0.0, abs=1e-10)
    # One-hot but always the same class: no diversity, score 1.
    assert float(inception_score(torch.eye(5)[[2] * 50], splits=5)[0]) == pytest.approx(1.0, abs=1e-12)


def test_inception_score_matches_reference_formula() -> None:
    probs = torch.softmax(3 * torch.randn(503, 12, generator=torch.Generator().manual_seed(0)), dim=1)
    p = probs.double().numpy()
    scores = []
    for i in range(4):
        part = p[i * 503 // 4 : (i + 1) * 503 // 4]
        py = part.mean(axis=0, keepdims=True)
        scores.append(np.exp((part * (np.log(part) - np.log(py))).sum(axis=1).mean()))
    mean, std = inception_score(probs, splits=4)
    assert float(mean) == pytest.approx(np.mean(scores), rel=1e-6)
    assert float(std) == pytest.approx(np.std(scores), rel=1e-4)


def test_inception_score_rejects_logits() -> None:
    with pytest.raises(GenlabError, match="softmax"):
        inception_score(torch.randn(20, 4), splits=2)
    with pytest.raises(GenlabError, match="at least 10"):
        inception_score(torch.full((5, 4), 0.25), splits=10)


# ---------------------------------------------------------------------------------- precision / recall


def test_precision_recall_identical_and_far_apart_sets() -> None:
    real = _features(200, 8, seed=15)
    precision, recall = precision_recall(real, real.clone(), k=3, batch_size=32)
    assert float(precision) == 1.0 and float(recall) == 1.0
    precision, recall = precision_recall(real, real + 100.0, k=3, batch_size=32)
    assert float(precision) == 0.0 and float(recall) == 0.0


def test_precision_recall_hand_made_points() -> None:
    # Real: 0, 1, ..., 9 on a line, so every k=1 radius is 1.
    real = torch.arange(10, dtype=torch.float64)[:, None]
    # Fake radii (k=1): 0.5 -> 2 (to 2.5), 2.5 -> 1, 3.5 -> 1, 50 -> 1, 51 -> 1.
    fake = torch.tensor([0.5, 2.5, 3.5, 50.0, 51.0], dtype=torch.float64)[:, None]
    precision, recall = precision_recall(real, fake, k=1, batch_size=2)
    assert float(precision) == pytest.approx(3 / 5)  # 0.5, 2.5 and 3.5 lie within 1 of a real point
    assert float(recall) == pytest.approx(5 / 10)  # 0..2 (ball at 0.5), 2..3 (2.5), 3..4 (3.5)


def _brute_force_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(points: np.ndarray) -> np.ndarray:
        distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
        return np.sort(distances, axis=1)[:, k]  # column 0 is the point itself

    cross = np.linalg.norm(fake[:, None] - real[None], axis=-1)  # (N_f, N_r)
    precision = (cross <= radii(real)[None, :]).any(axis=1).mean()
    recall = (cross <= radii(fake)[:, None]).any(axis=0).mean()
    return float(precision), float(recall)


def test_precision_recall_matches_brute_force() -> None:
    real, fake = _features(300, 6, seed=16), _features(250, 6, seed=17, shift=0.3, scale=1.4)
    expected = _brute_force_precision_recall(real.numpy(), fake.numpy(), k=3)
    precision, recall = precision_recall(real, fake, k=3, batch_size=64)
    assert (float(precision), float(recall)) == pytest.approx(expected, abs=1e-12)
    assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0  # a non-trivial case


def test_precision_recall_rejects_too_few_points() -> None:
    with pytest.raises(GenlabError, match="at least 4"):
        precision_recall(torch.randn(3, 2), torch.randn(10, 2), k=3)


def test_kid_of_whole_sets_has_no_spread():
    """With the subset size equal to both set sizes every subset is the whole set: std exactly 0."""
    a, b = torch.randn(60, 8, dtype=torch.float64), torch.randn(60, 8, dtype=torch.float64) + 0.3
    mean, std = kid(a, b, subsets=10, subset_size=60, generator=torch.Generator().manual_seed(0))
    expected, _ = _numpy_kid(a.numpy(), b.numpy(), [(np.arange(60), np.arange(60))])
    assert std.item() == 0.0 and mean.item() == pytest.approx(expected, rel=1e-10)
