import copy

import numpy as np
import pytest
import torch
from torch import nn

from genlab.nn.ema import (
    average_coefficients,
    ema_decay,
    ema_update,
    first_capped_update,
    posthoc_average_weights,
    power_ema_decay,
    power_ema_gamma,
)


def test_decay_copies_first_then_follows_the_power_function_up_to_the_cap():
    gamma = power_ema_gamma(0.09)
    assert ema_decay(0, gamma) == 0.0  # the first update copies the weights
    assert ema_decay(90, gamma) == pytest.approx((90 / 91) ** (gamma + 1))
    assert ema_decay(10**7, gamma, cap=0.999) == 0.999
    first = first_capped_update(gamma, 0.999)
    assert ema_decay(first, gamma, 0.999) == 0.999 and ema_decay(first - 1, gamma, 0.999) < 0.999
    assert 8900 < first < 9100  # gamma ~ 8: the decay nears 1 - 9 / n


@pytest.mark.parametrize("average_buffers", [False, True])
def test_update_matches_the_recurrence(average_buffers):
    """Parameters follow avg <- d avg + (1 - d) w; batch norm's running statistics are copied, or with
    `average_buffers` follow the same recurrence; its integer step count is copied either way."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    average = copy.deepcopy(net)
    start = [t.clone() for t in [*average.parameters(), average[1].running_mean, average[1].running_var]]
    history = []
    for step in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(4, 3))  # moves the BN running stats
        history.append([t.clone() for t in [*net.parameters(), net[1].running_mean, net[1].running_var]])
        ema_update(average, net, ema_decay(step, 2.0, cap=0.9), average_buffers=average_buffers)
    expected = start
    for step, values in enumerate(history):
        decay = ema_decay(step, 2.0, cap=0.9)
        expected = [decay * e + (1 - decay) * v for e, v in zip(expected, values)]
    *expected_params, expected_mean, expected_var = expected
    for got, want in zip(average.parameters(), expected_params):
        assert torch.allclose(got, want, atol=1e-6)
    if average_buffers:
        assert torch.allclose(average[1].running_mean, expected_mean, atol=1e-6)
        assert torch.allclose(average[1].running_var, expected_var, atol=1e-6)
        assert not torch.allclose(average[1].running_mean, net[1].running_mean)
    else:
        assert torch.equal(average[1].running_mean, net[1].running_mean)
    assert torch.equal(average[1].num_batches_tracked, net[1].num_batches_tracked)


@pytest.mark.parametrize("relative_std", [0.03, 0.1, 0.2, 0.28])
def test_power_ema_gamma_inverts_the_profile_width(relative_std):
    gamma = power_ema_gamma(relative_std)
    width = np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))  # EDM2 eq. 3
    assert width == pytest.approx(relative_std, rel=1e-9)
    cubic_roots = np.roots([1, 7, 16 - relative_std**-2, 12 - relative_std**-2])  # NumPy's roots, independently
    assert gamma == pytest.approx(max(root.real for root in cubic_roots if abs(root.imag) < 1e-9), rel=1e-9)
    for bad in (0.0, -0.1, 0.3):
        with pytest.raises(ValueError, match="relative std"):
            power_ema_gamma(bad)


@pytest.mark.parametrize("updates", [500, 5000])
def test_power_ema_averages_with_the_same_relative_width_at_any_length(updates):
    """Unroll the recursion avg <- d_n avg + (1 - d_n) w_n into the weight each update's parameters get, then
    measure that profile's std over training time t = (n + 1) / N: the chosen width at 500 and at 5000 updates."""
    gamma = power_ema_gamma(0.1)
    decays = np.array([power_ema_decay(n, gamma) for n in range(updates)])
    assert decays[0] == 0.0  # the first update copies the weights
    later = np.concatenate([np.cumprod(decays[::-1])[::-1][1:], [1.0]])  # product of the decays after update n
    weights = (1.0 - decays) * later
    assert weights.sum() == pytest.approx(1.0)
    time = np.arange(1, updates + 1) / updates
    mean = (weights * time).sum()
    assert np.sqrt((weights * (time - mean) ** 2).sum()) == pytest.approx(0.1, rel=0.02)


def test_average_coefficients_match_the_closed_form_and_a_real_average():
    gamma, updates = power_ema_gamma(0.09), 300
    coefficients = average_coefficients([power_ema_decay(n, gamma) for n in range(updates)])
    k = np.arange(1, updates + 1, dtype=np.float64)
    closed = (k ** (gamma + 1) - (k - 1) ** (gamma + 1)) / updates ** (gamma + 1)  # telescoping product
    np.testing.assert_allclose(coefficients, closed, rtol=1e-10, atol=1e-15)
    # the coefficients reproduce ema_update run on a sequence of weights (capped decays too)
    generator = torch.Generator().manual_seed(0)
    thetas = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    average, net = nn.Linear(5, 1, bias=False).double(), nn.Linear(5, 1, bias=False).double()
    decays = [ema_decay(n, 2.0, cap=0.8) for n in range(40)]
    for decay, theta in zip(decays, thetas):
        net.weight.data.copy_(theta[None])
        ema_update(average, net, decay)
    expected = torch.from_numpy(average_coefficients(decays)) @ thetas
    torch.testing.assert_close(average.weight.data[0], expected, rtol=1e-12, atol=1e-12)


def test_posthoc_average_recovers_other_profiles_from_snapshots():
    updates, every = 2000, 100
    gamma = power_ema_gamma(0.09)
    decays = [power_ema_decay(n, gamma) for n in range(updates)]
    steps = list(range(every, updates + 1, every))
    snapshots = np.stack([np.pad(average_coefficients(decays[:s]), (0, updates - s)) for s in steps])
    # a target among the snapshots: itself, exactly
    weights, residual = posthoc_average_weights(snapshots, snapshots[-1])
    assert residual < 1e-9 and weights[-1] == pytest.approx(1.0, abs=1e-6)
    # wider and narrower profiles of the whole run from 20 snapshots of the 0.09 one: the mix has the target's
    # width; what it misplaces (7% and 12% of the mass) is a sawtooth at the snapshot spacing, the snapshots'
    # cut-offs, which moves weight between iterates a few percent of the run apart
    for width, tolerance in ((0.15, 0.08), (0.05, 0.13)):
        target = average_coefficients([power_ema_decay(n, power_ema_gamma(width)) for n in range(updates)])
        weights, residual = posthoc_average_weights(snapshots, target)
        assert residual < tolerance, (width, residual)
        mix = weights @ snapshots
        time = np.arange(1, updates + 1) / updates
        mean = (mix * time).sum() / mix.sum()
        assert np.sqrt((mix * (time - mean) ** 2).sum() / mix.sum()) == pytest.approx(width, rel=0.02)
        target_mean = (target * time).sum()
        assert mean == pytest.approx(target_mean, abs=0.005)
