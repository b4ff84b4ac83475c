"""The training EMA against its closed form over several steps.

After ``k`` updates with decay ``d`` towards weights ``w_1 .. w_k``::

    ema_k = d^k ema_0 + (1 - d) sum_{i=1..k} d^(k-i) w_i

(``ema_i = d ema_{i-1} + (1 - d) w_i`` unrolled). Buffers (batch-norm statistics) are copied,
not averaged. Decay 0.9 is used so that swapping ``d`` and ``1 - d`` changes the result.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snngen.errors import SnngenError
from snngen.training import EMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()


def test_ema_follows_its_closed_form_over_five_steps():
    d, k = 0.9, 5
    model = _net()
    ema = EMA(model, d)
    ema0 = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(1)
    seen: list[list[torch.Tensor]] = []
    for _ in range(k):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
            model[1].running_mean.copy_(torch.randn(4, generator=g, dtype=torch.float64))
        seen.append([p.detach().clone() for p in model.parameters()])
        ema.update(model)
    for j, e in enumerate(ema.model.parameters()):
        closed = d**k * ema0[j] + (1 - d) * sum(d ** (k - i) * seen[i - 1][j]
                                                for i in range(1, k + 1))
        # float64, five fused lerps against the summed form: a few ulps of values of order 1
        torch.testing.assert_close(e, closed, rtol=0, atol=1e-12)
    # buffers are copied as they are, not averaged
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)
    assert int(ema.model[1].num_batches_tracked) == int(model[1].num_batches_tracked)


def test_one_step_by_hand():
    """ema 1.0, weight 3.0, decay 0.75: 0.75 * 1 + 0.25 * 3 = 1.5 (then 0.75 * 1.5 + 0.75)."""
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, 0.75)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    assert ema.model.weight.item() == 1.5
    ema.update(model)
    assert ema.model.weight.item() == 1.875


def test_the_ema_copy_is_frozen_and_its_decay_checked():
    ema = EMA(_net(), 0.999)
    assert not ema.model.training
    assert not any(p.requires_grad for p in ema.model.parameters())
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(SnngenError, match="ema_decay"):
            EMA(_net(), bad)
