"""FSVAE and its ANN VAE twin: architecture as the original, PSP / MMD / KL against independent
computations, autoregressive Bernoulli sampling (one of k, mean p, causal, incremental = prefix
re-runs), gradients, interface ranges, a short training run through snngen.train."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from snngen.config import build_run_config
from snngen.models import DataInfo, build_model
from snngen.models.fsvae import (
    AutoregressiveBernoulli,
    bernoulli_kl,
    pick_one_of_k,
    psp,
    psp_mmd,
)
from snngen.spiking.layers import ConvTranspose2d, TdBatchNorm1d, TdBatchNorm2d
from snngen.spiking.monitor import Monitor
from snngen.spiking.neurons import LIF

TINY = dict(channels=[4, 8], latent_dim=6, num_steps=5, k=4)


@pytest.fixture(autouse=True)
def _eager_neurons(monkeypatch):
    monkeypatch.setenv("SNNGEN_COMPILE", "0")  # no torch.compile warm-up in unit tests


def make(name="fsvae", size=8, in_ch=1, **model):
    if name == "fsvae":
        model = {**TINY, **model}
    cfg = build_run_config({"model": {"name": name, **model}})
    return build_model(cfg.model, DataInfo(channels=in_ch, image_size=size))


def trained_stats(m, x, n=2):
    """A couple of training-mode passes so tdBN running statistics are not the defaults."""
    m.train()
    with torch.no_grad():
        for _ in range(n):
            m.loss(x)
    return m.eval()


# --------------------------------------------------------------------------- architecture


def test_architecture_matches_original():
    m = make(size=32, channels=[32, 64, 128, 256], latent_dim=128, k=20)
    convs = [mod for mod in m.encoder if isinstance(mod, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride, c.padding) for c in convs] == [
        (1, 32, (2, 2), (1, 1)), (32, 64, (2, 2), (1, 1)), (64, 128, (2, 2), (1, 1)),
        (128, 256, (2, 2), (1, 1))]
    assert m.to_latent[0].in_features == 256 * 2 * 2 and m.to_latent[0].out_features == 128
    post = [b[0] for b in m.posterior_net.blocks]
    prior = [b[0] for b in m.prior_net.blocks]
    assert [(li.in_features, li.out_features) for li in post] == [
        (256, 256), (256, 512), (512, 2560)]
    assert [(li.in_features, li.out_features) for li in prior] == [
        (128, 256), (256, 512), (512, 2560)]
    assert all(b[1].alpha == 2.0 and b[1].scale == pytest.approx(0.4)
               for b in [*m.posterior_net.blocks, *m.prior_net.blocks])
    bns = [mod for mod in m.encoder if isinstance(mod, TdBatchNorm2d)]
    assert all(b.scale == pytest.approx(0.2) for b in bns)
    assert isinstance(m.from_latent[1], TdBatchNorm1d) and m.from_latent[0].out_features == 1024
    tconvs = [mod for mod in m.decoder if isinstance(mod, ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in tconvs] == [
        (256, 128, (2, 2)), (128, 64, (2, 2)), (64, 32, (2, 2)), (32, 32, (2, 2)),
        (32, 1, (1, 1))]
    assert m.decoder[-1] is tconvs[-1]  # the last transposed conv: no norm, no spike
    lifs = [mod for mod in m.modules() if isinstance(mod, LIF)]
    assert len(lifs) == 4 + 1 + 3 + 3 + 1 + 4
    s = lifs[0].spec
    assert (s.form, lifs[0].beta, s.v_threshold, s.v_reset) == ("fsvae", 0.25, 0.2, 0.0)
    assert s.surrogate.name == "rectangular" and s.surrogate.width == 1.0
    assert s.strict_threshold  # the original's torch.gt(u, Vth)
    # default (issue 12): the original's window |u| < 0.5 around the membrane, not u - Vth
    sur = s.surrogate
    u = torch.tensor([-0.45, 0.45, 0.55, 0.65])
    assert torch.equal(sur.grad(u - 0.2) > 0, torch.tensor([True, True, False, False]))
    centred = make(surrogate_centre="threshold")
    sur = next(mod for mod in centred.modules() if isinstance(mod, LIF)).spec.surrogate
    assert sur.offset == 0.0
    assert torch.equal(sur.grad(u - 0.2) > 0, torch.tensor([False, True, True, True]))


def test_large_variant_and_bad_size():
    m = make(size=64, in_ch=3, channels=[4, 4, 4, 4, 4])
    x = torch.rand(2, 3, 64, 64)
    assert m.eval().reconstruct(x).shape == x.shape
    with pytest.raises(ValueError, match="multiple of 2"):
        make(size=10)


def test_relu_twin_has_identical_shapes():
    a, b = make(), make(neuron="relu")
    sa = {k: v.shape for k, v in a.state_dict().items()}
    sb = {k: v.shape for k, v in b.state_dict().items()}
    assert sa == sb
    assert not any(isinstance(mod, LIF) for mod in b.modules())
    assert sum(isinstance(mod, nn.ReLU) for mod in b.modules()) == sum(
        isinstance(mod, LIF) for mod in a.modules())


# --------------------------------------------------------------------------- PSP, MMD, KL


@pytest.mark.parametrize("tau", [2.0, 3.5])
def test_psp_matches_closed_form(tau):
    x = torch.rand(7, 3, 5, dtype=torch.float64)
    want = torch.zeros_like(x)
    for t in range(7):
        for u in range(t + 1):
            want[t] += (1 / tau) * (1 - 1 / tau) ** (t - u) * x[u]
    torch.testing.assert_close(psp(x, tau), want)


def test_mmd_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    q = torch.rand(6, 2, 3, dtype=torch.float64, generator=gen)
    p = torch.rand(6, 2, 3, dtype=torch.float64, generator=gen)
    total = 0.0
    for b in range(2):
        for c in range(3):
            sq = sp = 0.0
            for t in range(6):
                sq += (q[t, b, c].item() - sq) / 2.0
                sp += (p[t, b, c].item() - sp) / 2.0
                total += (sq - sp) ** 2
    assert psp_mmd(q, p, 2.0).item() == pytest.approx(total / q.numel(), rel=1e-12)
    assert psp_mmd(q, q).item() == 0.0


def test_bernoulli_kl_matches_brute_force():
    gen = torch.Generator().manual_seed(2)
    q = torch.rand(3, 2, 4, dtype=torch.float64, generator=gen)
    p = torch.rand(3, 2, 4, dtype=torch.float64, generator=gen)
    e = 1e-2
    per_sample = []
    for b in range(2):
        s = 0.0
        for t in range(3):
            for c in range(4):
                a, r = q[t, b, c].item(), p[t, b, c].item()
                s += a * math.log((a + e) / (r + e)) + (1 - a) * math.log((1 - a + e) / (1 - r + e))
        per_sample.append(s)
    assert bernoulli_kl(q, p).item() == pytest.approx(sum(per_sample) / 2, rel=1e-12)


# --------------------------------------------------------------------------- sampling


def test_pick_of_k_candidates_is_bernoulli_with_mean_p():
    gen = torch.Generator().manual_seed(0)
    k, units, draws = 20, 8, 4000
    counts = torch.arange(units) * 2 + 3  # ones among the k candidates: p = 3/20 ... 17/20
    cand = (torch.arange(k) < counts[:, None]).float()
    cand = cand[:, torch.randperm(k, generator=gen)]  # ones at arbitrary positions
    out = cand.expand(draws, units, k)
    z = pick_one_of_k(out, torch.randint(k, (draws, units), generator=gen))
    p = counts.float() / k
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    sigma = (p * (1 - p) / draws).sqrt()
    assert ((z.mean(0) - p).abs() < 4 * sigma).all(), (z.mean(0), p)


@pytest.mark.parametrize("training", [True, False])
def test_posterior_samples_are_one_of_the_k_outputs(training):
    torch.manual_seed(0)
    m = make()
    x = torch.rand(4, 1, 8, 8)
    if not training:
        trained_stats(m, x)
    m.train(training)
    with torch.no_grad():
        h = m.encode(x)
        z, q = m.posterior_net.posterior(h, torch.Generator().manual_seed(5))
    T, B, C, k = q.shape
    assert (T, B, C, k) == (5, 4, 6, 4) and z.shape == (T, B, C)
    index = torch.randint(k, (T, B, C), generator=torch.Generator().manual_seed(5))
    assert torch.equal(z, q.gather(-1, index[..., None])[..., 0])
    assert set(q.unique().tolist()) <= {0.0, 1.0}


def test_posterior_and_prior_are_causal():
    torch.manual_seed(0)
    m = make(num_steps=6)
    x = torch.rand(3, 1, 8, 8)
    trained_stats(m, x)
    h = m.encode(x)
    h2 = h.clone()
    h2[3:] = 1 - h2[3:]  # change the encoder output from step 3 on
    with torch.no_grad():
        z1, q1 = m.posterior_net.posterior(h, torch.Generator().manual_seed(1))
        z2, q2 = m.posterior_net.posterior(h2, torch.Generator().manual_seed(1))
        assert torch.equal(z1[:3], z2[:3]) and torch.equal(q1[:3], q2[:3])
        assert not torch.equal(q1, q2)  # the change did reach later steps
        zp = z1.clone()
        zp[2:] = 1 - zp[2:]
        p1, p2 = m.prior_net.prior(z1), m.prior_net.prior(zp)
        assert torch.equal(p1[:3], p2[:3]) and not torch.equal(p1, p2)  # p_t sees z_<t only


def test_incremental_stepping_equals_prefix_reruns_in_eval():
    torch.manual_seed(0)
    net = AutoregressiveBernoulli(
        5, 3, 5, lambda n: TdBatchNorm1d(n, alpha=2.0, v_threshold=0.2),
        lambda n: LIF(beta=0.25, form="fsvae", v_threshold=0.2,
                      surrogate={"name": "rectangular"})).double()
    # float64: the three paths multiply inputs of different lengths ([1, 16, 10], [t, 16, 10],
    # [8, 16, 10]); in float32 another processor's kernels could round them differently in the
    # last bit and flip a spike (bit-identity is this machine's, not the contract)
    frames = (torch.rand(8, 16, 10) < 0.4).double()
    net.train()
    with torch.no_grad():
        net(frames)  # running statistics
    net.eval()
    inc, pre = net.stepper(), net.stepper()
    pre.incremental = False
    with torch.no_grad():
        a = torch.stack([inc(f) for f in frames])
        b = torch.stack([pre(f) for f in frames])
        full = net(frames)
    assert a.shape == (8, 16, 5, 3)
    assert torch.equal(a, b) and torch.equal(a, full)


def test_monitor_counts_each_neuron_update_once_in_eval():
    # issue 12: the incremental stepper used to re-run the posterior's neurons over their whole
    # history, so a Monitor saw T (T + 1) / 2 = 136 neuron-steps per neuron at T = 16
    steps, batch = 16, 2
    m = trained_stats(make(num_steps=steps), torch.rand(4, 1, 8, 8))
    x = torch.rand(batch, 1, 8, 8)
    with Monitor(m, n_samples=batch) as mon:
        m.reconstruct(x, generator=torch.Generator().manual_seed(0))
        m.sample(batch, generator=torch.Generator().manual_seed(1))
    widths = {name: mod.spec for name, mod in m.named_modules() if isinstance(mod, LIF)}
    stats = {k: v for k, v in mon._stats.items() if v.kind == "neuron"}
    assert set(stats) == set(widths)  # every neuron ran, prior included (in sample)
    for name, st in stats.items():
        per_unit = st.neuron_steps // len(st.step_neurons) // batch
        assert len(st.step_neurons) == steps, name
        assert st.neuron_steps == steps * batch * per_unit, name
        assert st.step_neurons == [batch * per_unit] * steps, name
    posterior = [v for k, v in stats.items() if k.startswith("posterior_net")]
    assert [st.neuron_steps for st in posterior] == [steps * batch * n for n in (12, 24, 24)]


def test_prior_sampling_is_seeded_and_binary():
    m = trained_stats(make(), torch.rand(4, 1, 8, 8))
    z1 = m.prior_net.sample(3, 5, torch.Generator().manual_seed(3))
    z2 = m.prior_net.sample(3, 5, torch.Generator().manual_seed(3))
    assert z1.shape == (5, 3, 6) and torch.equal(z1, z2)
    assert set(z1.unique().tolist()) <= {0.0, 1.0}


def test_scheduled_sampling_probability_ramps():
    # smooth per-step ramp (scheduled_ramp_levels 0); the default stairs are pinned against the
    # original's update_p in tests/golden/test_fsvae_golden.py
    m = make(scheduled_ramp_steps=10, scheduled_ramp_levels=0)
    x = torch.rand(4, 1, 8, 8)
    assert m.scheduled_p() == pytest.approx(0.1)
    for _ in range(5):
        out = m.loss(x)
    assert int(m.train_steps) == 5 and out["scheduled_p"].item() == pytest.approx(0.18)
    m.train_steps.fill_(100)
    assert m.scheduled_p() == pytest.approx(0.3)
    assert make(scheduled_sampling=False).scheduled_p() == 0.0


def test_scheduled_sampling_feeds_the_priors_majority_vote():
    torch.manual_seed(0)
    m = make(num_steps=4)
    z = (torch.rand(4, 3, 6) < 0.5).float()
    prior = m.prior_net.train()
    torch.manual_seed(7)
    with torch.no_grad():
        p = prior.prior(z, scheduled_p=1.0, scheduled_start=2)
    # replay: inputs [0, z0, z1, vote(step 2 on inputs [0, z0, z1])]
    torch.manual_seed(7)
    torch.rand(4)  # the per-step draws
    with torch.no_grad():
        zin = torch.stack([torch.zeros_like(z[0]), z[0], z[1]])
        prob = prior(zin)[-1].mean(-1)
        vote = (prob + 1e-3 * torch.randn_like(prob) > 0.5).float()
        want = prior(torch.cat([zin, vote[None]]))
    torch.testing.assert_close(p, want)


# --------------------------------------------------------------------------- interface


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    m = make()
    out = m.loss(torch.rand(8, 1, 8, 8))
    assert {"loss", "mse", "mmd", "q_rate", "p_rate", "scheduled_p"} <= out.keys()
    out["loss"].backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_kl_distance_option():
    torch.manual_seed(0)
    m = make(distance="kl")
    out = m.loss(torch.rand(4, 1, 8, 8))
    assert "kl" in out and out["loss"].item() == pytest.approx(
        (out["mse"] + 1e-4 * out["kl"]).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["fsvae", "ann_vae"])
def test_sample_and_reconstruct_shapes_and_ranges(name):
    torch.manual_seed(0)
    extra = {"channels": [4, 8], "latent_dim": 6} if name == "ann_vae" else {}
    m = make(name, size=16, in_ch=3, **extra)
    x = torch.rand(4, 3, 16, 16)
    trained_stats(m, x)
    r = m.reconstruct(x, generator=torch.Generator().manual_seed(0))
    s = m.sample(5, generator=torch.Generator().manual_seed(0))
    assert r.shape == x.shape and s.shape == (5, 3, 16, 16)
    for img in (r, s):
        assert img.min() >= 0 and img.max() <= 1 and torch.isfinite(img).all()
    assert torch.equal(s, m.sample(5, generator=torch.Generator().manual_seed(0)))


def test_ann_vae_shares_shapes_and_has_gaussian_kl():
    a, f = make("ann_vae", channels=[4, 8], latent_dim=6), make()
    conv_shapes = [(n, p.shape) for n, p in f.named_parameters()
                   if n.startswith(("encoder", "decoder")) and p.dim() == 4]
    assert conv_shapes == [(n, p.shape) for n, p in a.named_parameters()
                           if n.startswith(("encoder", "decoder")) and p.dim() == 4]
    torch.manual_seed(0)
    x = torch.rand(5, 1, 8, 8)
    out = a.loss(x)
    mu, log_var = a.encode(x)
    q = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    want = torch.distributions.kl_divergence(q, prior).sum(1).mean()
    torch.testing.assert_close(out["kl"], want.detach())


def test_short_training_run_reduces_reconstruction_error(tmp_path):
    from snngen.training import fit

    gen = torch.Generator().manual_seed(0)
    # images made of a few bars, so there is something to learn
    bars = torch.zeros(4, 1, 8, 8)
    for i in range(4):
        bars[i, 0, 2 * i : 2 * i + 2, :] = 1.0
    x = (bars[torch.randint(4, (64,), generator=gen)] * 0.9).clamp(0, 1)
    ds = TensorDataset(x, torch.zeros(64, dtype=torch.long))
    info = DataInfo(channels=1, image_size=8)
    raw = {
        "model": {"name": "fsvae", **TINY, "num_steps": 4},
        "data": {"batch_size": 16},
        "optim": {"name": "adamw", "lr": 1e-2, "weight_decay": 1e-3},
        "trainer": {"max_steps": 40, "accelerator": "cpu", "progress_bar": False, "seed": 0,
                    "ckpt_every_n_steps": 1000},
    }
    cfg = build_run_config(raw)
    torch.manual_seed(0)
    fresh = build_model(cfg.model, info)
    trained_stats(fresh, x[:16])
    lit = fit(cfg, tmp_path / "run", ds, info)
    model = lit.model.eval()

    def mse(m):
        r = m.reconstruct(x, generator=torch.Generator().manual_seed(0))
        return torch.mean((r - x) ** 2).item()

    before, after = mse(fresh), mse(model)
    assert after < 0.75 * before, (before, after)


def test_cli_info_count_original(tmp_path, capsys, monkeypatch):
    """`snngen info RUN --count original` prints FSVAE's cost as the original counts it (the
    numbers are pinned against the original's CountMulAddSNN in tests/golden); other models get
    a one-line refusal."""
    import json

    from snngen.cli import main
    from snngen.errors import SnngenError
    from snngen.models.fsvae_cost import count_report

    monkeypatch.chdir(tmp_path)
    common = ("data: {name: mnist5k, image_size: 8, batch_size: 16}\n"
              "trainer: {max_steps: 1, accelerator: cpu, progress_bar: false}\n"
              "eval: {n_samples: 16, metrics: [mse]}\n")
    (tmp_path / "f.yaml").write_text(
        "name: fs\nmodel: {name: fsvae, channels: [4, 8], latent_dim: 6, num_steps: 4, k: 4}\n"
        + common)
    assert main(["train", "f.yaml"]) == 0
    capsys.readouterr()
    args = ["--batch", "4", "--count", "original"]
    assert main(["info", "runs/fs", *args, "--json", "i.json"]) == 0
    out = capsys.readouterr().out
    assert "CountMulAddSNN" in out and "posterior" in out and "paper" in out
    count = json.loads((tmp_path / "i.json").read_text())["count_original"]
    assert count["images"] == 4 and set(count["parts"]) == {
        "encoder", "posterior", "prior", "decoder"}
    assert count["additions"] == pytest.approx(sum(a for a, _ in count["parts"].values()))
    assert count["multiplications"] > 0
    # the authors' MNIST figures, logged per test batch of 250, shown per image
    assert count["paper_per_image"]["MNIST, FSVAE"] == pytest.approx([2.0e8, 2.24e6])
    assert count["paper_per_image"]["MNIST, ANN VAE"] == pytest.approx([2.96e7, 2.96e7])
    assert "200,000,000" in out and "2,240,000" in out
    x = torch.rand(2, 1, 8, 8)
    for other in (make("ann_vae", channels=[4, 8], latent_dim=6), make(neuron="relu")):
        with pytest.raises(SnngenError, match="--count original") as err:  # CLI: one line
            count_report(other, x)
        assert len(str(err.value).splitlines()) == 1
