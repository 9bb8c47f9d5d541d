import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from genlab.bench.stats import (
    TIE,
    bootstrap_interval,
    combine_seeds,
    seed_summary,
    t_interval,
    t_quantile_975,
    winner,
    with_intervals,
)
from genlab.results import EvalResult, Score, skipped

DATA = np.array([3.1, 4.7, 2.2, 9.0, 5.5, 6.1, 4.4, 3.9, 7.2, 5.0, 1.8, 6.6])


def result(scores: list[Score], seed: int = 0) -> EvalResult:
    return EvalResult(f"runs/s{seed}", "pix2pix", "toy-paired", "test", 10, 12, scores)


def test_bootstrap_interval_matches_a_direct_resampling_loop():
    resamples, seed = 500, 7
    generator = np.random.default_rng(seed)
    means = []
    for _ in range(resamples):  # one resample at a time, drawn from the same stream
        picks = generator.integers(0, len(DATA), size=len(DATA))
        means.append(sum(DATA[i] for i in picks) / len(DATA))
    expected = np.percentile(means, [2.5, 97.5])
    assert bootstrap_interval(DATA, resamples=resamples, seed=seed) == pytest.approx(tuple(expected), abs=1e-12)


def test_bootstrap_interval_is_deterministic_covers_the_mean_and_narrows_with_confidence():
    wide = bootstrap_interval(DATA, seed=1)
    assert wide == bootstrap_interval(DATA, seed=1)
    assert wide[0] < DATA.mean() < wide[1]
    narrow = bootstrap_interval(DATA, seed=1, confidence=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    assert bootstrap_interval([2.0] * 5) == (2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_seed_summary_is_the_mean_and_sample_std():
    mean, std = seed_summary([20.0, 21.0, 25.0])
    assert mean == pytest.approx(22.0) and std == pytest.approx(np.std([20.0, 21.0, 25.0], ddof=1))
    assert seed_summary([4.0]) == (4.0, 0.0)


@pytest.mark.parametrize("degrees", [1, 2, 4, 9, 29, 30, 31, 45, 100, 1000])
def test_t_quantile_matches_scipy(degrees):
    assert t_quantile_975(degrees) == pytest.approx(scipy_stats.t.ppf(0.975, degrees), abs=2e-4)


def test_t_interval_over_seeds():
    low, high = t_interval([20.0, 21.0, 22.0])
    half = scipy_stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (low, high) == pytest.approx((21.0 - half, 21.0 + half), abs=1e-4)
    assert t_interval([20.0]) is None


def test_winner_needs_separated_intervals():
    separated = {"a": (30.0, (29.0, 31.0)), "b": (25.0, (24.0, 26.0)), "c": (20.0, (19.0, 21.0))}
    assert winner(separated, higher_is_better=True) == "a"
    assert winner(separated, higher_is_better=False) == "c"
    overlapping = {"a": (30.0, (27.0, 31.0)), "b": (28.0, (26.0, 29.0))}
    assert winner(overlapping, higher_is_better=True) == TIE
    touching = {"a": (30.0, (29.0, 31.0)), "b": (28.0, (27.0, 29.0))}  # sharing an end point is overlapping
    assert winner(touching, higher_is_better=True) == TIE


def test_winner_checks_every_rival_and_needs_intervals():
    wide_third = {"a": (30.0, (29.0, 31.0)), "b": (27.0, (26.5, 27.5)), "c": (20.0, (5.0, 35.0))}
    assert winner(wide_third, higher_is_better=True) == TIE
    assert winner({"a": (30.0, None), "b": (20.0, (19.0, 21.0))}, higher_is_better=True) == TIE
    assert winner({"a": (30.0, (29.0, 31.0)), "b": (20.0, None)}, higher_is_better=True) == TIE


def test_winner_reads_scores_and_ignores_skipped_ones():
    scores = {
        "a": Score("lpips", 0.20, interval=(0.18, 0.22), higher_is_better=False),
        "b": Score("lpips", 0.40, interval=(0.35, 0.45), higher_is_better=False),
        "c": skipped("lpips", "weights absent"),
    }
    assert winner(scores, higher_is_better=False) == "a"
    assert winner({"a": scores["a"], "c": scores["c"]}, higher_is_better=False) == "a"  # the only one computed
    assert winner({"c": scores["c"]}, higher_is_better=False) == TIE


def test_with_intervals_adds_bootstrap_intervals_only_from_per_item_values():
    paired = Score("psnr", float(DATA.mean()), count=len(DATA), per_item=tuple(DATA))
    distribution = Score("domain.fid", 40.0, count=12, higher_is_better=False)
    missing = skipped("ms_ssim", "too small")
    out = with_intervals([paired, distribution, missing], seed=3)
    assert out[0].interval == bootstrap_interval(DATA, seed=3)
    assert out[1] == distribution and out[1].interval is None
    assert out[2] == missing


def test_combine_seeds_reports_mean_std_and_a_t_interval():
    runs = [
        result([Score("psnr", value, count=12, unit="dB"), skipped("lpips", "no weights"), Score("ssim", s)], seed)
        for seed, (value, s) in enumerate([(20.0, 0.5), (21.0, 0.6), (22.0, 0.7)])
    ]
    runs[2].scores[2] = skipped("ssim", "crashed")  # computed in 2 of 3 seeds
    combined = {score.metric: score for score in combine_seeds(runs)}
    assert list(combined) == ["psnr", "lpips", "ssim"]
    psnr = combined["psnr"]
    assert psnr.value == pytest.approx(21.0) and psnr.std == pytest.approx(1.0) and psnr.count == 12
    assert psnr.interval == pytest.approx(t_interval([20.0, 21.0, 22.0]))
    assert psnr.unit == "dB" and "3 training seeds" in psnr.notes[0]
    assert combined["lpips"].skipped == "no weights"
    assert combined["ssim"].value == pytest.approx(0.55) and any("2 of 3" in note for note in combined["ssim"].notes)


def test_combine_seeds_of_one_run_keeps_the_bootstrap_over_images():
    single = [result([Score("psnr", float(DATA.mean()), std=float(DATA.std()), per_item=tuple(DATA))])]
    (psnr,) = combine_seeds(single, seed=5)
    assert psnr.interval == bootstrap_interval(DATA, seed=5) and psnr.std == pytest.approx(DATA.std())
    assert combine_seeds([]) == []
