import copy

import pytest
import torch

from genlab.nn.ema import ema_decay, ema_update


def test_decay_warms_up_then_caps():
    assert ema_decay(0, 0.999) == pytest.approx(0.1)
    assert ema_decay(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay(10**7, 0.999) == 0.999
    assert ema_decay(0, 0.999, warmup=False) == 0.999


def test_update_matches_the_recurrence():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    average = copy.deepcopy(net)
    start = [p.clone() for p in average.parameters()]
    history = []
    for step in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(4, 3))  # moves the BN running stats
        history.append([p.clone() for p in net.parameters()])
        ema_update(average, net, ema_decay(step, 0.9))
    expected = start
    for step, params in enumerate(history):
        decay = ema_decay(step, 0.9)
        expected = [decay * e + (1 - decay) * p for e, p in zip(expected, params)]
    for got, want in zip(average.parameters(), expected):
        assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(average[1].running_mean, net[1].running_mean)
