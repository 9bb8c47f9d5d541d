"""The last step's decoder under the training images' histogram of levels, against closed forms and SciPy."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from genlab.diffusion.decode import decode_levels, level_histogram, posterior_mean_table
from genlab.utils import signed_to_uint8, uint8_to_signed


def test_level_histogram_counts_each_channels_rounded_levels():
    images = torch.rand(5, 2, 7, 7) * 2.2 - 1.1  # some outside [-1, 1]: clamped as the quantiser does
    counts = level_histogram(images)
    levels = signed_to_uint8(images).numpy()
    assert counts.shape == (2, 256) and counts.dtype == torch.float64
    for channel in range(2):
        expected = np.bincount(levels[:, channel].ravel(), minlength=256)
        assert np.array_equal(counts[channel].numpy(), expected)


def test_posterior_mean_matches_scipy_on_a_random_prior():
    generator = torch.Generator().manual_seed(1)
    histogram = torch.rand(1, 256, generator=generator, dtype=torch.float64) ** 4
    std = 3.7
    table = posterior_mean_table(histogram, std)
    prior = histogram[0].numpy() / histogram[0].numpy().sum()
    values = np.arange(256)
    for observed in (0, 1, 5, 77, 200, 255):
        weights = prior * norm.pdf(observed, loc=values, scale=std)
        assert table[0, observed].item() == pytest.approx((weights * values).sum() / weights.sum(), abs=1e-9)


def test_two_point_prior_closed_form():
    """Prior p at level 0 and 1 - p at 255: E[v | o] = 255 / (1 + p/(1-p) exp((255^2 - 2 * 255 o) / (2 s^2)))."""
    p, s = 0.46, 40.0
    histogram = torch.zeros(1, 256, dtype=torch.float64)
    histogram[0, 0], histogram[0, 255] = p, 1 - p
    table = posterior_mean_table(histogram, s)
    for observed in (0, 60, 127, 128, 200, 255):
        expected = 255 / (1 + p / (1 - p) * math.exp((255**2 - 2 * 255 * observed) / (2 * s**2)))
        assert table[0, observed].item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_a_flat_prior_leaves_levels_away_from_the_ends_and_a_point_mass_takes_the_haze():
    flat = torch.ones(1, 256, dtype=torch.float64)
    table = posterior_mean_table(flat, 4.0)
    middle = torch.arange(30, 226, dtype=torch.float64)
    assert torch.allclose(table[0, 30:226], middle, atol=1e-6)
    assert (table[0].diff() >= 0).all()  # monotone: the decoder never swaps two levels' order
    # a black background: 46% of the pixels at level 0, the rest spread evenly
    background = torch.full((1, 256), 0.54 / 255, dtype=torch.float64)
    background[0, 0] = 0.46
    table = posterior_mean_table(background, 4.0)
    assert table[0, :4].round().eq(0).all()  # the haze of 1-3 levels goes to black
    assert table[0, 100].item() == pytest.approx(100, abs=1e-6)  # a garment's level stays
    assert (table[0].diff() >= 0).all()


def test_an_observation_no_level_explains_keeps_its_value():
    histogram = torch.zeros(1, 256, dtype=torch.float64)
    histogram[0, 0] = 1.0  # only black, and a tiny error std: level 255 has no weight that does not underflow
    table = posterior_mean_table(histogram, 0.5)
    assert table[0, 0].item() == 0 and table[0, 255].item() == 255 and torch.isfinite(table).all()


def test_decode_levels_looks_up_each_channel():
    table = torch.stack([torch.arange(256.0).flip(0), torch.arange(256.0)]).double()  # channel 0 inverted
    levels = torch.randint(0, 256, (3, 2, 4, 5), dtype=torch.uint8)
    decoded = decode_levels(uint8_to_signed(levels), table)
    assert decoded.dtype == torch.float32 and decoded.shape == levels.shape
    out = signed_to_uint8(decoded)
    assert torch.equal(out[:, 0], 255 - levels[:, 0]) and torch.equal(out[:, 1], levels[:, 1])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="std must be > 0"):
        posterior_mean_table(torch.ones(1, 256), 0.0)
    with pytest.raises(ValueError, match="at least one count"):
        posterior_mean_table(torch.zeros(2, 256).index_fill_(0, torch.tensor([0]), 1.0), 2.0)
    with pytest.raises(ValueError, match=r"\(3, 256\)"):
        decode_levels(torch.zeros(1, 3, 2, 2), torch.zeros(1, 256))
