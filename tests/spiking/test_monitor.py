"""Monitor: exact SOP / MAC counts against hand counts and brute-force loops."""

import itertools

import pytest
import torch
from torch import nn

from snngen.spiking import IF, Conv2d, Linear, Monitor, TimeFolded


@pytest.fixture(autouse=True)
def _eager_neurons(monkeypatch):
    """Eager neuron loops: compiling a kernel per shape would dominate these small tests."""
    monkeypatch.setenv("SNNGEN_COMPILE", "0")


def ones_conv(cin, cout, k, **kw):
    conv = nn.Conv2d(cin, cout, k, bias=False, **kw)
    nn.init.ones_(conv.weight)
    return conv


def only_row(mon, name):
    (row,) = [r for r in mon.report() if r["name"] == name]
    return row


# --------------------------------------------------------------------------- brute force


def brute_conv_sops(spikes, cout, k, stride=1, padding=0, dilation=1, groups=1):
    """Connections of every input spike of a 2-d conv, by looping over outputs and taps."""
    n, cin, h, w = spikes.shape
    hout = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wout = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    cout_per_group = cout // groups
    total = 0
    for b, c, y, x in itertools.product(range(n), range(cin), range(h), range(w)):
        if spikes[b, c, y, x] == 0:
            continue
        rows = sum(
            1
            for oy, ky in itertools.product(range(hout), range(k))
            if oy * stride - padding + ky * dilation == y
        )
        cols = sum(
            1
            for ox, kx in itertools.product(range(wout), range(k))
            if ox * stride - padding + kx * dilation == x
        )
        total += rows * cols * cout_per_group
    return total


def brute_conv_transpose_sops(spikes, cout, k, hout, wout, stride=1, padding=0, groups=1):
    """Connections of every input spike of a 2-d transposed conv: scatter to the outputs."""
    n, cin, h, w = spikes.shape
    total = 0
    for b, c, y, x in itertools.product(range(n), range(cin), range(h), range(w)):
        if spikes[b, c, y, x] == 0:
            continue
        rows = sum(1 for ky in range(k) if 0 <= y * stride - padding + ky < hout)
        cols = sum(1 for kx in range(k) if 0 <= x * stride - padding + kx < wout)
        total += rows * cols * (cout // groups)
    return total


# --------------------------------------------------------------------------- hand counts


def test_one_by_one_conv_counts_one_connection_per_output_channel():
    conv = ones_conv(2, 3, 1)
    spikes = torch.zeros(1, 2, 3, 3)
    spikes[0, 0, 0, 0] = spikes[0, 1, 2, 1] = spikes[0, 1, 1, 1] = 1  # 3 spikes
    with Monitor(conv) as mon:
        conv(spikes)
    row = only_row(mon, "Conv2d")
    assert row["sops_total"] == 3 * 3 and row["macs_total"] == 0 and row["input"] == "spikes"


def test_three_by_three_conv_with_padding_counts_borders_exactly():
    conv = ones_conv(1, 2, 3, padding=1)
    # 4x4 input, padding 1, 4x4 output. A spike reaches the outputs whose 3x3 window holds it:
    # corner (0,0) -> 2x2 outputs, edge (0,1) -> 2x3, interior (1,1) -> 3x3; times 2 channels.
    for pos, reach in [((0, 0), 4), ((0, 1), 6), ((1, 1), 9), ((3, 3), 4), ((3, 1), 6)]:
        spikes = torch.zeros(1, 1, 4, 4)
        spikes[0, 0, pos[0], pos[1]] = 1
        with Monitor(conv) as mon:
            conv(spikes)
        assert mon.report()[0]["sops_total"] == reach * 2, pos


def test_strided_conv_hand_count():
    conv = ones_conv(1, 1, 3, stride=2, padding=1)
    # output row oy covers input rows 2oy-1 .. 2oy+1 (oy = 0, 1): row 0 -> 1 output row,
    # row 1 -> 2, row 2 -> 1, row 3 -> 1; same for columns.
    spikes = torch.zeros(1, 1, 4, 4)
    for y, x in [(0, 0), (1, 1), (3, 3), (2, 1)]:
        spikes[0, 0, y, x] = 1
    with Monitor(conv) as mon:
        conv(spikes)
    assert mon.report()[0]["sops_total"] == 1 * 1 + 2 * 2 + 1 * 1 + 1 * 2


def test_linear_sops_and_zero_weights():
    lin = nn.Linear(4, 3)
    spikes = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    with Monitor(lin) as mon:
        lin(spikes)
    assert mon.report()[0]["sops_total"] == 4 * 3
    assert mon.report()[0]["sops"] == 4 * 3 / 2  # per sample, batch 2
    with torch.no_grad():
        lin.weight[:, 2] = 0  # input 2 drives nothing
        lin.weight[0, 0] = 0  # input 0 drives 2 outputs
    with Monitor(lin, skip_zero_weights=True) as mon:
        lin(spikes)
    assert mon.report()[0]["sops_total"] == 2 + 0 + 3
    with Monitor(lin) as mon:
        lin(spikes)
    assert mon.report()[0]["sops_total"] == 4 * 3


def test_real_inputs_count_dense_macs():
    conv = Conv2d(3, 4, 3, stride=2, padding=1)  # time-folded: [T, B, C, H, W]
    x = torch.randn(2, 5, 3, 8, 8)
    with Monitor(conv) as mon:
        conv(x)
    row = mon.report()[0]
    assert row["input"] == "real" and row["sops_total"] == 0
    assert row["macs_total"] == 2 * 5 * (4 * 4 * 4) * (3 * 3 * 3)
    assert row["macs"] == 2 * (4 * 4 * 4) * (3 * 3 * 3)  # per sample: T steps, batch 5
    tconv = nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1)
    with Monitor(tconv) as mon:
        tconv(torch.randn(2, 3, 5, 5))
    assert mon.report()[0]["macs_total"] == 2 * 3 * 5 * 5 * 4 * 4 * 4
    lin = Linear(6, 5)
    with Monitor(lin) as mon:
        lin(torch.randn(4, 3, 6))
    assert mon.report()[0]["macs_total"] == 4 * 3 * 6 * 5 and mon.report()[0]["samples"] == 3


# --------------------------------------------------------------------------- brute force


@pytest.mark.parametrize(
    "k, stride, padding, dilation, groups",
    [(3, 1, 1, 1, 1), (3, 2, 0, 1, 1), (3, 2, 2, 2, 1), (2, 3, 1, 1, 2), (5, 1, 2, 1, 4)],
)
def test_conv_sops_match_brute_force(k, stride, padding, dilation, groups):
    gen = torch.Generator().manual_seed(k * 100 + stride * 10 + padding)
    spikes = (torch.rand(2, 4, 7, 6, generator=gen) < 0.3).float()
    conv = nn.Conv2d(4, 8, k, stride, padding, dilation, groups)
    with Monitor(conv) as mon:
        conv(spikes)
    expected = brute_conv_sops(spikes, 8, k, stride, padding, dilation, groups)
    assert mon.report()[0]["sops_total"] == expected


@pytest.mark.parametrize(
    "k, stride, padding, output_size, groups",
    [(3, 1, 1, None, 1), (4, 2, 1, None, 1), (3, 2, 1, (10, 8), 2), (3, 2, 0, (12, 10), 1)],
)
def test_conv_transpose_sops_match_brute_force(k, stride, padding, output_size, groups):
    gen = torch.Generator().manual_seed(k + stride + padding)
    spikes = (torch.rand(2, 4, 5, 4, generator=gen) < 0.4).float()
    tconv = nn.ConvTranspose2d(4, 6, k, stride, padding, groups=groups)
    with Monitor(tconv) as mon:
        y = tconv(spikes, output_size=output_size)
    hout, wout = y.shape[2:]
    expected = brute_conv_transpose_sops(spikes, 6, k, hout, wout, stride, padding, groups)
    assert mon.report()[0]["sops_total"] == expected


def test_reflect_padding_counts_mirrored_connections():
    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")
    spikes = torch.zeros(1, 1, 4, 4)
    spikes[0, 0, 1, 1] = 1
    with Monitor(conv) as mon:
        conv(spikes)
    padded = nn.functional.pad(spikes, (1, 1, 1, 1), mode="reflect")
    assert mon.report()[0]["sops_total"] == brute_conv_sops(padded, 1, 3)
    # the reflected copies add connections: more than the 9 of zero padding
    assert mon.report()[0]["sops_total"] == 16


# --------------------------------------------------------------------------- firing rates


def test_firing_rates_per_layer_and_step():
    # IF, threshold 1, constant input 0.6: charges 0.6, 1.2 (spike, reset), 0.6, 1.2 (spike)
    neuron = IF(v_threshold=1.0)
    x = torch.full((4, 2, 3), 0.6)
    with Monitor(neuron) as mon:
        neuron(x)
    assert mon.firing_rates() == {"IF": 0.5}
    assert mon.rates_per_step() == {"IF": [0.0, 1.0, 0.0, 1.0]}
    row = mon.report()[0]
    assert row["kind"] == "neuron" and row["spikes"] == 2 * 3  # per sample: 2 steps x 3 neurons
    assert mon.totals()["firing_rate"] == 0.5


def test_spiking_network_counts_and_energy():
    net = nn.Sequential(Conv2d(1, 2, 3, padding=1, bias=False), IF(v_threshold=1.0), Linear(3, 4))
    nn.init.ones_(net[0].weight)
    x = torch.zeros(2, 1, 1, 1, 3)  # T=2, B=1, a 1x3 image
    x[:, 0, 0, 0, 1] = 1.0  # one spike in the middle pixel: the first conv is fed spikes too
    with Monitor(net, pj_per_ac=1.0, pj_per_mac=10.0) as mon:
        y = net(x)
    assert y.shape == (2, 1, 2, 1, 4)
    conv, neuron, lin = mon.report()
    # 3x3 conv, padding 1: the middle pixel reaches 3 columns x 2 channels, at each of 2 steps
    assert conv["sops_total"] == 2 * 3 * 2 and conv["macs_total"] == 0
    # every conv output is exactly 1 -> IF (threshold 1) fires everywhere at both steps
    assert neuron["firing_rate"] == 1.0 and neuron["spikes"] == 2 * 2 * 3
    # the linear layer maps the last dim (3 -> 4): each of the 12 spikes fans out to 4 outputs
    assert lin["sops_total"] == 12 * 4 and lin["macs_total"] == 0
    total = mon.totals()
    assert total["sops"] == 12 + 48 and total["macs"] == 0
    assert total["energy_pj"] == pytest.approx(1.0 * 60)


def test_energy_defaults_are_horowitz_45nm():
    conv = ones_conv(1, 1, 1)
    with Monitor(conv) as mon:
        conv(torch.ones(1, 1, 2, 2))  # binary: 4 SOPs
        conv(torch.full((1, 1, 2, 2), 0.5))  # real: 4 MACs
    row = mon.report()[0]
    assert row["input"] == "mixed" and row["sops_total"] == 4 and row["macs_total"] == 4
    assert row["samples"] == 2  # two calls outside the model's forward? no: the model is conv
    assert mon.totals()["energy_pj"] == pytest.approx((0.9 * 4 + 4.6 * 4) / 2)


# --------------------------------------------------------------------------- samples, hooks


def test_time_folded_wrapper_counts_per_sample_not_per_frame():
    net = TimeFolded(ones_conv(1, 1, 1))
    x = torch.randn(4, 3, 1, 2, 2)  # T=4, B=3
    with Monitor(net) as mon:
        net(x)
    row = mon.report()[0]
    assert row["name"] == "module" and row["samples"] == 3
    assert row["macs"] == 4 * 2 * 2


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(self.lin(x))


def test_layer_used_twice_in_one_call_counts_its_batch_once():
    model = Shared()
    with Monitor(model) as mon:
        model(torch.randn(5, 2))
        model(torch.randn(5, 2))
    row = mon.report()[0]
    assert row["samples"] == 10 and row["macs_total"] == 4 * 5 * 2 * 2
    assert row["macs"] == 2 * 2 * 2  # two uses per forward
    with Monitor(model, n_samples=1) as mon:
        model(torch.randn(5, 2))
    assert mon.report()[0]["macs"] == 2 * 5 * 2 * 2


def test_hooks_are_removed_and_reset_clears():
    conv = ones_conv(1, 1, 1)
    mon = Monitor(conv)
    with mon:
        conv(torch.ones(1, 1, 2, 2))
    conv(torch.ones(1, 1, 2, 2))  # not watched
    assert mon.report()[0]["sops_total"] == 4
    assert not conv._forward_hooks and not conv._forward_pre_hooks
    mon.reset()
    assert mon.report() == []
    with mon:
        conv(torch.ones(1, 1, 2, 2))
    assert mon.report()[0]["sops_total"] == 4


def test_table_lists_layers_and_total():
    net = nn.Sequential(Conv2d(1, 2, 3, padding=1), IF(), Conv2d(2, 1, 1))
    with Monitor(net) as mon:
        net(torch.rand(2, 1, 1, 4, 4))
    text = mon.table()
    for word in ("layer", "SOPs", "MACs", "0", "1", "2", "TOTAL", "IF", "Conv2d"):
        assert word in text
    assert str(mon) == text
    assert [r["kind"] for r in mon.report()] == ["synapse", "neuron", "synapse"]
