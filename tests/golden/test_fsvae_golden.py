"""snngen's FSVAE and ANN VAE against kamata1729/FullySpikingVAE's own code.

Fixtures (``build_fsvae.py``): the original networks at tiny widths with seeded weights, their
state dicts (loaded through ``snngen.importers``, the key map of ``snngen import fsvae`` /
``ann-vae``), an input batch and:

* FSVAE small (4 levels, 1 x 32 x 32, T=8, k=4, latent 8): a train-mode step without and with
  scheduled sampling (reconstruction, posterior/prior outputs q and p, sampled z, recon MSE, MMD,
  the KLD variant, gradients w.r.t. the input and every parameter, running statistics after the
  step), an eval-mode forward (outputs, losses, the ``CountMulAddSNN`` count), prior samples,
  the scheduled-sampling ramp ``update_p``; float64 (1e-6, chained) and float32 (1e-4, every
  neuron fed the original's spikes, ``golden.original_spikes``; in eval mode snngen advances the
  posterior's and prior's neurons one step at a time outside its hooks, so there only their one
  hooked call over all steps is checked and replaced);
* FSVAE large (5 levels, CelebA's 3 x 64 x 64): train step, eval, count, samples (float64);
* ANN VAE: train step (outputs, mu, log_var, MSE, KLD, gradients, running statistics), eval
  reconstruction and samples; float64 and float32.

Random numbers: the original's per-step ``torch.randint`` draws equal snngen's ``[T, B, C]``
draw from an equally seeded generator (checked below against the recorded indices); the
scheduled-sampling draws (``random.random`` and ``torch.randn_like`` in the original) are fed to
snngen's ``torch.rand`` / ``torch.randn_like`` from the fixture.
"""

from __future__ import annotations

import pytest
import torch
from golden import FlipReport, assert_matches, load_fixture, original_spikes, unpack_records
from torch import Tensor

from snngen.config import build_run_config
from snngen.importers import ImportMismatch, importer, load_original
from snngen.models import DataInfo, build_model
from snngen.models.fsvae_cost import count_original

COMMIT = "ffadb3d4bf4fe02927acb241ac11e6ad693c22dc"


@pytest.fixture(autouse=True)
def _eager_neurons(monkeypatch):
    monkeypatch.setenv("SNNGEN_COMPILE", "0")


@pytest.fixture(scope="module")
def small() -> dict:
    return load_fixture("fsvae_small")


@pytest.fixture(scope="module")
def large() -> dict:
    return load_fixture("fsvae_large")


@pytest.fixture(scope="module")
def ann() -> dict:
    return load_fixture("ann_vae")


def inputs(fx: dict) -> Tensor:
    """The fixture's images ``x_codes / 256`` in [0, 1], in the fixture's precision."""
    dtype = next(v.dtype for v in fx["state_dict"].values() if v.is_floating_point())
    return fx["x_codes"].to(dtype) / 256


def fsvae(fx: dict, **model) -> torch.nn.Module:
    c = fx["config"]
    spec = {"name": "fsvae", "channels": c["widths"], "latent_dim": c["latent_dim"],
            "k": c["k"], "num_steps": c["n_steps"], "scheduled_sampling": False, **model}
    cfg = build_run_config({"model": spec})
    net = build_model(cfg.model, DataInfo(channels=c["in_channels"], image_size=c["image_size"]))
    return load_original(net.to(inputs(fx).dtype), fx["state_dict"], "fsvae")


def ann_vae(fx: dict) -> torch.nn.Module:
    c = fx["config"]
    cfg = build_run_config({"model": {"name": "ann_vae", "channels": c["widths"],
                                      "latent_dim": c["latent_dim"],
                                      "kl_weight": fx["train"]["kld_weight"]}})
    net = build_model(cfg.model, DataInfo(channels=c["in_channels"], image_size=c["image_size"]))
    return load_original(net.to(inputs(fx).dtype), fx["state_dict"], "ann-vae")


def record(obj, name: str, log: dict) -> None:
    """Wrap ``obj.name`` so that its return value is stored in ``log[name]``."""
    fn = getattr(obj, name)

    def wrapped(*args, **kwargs):
        log[name] = fn(*args, **kwargs)
        return log[name]

    setattr(obj, name, wrapped)


def mapped(fx_grads: dict[str, Tensor], net, family: str) -> dict[str, Tensor]:
    """Original-named tensors under snngen's names (the importer's key map)."""
    out = importer(family).convert(fx_grads, net)
    return {k: v for k, v in out.items() if k != "train_steps"}


def time_first(t: Tensor) -> Tensor:
    """The original's time-last ``[B, ..., T]`` as snngen's ``[T, B, ...]``."""
    return t.movedim(-1, 0)


# --------------------------------------------------------------------------- FSVAE train


def fsvae_train_step(net, fx: dict, step: dict,
                     monkeypatch=None) -> tuple[dict, dict, Tensor, FlipReport]:
    """One ``net.loss`` in train mode on the fixture's input and seed (float32: on the
    original's spikes); returns (losses, the pieces z/q/p/recon, the input leaf, the flips)."""
    log: dict = {}
    record(net.posterior_net, "posterior", log)
    record(net.prior_net, "prior", log)
    record(net, "decode", log)
    if monkeypatch is not None:  # scheduled sampling: the original's draws
        steps, start = fx["config"]["n_steps"], net.cfg.scheduled_start
        draws = torch.ones(steps, dtype=torch.float64)
        draws[start:start + len(step["draws"])] = step["draws"]
        noise = list(step["noise"])
        monkeypatch.setattr(torch, "rand", lambda *a, **k: draws.clone())
        monkeypatch.setattr(torch, "randn_like", lambda t, **k: noise.pop(0).to(t.dtype))
    x = inputs(fx).requires_grad_()
    net.train()
    torch.manual_seed(step["seed"])
    with original_spikes(net, step.get("neurons"), "train step") as flips:
        losses = net.loss(x)
    losses["loss"].backward()
    if monkeypatch is not None:
        monkeypatch.undo()
        assert not noise  # every recorded draw was used
    return losses, log, x, flips


def check_train(net, fx: dict, step: dict, losses: dict, log: dict, x: Tensor,
                flips: FlipReport) -> None:
    z, q = log["posterior"]
    assert_matches(z, time_first(step["z"]), "sampled z")
    assert_matches(q, step["q_z"].permute(3, 0, 1, 2), "posterior q")
    assert_matches(log["prior"], step["p_z"].permute(3, 0, 1, 2), "prior p")
    assert_matches(log["decode"], step["recon"], f"reconstruction ({flips})")
    assert_matches(losses["mse"], step["mse"], "recon MSE")
    assert_matches(losses["mmd"], step["mmd"], "MMD")
    assert_matches(losses["loss"], step["loss"], "loss")
    grads = mapped(step["grad"], net, "fsvae")
    params = dict(net.named_parameters())
    assert set(grads) == set(params)
    if flips.exact:  # (after a rounding flip, float32 gradients are left to float64)
        assert_matches(x.grad / 2, step["grad_input"], "d loss / d input")  # x01 = (x + 1) / 2
        for name, want in grads.items():
            assert_matches(params[name].grad, want, f"d loss / d {name}")
    buffers = dict(net.named_buffers())
    for name, want in mapped(step["running_after"], net, "fsvae").items():
        if name != "train_steps":
            assert_matches(buffers[name], want, f"{name} after the step")


def test_fixtures_record_the_original(small, large, ann):
    for fx in (small, large, ann):
        assert fx["meta"]["originals"]["fsvae"] == {
            "repo": "kamata1729/FullySpikingVAE", "commit": COMMIT}


def test_random_picks_consume_the_generator_as_the_original(small):
    c = small["config"]
    for step in (small["train"], small["eval"]):
        gen = torch.Generator().manual_seed(step["seed"])
        want = torch.randint(c["k"], (c["n_steps"], c["batch"], c["latent_dim"]), generator=gen)
        assert torch.equal(step["index"], want)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_fsvae_train_step(small, precision):
    fx = small if precision == "float64" else small["float32"]
    net = fsvae(fx)
    check_train(net, fx, fx["train"], *fsvae_train_step(net, fx, fx["train"]))


def test_fsvae_kld_variant(small):
    step = small["train"]
    net = fsvae(small, distance="kl")
    losses, *_ = fsvae_train_step(net, small, step)
    assert_matches(losses["kl"], step["kld"], "Bernoulli KLD")
    assert_matches(losses["loss"], step["loss_kld"], "loss (kld: MSE + 1e-4 KLD)")


def test_fsvae_train_step_scheduled_sampling(small, monkeypatch):
    step = small["train_scheduled"]
    assert len(step["draws"]) == 2 and step["draws"].min() < step["p"] < step["draws"].max()
    net = fsvae(small, scheduled_sampling=True, scheduled_p=[step["p"], step["p"]])
    losses, log, x, flips = fsvae_train_step(net, small, step, monkeypatch)
    assert losses["scheduled_p"].item() == step["p"]
    check_train(net, small, step, losses, log, x, flips)


def test_scheduled_probability_steps_as_update_p(small):
    spe = 7  # optimiser steps per epoch
    net = fsvae(small, scheduled_sampling=True, scheduled_ramp_steps=150 * spe)
    assert net.cfg.scheduled_p == [0.1, 0.3] and net.cfg.scheduled_ramp_levels == 150
    for epoch, epochs, p in small["update_p"]:
        for k in (epoch * spe, epoch * spe + spe - 1):
            net.train_steps.fill_(k)
            assert net.scheduled_p() == p, (epoch, epochs, k)


# --------------------------------------------------------------------------- FSVAE eval


def check_eval(net, fx: dict) -> None:
    ev = fx["eval"]
    log: dict = {}
    record(net.posterior_net, "posterior", log)
    record(net.prior_net, "prior", log)
    net.eval()
    torch.manual_seed(ev["seed"])
    calls = ev.get("neurons")  # float32: the original's neuron calls
    with torch.no_grad(), original_spikes(net, calls, "eval loss") as flips:
        losses = net.loss(inputs(fx))
    z, q = log["posterior"]
    assert_matches(z, time_first(ev["z"]), "eval z")
    assert_matches(q, ev["q_z"].permute(3, 0, 1, 2), "eval q")
    assert_matches(log["prior"], ev["p_z"].permute(3, 0, 1, 2), "eval p")
    for key in ("loss", "mse", "mmd"):
        assert_matches(losses[key], ev[key], f"eval {key} ({flips})")
    if "recon" in ev:  # (the large fixture keeps only the samples)
        no_prior = None if calls is None else [  # reconstruct() runs no prior
            r for r in unpack_records(calls) if not r["name"].startswith("prior.")]
        with torch.no_grad(), original_spikes(net, no_prior, "eval reconstruct()"):
            recon = net.reconstruct(inputs(fx),
                                    generator=torch.Generator().manual_seed(ev["seed"]))
        assert_matches(recon, (ev["recon"] + 1) / 2, "eval reconstruction")
    record(net.prior_net, "sample", log)
    with torch.no_grad(), original_spikes(net, ev.get("sample_neurons"), "sample") as flips:
        sample = net.sample(fx["config"]["batch"],
                            generator=torch.Generator().manual_seed(ev["sample_seed"]))
    assert_matches(log["sample"], time_first(ev["sample_z"]), "prior sample z")
    assert_matches(sample, (ev["sample"] + 1) / 2, f"prior samples ({flips})")


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_fsvae_eval_and_samples(small, precision):
    fx = small if precision == "float64" else small["float32"]
    check_eval(fsvae(fx), fx)


@pytest.mark.parametrize("variant", ["small", "large"])
def test_count_as_the_original(small, large, variant):
    fx = small if variant == "small" else large
    ev = fx["eval"]
    gen = torch.Generator().manual_seed(ev["seed"])
    got = count_original(fsvae(fx), inputs(fx), generator=gen)
    n = fx["config"]["batch"]
    assert got.images == n
    assert got.additions * n == pytest.approx(ev["count_add"], rel=1e-12)
    assert got.multiplications * n == pytest.approx(ev["count_mul"], rel=1e-12)


# --------------------------------------------------------------------------- FSVAE large


def test_fsvae_large_train_step_eval_and_samples(large):
    net = fsvae(large)
    check_train(net, large, large["train"], *fsvae_train_step(net, large, large["train"]))
    check_eval(fsvae(large), large)


# --------------------------------------------------------------------------- ANN VAE


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_ann_vae_train_step_eval_and_samples(ann, precision):
    fx = ann if precision == "float64" else ann["float32"]
    tr, ev = fx["train"], fx["eval"]
    net = ann_vae(fx)
    log: dict = {}
    record(net, "encode", log)
    record(net, "decode", log)
    x = inputs(fx).requires_grad_()
    net.train()
    torch.manual_seed(tr["seed"])
    losses = net.loss(x)
    losses["loss"].backward()
    assert_matches(log["encode"][0], tr["mu"], "mu")
    assert_matches(log["encode"][1], tr["log_var"], "log_var")
    assert_matches(log["decode"], tr["recon"], "reconstruction")
    for key, want in (("mse", "mse"), ("kl", "kld"), ("loss", "loss")):
        assert_matches(losses[key], tr[want], key)
    assert_matches(x.grad / 2, tr["grad_input"], "d loss / d input")
    params = dict(net.named_parameters())
    grads = mapped(tr["grad"], net, "ann-vae")
    assert set(grads) == set(params)
    for name, want in grads.items():
        assert_matches(params[name].grad, want, f"d loss / d {name}")
    buffers = dict(net.named_buffers())
    for name, want in mapped(tr["running_after"], net, "ann-vae").items():
        assert_matches(buffers[name], want, f"{name} after the step")
    net = ann_vae(fx).eval()
    recon = net.reconstruct(inputs(fx), generator=torch.Generator().manual_seed(ev["seed"]))
    assert_matches(recon, (ev["recon"] + 1) / 2, "eval reconstruction")
    sample = net.sample(fx["config"]["batch"],
                        generator=torch.Generator().manual_seed(ev["sample_seed"]))
    assert_matches(sample, (ev["sample"] + 1) / 2, "samples")


# --------------------------------------------------------------------------- import refusals


@pytest.mark.parametrize("family", ["fsvae", "ann-vae"])
def test_import_refuses_a_missing_or_misshaped_key(small, ann, family):
    fx = small if family == "fsvae" else ann
    make = fsvae if family == "fsvae" else ann_vae
    net = make(fx)
    key = "decoder.0.weight" if family == "fsvae" else "decoder.0.0.weight"  # 1st transposed conv
    missing = {k: v for k, v in fx["state_dict"].items() if k != key}
    # named as the original file names it
    with pytest.raises(ImportMismatch, match=f"missing weight '{key}'"):
        load_original(net, missing, family)
    bad = dict(fx["state_dict"])
    key = "encoder.0.weight" if family == "fsvae" else "encoder.0.0.weight"
    bad[key] = torch.zeros(2, 2)
    with pytest.raises(ImportMismatch, match=f"weight '{key}'.* has shape \\(2, 2\\)"):
        load_original(net, bad, family)


def test_import_refuses_another_number_of_steps(small):
    with pytest.raises(ImportMismatch, match="membrane_output_layer.coef"):
        fsvae(small, num_steps=small["config"]["n_steps"] + 1)
