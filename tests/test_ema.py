"""The EMA of the transformer weights (train/ema.py): the update rule, its warmup, and the frozen float32 copy."""

import pytest
import torch

from flashi2v.train.ema import ema_decay, make_ema, update_ema


def linear(seed):
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2)


def test_update_moves_the_average_a_fraction_one_minus_decay_towards_the_model():
    model, ema = linear(0), linear(1)
    old = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, 0.9)
    for e, o, m in zip(ema.parameters(), old, model.parameters()):
        torch.testing.assert_close(e, 0.9 * o + 0.1 * m, rtol=0, atol=1e-7)
    # repeated updates towards a fixed model: the gap shrinks by the decay each time
    gap = [e.detach() - m.detach() for e, m in zip(ema.parameters(), model.parameters())]
    for _ in range(5):
        update_ema(ema, model, 0.9)
    for e, m, g in zip(ema.parameters(), model.parameters(), gap):
        torch.testing.assert_close(e - m, g * 0.9**5, rtol=1e-5, atol=1e-7)
    update_ema(ema, model, 0.0)  # decay 0: the average is the model
    assert all(torch.equal(e, m) for e, m in zip(ema.parameters(), model.parameters()))


def test_decay_warmup():
    assert ema_decay(0.999, 1, warmup=False) == 0.999
    assert ema_decay(0.999, 1, warmup=True) == pytest.approx(2 / 11)
    assert ema_decay(0.999, 90, warmup=True) == pytest.approx(91 / 100)
    assert ema_decay(0.9, 10**6, warmup=True) == 0.9  # the warmup only ever lowers the decay


def test_make_ema_is_a_frozen_float32_copy():
    model = linear(0).to(torch.bfloat16)
    ema = make_ema(model)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in ema.parameters())
    assert not ema.training
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(ema.weight, model.weight.float())  # a copy, not a view of the live weights
