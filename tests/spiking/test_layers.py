"""Time-folded layers, batch norms, LIF-nonlinearity and spiking attention vs brute force."""

import pytest
import torch
from torch import nn

from snngen.spiking import (
    BRAINCOG_LIF,
    IF,
    LIF,
    Conv2d,
    ConvTranspose2d,
    LIFNonlinearity,
    Linear,
    ParametricLIF,
    SpikingSelfAttention,
    TdBatchNorm1d,
    TdBatchNorm2d,
    TimeBatchNorm2d,
    TimeFolded,
    TimeGroupNorm,
    Triangle,
    fold_time,
    neuron_from_config,
    unfold_time,
)

torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _eager_neurons(monkeypatch):
    """Eager neuron loops: compiling a kernel per shape would dominate these small tests."""
    monkeypatch.setenv("SNNGEN_COMPILE", "0")


def braincog_lif(x: torch.Tensor, tau: float = 2.0, thr: float = 0.5) -> torch.Tensor:
    """braincog LIFNode, one step at a time: mem += (x - mem)/tau; spike; mem *= 1 - spike."""
    mem = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        mem = mem + (x[t] - mem) / tau
        spike = (mem >= thr).to(x.dtype)
        mem = mem * (1 - spike)
        out.append(spike)
    return torch.stack(out)


# --------------------------------------------------------------------------- folding


def test_fold_unfold_round_trip():
    x = torch.randn(3, 2, 4, 5)
    assert fold_time(x).shape == (6, 4, 5)
    assert torch.equal(unfold_time(fold_time(x), 3), x)
    with pytest.raises(ValueError, match="T=4"):
        unfold_time(fold_time(x), 4)


def test_time_folded_applies_module_per_frame():
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    x = torch.randn(4, 2, 3, 7, 7)
    y = TimeFolded(conv)(x)
    expected = torch.stack([conv(x[t]) for t in range(4)])
    assert y.shape == (4, 2, 5, 4, 4)
    torch.testing.assert_close(y, expected)
    pool = TimeFolded(nn.AvgPool2d(2))
    assert pool(x).shape == (4, 2, 3, 3, 3)
    assert list(TimeFolded(conv).state_dict()) == ["module.weight", "module.bias"]


@pytest.mark.parametrize(
    "ours, theirs, shape",
    [
        (Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1), (2, 3, 3, 6, 6)),
        (ConvTranspose2d(3, 4, 4, 2, 1), nn.ConvTranspose2d(3, 4, 4, 2, 1), (2, 3, 3, 5, 5)),
        (Linear(6, 4), nn.Linear(6, 4), (2, 3, 6)),
        (TimeGroupNorm(2, 4), nn.GroupNorm(2, 4), (2, 3, 4, 5, 5)),
    ],
)
def test_folded_layers_keep_torch_keys_and_compute_per_frame(ours, theirs, shape):
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(shape)
    expected = torch.stack([theirs(x[t]) for t in range(shape[0])])
    torch.testing.assert_close(ours(x), expected)


def test_conv_transpose_output_size_is_per_frame():
    layer = ConvTranspose2d(2, 2, 3, stride=2, padding=1)
    y = layer(torch.randn(2, 1, 2, 4, 4), output_size=[8, 8])
    assert y.shape == (2, 1, 2, 8, 8)


def test_folded_layers_reject_input_without_time():
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\].*\(2, 3, 6, 6\)"):
        Conv2d(3, 4, 3)(torch.randn(2, 3, 6, 6))
    with pytest.raises(ValueError, match="time-first"):
        Linear(6, 4)(torch.randn(5, 6))


# --------------------------------------------------------------------------- batch norms


def brute_force_tdbn(x, weight, bias, scale, eps):
    """Per channel c: mean/biased var over every other axis, loops over channels."""
    x = x.double()
    out = torch.empty_like(x)
    means, vars_ = [], []
    for c in range(x.shape[2]):
        vals = x[:, :, c].reshape(-1)
        n = vals.numel()
        mean = sum(vals.tolist()) / n
        var = sum((v - mean) ** 2 for v in vals.tolist()) / n
        out[:, :, c] = weight[c] * scale * (x[:, :, c] - mean) / (var + eps) ** 0.5 + bias[c]
        means.append(mean)
        vars_.append(var * n / (n - 1))
    return out, torch.tensor(means, dtype=torch.float64), torch.tensor(vars_, dtype=torch.float64)


@pytest.mark.parametrize(
    "cls, shape",
    [(TdBatchNorm2d, (3, 2, 4, 3, 3)), (TdBatchNorm1d, (5, 3, 4)), (TdBatchNorm1d, (3, 2, 4, 6))],
)
def test_tdbn_matches_brute_force(cls, shape):
    alpha, vth = 2.0, 0.2
    bn = cls(4, alpha=alpha, v_threshold=vth)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 0.5, -2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.0, 0.1, 0.2, -0.3]))
    x = torch.randn(shape) * 3 + 1
    y = bn(x)
    expected, mean, var_unbiased = brute_force_tdbn(
        x, bn.weight.detach(), bn.bias.detach(), 0.4, 1e-5
    )
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
    # running statistics: momentum 0.1 from (0, 1), unbiased variance
    torch.testing.assert_close(bn.running_mean.double(), 0.1 * mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        bn.running_var.double(), 0.9 + 0.1 * var_unbiased, rtol=1e-5, atol=1e-6
    )
    # eval: the running statistics, same scaling
    bn.eval()
    rm, rv = bn.running_mean.view(1, 1, 4, *[1] * (x.dim() - 3)), bn.running_var
    rv = rv.view_as(rm)
    w, b = bn.weight.view_as(rm), bn.bias.view_as(rm)
    torch.testing.assert_close(bn(x), w * 0.4 * (x - rm) / torch.sqrt(rv + 1e-5) + b)


def test_tdbn_without_affine_and_cumulative_average():
    bn = TdBatchNorm2d(2, alpha=1.0, v_threshold=0.5, affine=False, momentum=None)
    x1, x2 = torch.randn(2, 3, 2, 4, 4), torch.randn(2, 3, 2, 4, 4) + 2
    y = bn(x1)
    expected, m1, _ = brute_force_tdbn(x1, [1.0, 1.0], [0.0, 0.0], 0.5, 1e-5)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
    bn(x2)
    _, m2, _ = brute_force_tdbn(x2, [1.0, 1.0], [0.0, 0.0], 0.5, 1e-5)
    torch.testing.assert_close(bn.running_mean.double(), (m1 + m2) / 2, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 2


def test_time_batchnorm_is_batchnorm_over_folded_time():
    plain = nn.BatchNorm2d(3)
    with torch.no_grad():
        plain.weight.normal_()
        plain.bias.normal_()
    ours = TimeBatchNorm2d(3)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(4, 2, 3, 5, 5)
    y = ours(x)
    torch.testing.assert_close(y, plain(x.flatten(0, 1)).reshape(x.shape))
    torch.testing.assert_close(ours.running_var, plain.running_var)
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\]"):
        ours(torch.randn(2, 3, 5, 5))


def test_time_group_norm_is_per_frame():
    gn = TimeGroupNorm(2, 4, eps=1e-6)
    x = torch.randn(3, 2, 4, 5, 5) * torch.arange(1.0, 4.0).view(3, 1, 1, 1, 1)
    y = gn(x)
    for t in range(3):
        for b in range(2):
            for g in range(2):
                vals = x[t, b, 2 * g : 2 * g + 2]
                z = (vals - vals.mean()) / torch.sqrt(vals.var(unbiased=False) + 1e-6)
                torch.testing.assert_close(y[t, b, 2 * g : 2 * g + 2], z, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- neurons


def test_neuron_from_config_builds_each_kind():
    lif = neuron_from_config({"name": "LIF", "tau": 3.0, "v_threshold": 0.5})
    assert isinstance(lif, LIF) and lif.tau == 3.0 and lif.spec.v_threshold == 0.5
    assert isinstance(neuron_from_config("if"), IF)
    assert isinstance(neuron_from_config({"name": "plif", "init_tau": 4.0}), ParametricLIF)
    x = torch.randn(3, 2, 5)
    torch.testing.assert_close(neuron_from_config("relu")(x), x.relu())
    torch.testing.assert_close(neuron_from_config("silu")(x), nn.functional.silu(x))
    template = LIF(v_threshold=0.3)
    copy = neuron_from_config(template)
    assert copy is not template and copy.spec == template.spec


def test_neuron_from_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="'lfi'.*'if'"):
        neuron_from_config("lfi")
    with pytest.raises(ValueError, match="no 'name'"):
        neuron_from_config({"tau": 2.0})
    with pytest.raises(ValueError, match="bad arguments.*'lif'"):
        neuron_from_config({"name": "lif", "taux": 2.0})


def test_lif_nonlinearity_gates_values_by_braincog_spikes():
    layer = LIFNonlinearity()
    spec = layer.neuron.spec
    assert spec.v_threshold == 0.5 and spec.v_reset == 0.0 and spec.detach_reset
    assert spec.surrogate == Triangle(width=0.5) and layer.neuron.tau == 2.0
    x = torch.randn(6, 3, 4, 5) * 1.5
    y = layer(x)
    assert 0 < (y != 0).float().mean() < 1
    torch.testing.assert_close(y, x * braincog_lif(x))


def test_lif_nonlinearity_takes_any_neuron():
    x = torch.rand(4, 2, 3) * 2
    y = LIFNonlinearity({"name": "if", "v_threshold": 1.0})(x)
    torch.testing.assert_close(y, x * IF(v_threshold=1.0)(x))
    assert BRAINCOG_LIF["v_threshold"] == 0.5


# --------------------------------------------------------------------------- attention


def brute_force_attention(block: SpikingSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """AttnBlockSnn written with explicit loops over t, b, query i, key j and channel c."""
    T, B, C, H, W = x.shape
    n = H * W
    gn = nn.GroupNorm(block.norm.num_groups, C, eps=block.norm.eps).to(x.dtype)
    gn.load_state_dict(block.norm.state_dict())

    def conv1x1(conv, h):
        return torch.einsum("oc,tbchw->tbohw", conv.weight[:, :, 0, 0], h) + conv.bias.view(
            1, 1, C, 1, 1
        )

    h = torch.stack([gn(x[t]) for t in range(T)])
    q = braincog_lif(conv1x1(block.q, h)).reshape(T, B, C, n)
    k = braincog_lif(conv1x1(block.k, h)).reshape(T, B, C, n)
    v = conv1x1(block.v, h).reshape(T, B, C, n)
    out = torch.zeros(T, B, C, n, dtype=x.dtype)
    for t in range(T):
        for b in range(B):
            for i in range(n):
                for j in range(n):
                    a = sum(q[t, b, c, i] * k[t, b, c, j] for c in range(C)) / C**0.5
                    out[t, b, :, i] += a * v[t, b, :, j]
    return x + conv1x1(block.proj_out, out.reshape(T, B, C, H, W))


def test_spiking_self_attention_matches_loops():
    # float64: the loops sum the 1x1 convs in another order than Conv2d; in float32 a membrane
    # within rounding of the threshold could then spike in one and not the other, depending on
    # the processor's kernels (in float64 that needs a membrane within ~1e-15 of it)
    block = SpikingSelfAttention(4, num_groups=2).double()
    with torch.no_grad():
        for conv in (block.q, block.k):
            conv.weight.mul_(4)
    x = torch.randn(3, 2, 4, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        y = block(x)
        expected = brute_force_attention(block, x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-12)  # float64 rounding
    assert block.q_neuron is not block.k_neuron


def test_spiking_self_attention_gradients_and_ann_twin():
    torch.manual_seed(0)  # weights and input fixed: the test must not depend on test order
    block = SpikingSelfAttention(4, num_groups=2)
    x = torch.randn(2, 2, 4, 3, 3, generator=torch.Generator().manual_seed(1)) * 3
    block(x).sum().backward()
    assert block.q.weight.grad is not None and block.proj_out.weight.grad.abs().sum() > 0
    twin = SpikingSelfAttention(4, num_groups=2, neuron="relu")
    assert twin(x).shape == x.shape
    with pytest.raises(ValueError, match="num_groups"):
        SpikingSelfAttention(6, num_groups=4)
