"""snngen's spiking autoencoder against the snnTorch SAE tutorial's own code.

Fixtures (``build_sae.py``): the tutorial's network at widths 4-8-16 (latent 32, T=5, beta 0.5,
threshold 1, read-out threshold 20000), its state dict, an input batch and, from one train-mode
forward, the reconstruction, the spikes of all nine ``Leaky`` layers, the latent spikes, the
MSE loss, its gradients w.r.t. the input and every parameter and the running statistics after
the step; from an eval-mode forward, the reconstruction, latent spikes and loss. float64 (1e-6,
chained) and float32 (1e-4, every neuron fed the original's spikes: ``golden.original_spikes``;
the fixture records every neuron call of the original with its near-threshold membranes). The
weights enter snngen through ``snngen.importers`` (the key map of ``snngen import sae``).
"""

from __future__ import annotations

import pytest
import torch
from golden import assert_matches, load_fixture, original_spikes, unpack_records

from snngen.config import build_run_config
from snngen.importers import ImportMismatch, importer, load_original
from snngen.models import DataInfo, build_model
from snngen.spiking.neurons import LIF

FIXTURES = ["sae_tutorial_float64", "sae_tutorial_float32"]


def build(fx: dict) -> torch.nn.Module:
    h = fx["hyper"]
    cfg = build_run_config({"model": {
        "name": "sae", "channels": list(fx["widths"]), "latent_dim": h["latent_dim"],
        "num_steps": h["num_steps"], "beta": h["beta"], "v_threshold": float(h["thresh"]),
    }})
    dtype = fx["x"].dtype
    model = build_model(cfg.model, DataInfo(channels=1, image_size=32)).to(dtype)
    return load_original(model, fx["state_dict"], "sae")


def run_loss(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict, list, torch.Tensor]:
    """``model.loss(x)`` with every LIF's output recorded; returns (loss dict, spikes, recon)."""
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    outs: list = []
    hooks = [m.register_forward_hook(lambda mod, i, o: outs.append(o)) for m in lifs]
    try:
        losses = model.loss(x)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(outs) == len(lifs) == 9
    spikes = [o[0] if isinstance(o, tuple) else o for o in outs]
    return losses, spikes, outs[-1][1][-1]  # read-out: membrane at the last step


@pytest.fixture(scope="module", params=FIXTURES)
def fx(request) -> dict:
    return load_fixture(request.param)


def test_fixture_records_the_tutorial(fx):
    assert fx["meta"]["originals"]["snntorch"]["commit"] == (
        "634fc22385ec5581998e62787bbe39b53662140f")
    assert fx["snntorch_version"].startswith("1.0")
    assert fx["hyper"] == {"spike_grad": "atan(alpha=2.0)", "beta": 0.5, "num_steps": 5,
                           "latent_dim": 32, "thresh": 1}


def test_train_forward_loss_gradients_and_running_stats(fx):
    model = build(fx).train()
    params = dict(model.named_parameters())
    x = fx["x"].clone().requires_grad_(True)
    exp = fx["train"]
    with original_spikes(model, exp.get("neurons"), "train forward") as flips:
        losses, spikes, recon = run_loss(model, x)
    for i, (got, want) in enumerate(zip(spikes, exp["spikes"], strict=True)):
        assert_matches(got, want.to(got.dtype), f"train spikes of Leaky #{i}")
    assert_matches(spikes[3], exp["latent"], "train latent spikes")
    assert_matches(recon, exp["recon"], f"train reconstruction ({flips})")
    assert_matches(losses["loss"], exp["loss"], f"train MSE loss ({flips})")
    assert_matches(losses["mse"], exp["loss"], "train mse (logged)")
    want = importer("sae").convert(exp["grads"], model)
    want.pop("latent_rate")
    assert set(want) == set(params), "every parameter's gradient is compared"
    if flips.exact:  # (after a rounding flip, float32 gradients are left to float64)
        grads = torch.autograd.grad(losses["loss"], [x, *params.values()])
        assert_matches(grads[0], exp["grad_x"], "d loss / d input")
        for (name, _), got in zip(params.items(), grads[1:], strict=True):
            assert_matches(got, want[name], f"d loss / d {name}")
    after = importer("sae").convert(fx["state_dict_after_train"], model)
    state = model.state_dict()
    for name in after:
        if name != "latent_rate":
            assert_matches(state[name], after[name], f"{name} after one train step")


def test_eval_forward_and_loss(fx):
    model = load_original(build(fx), {**fx["state_dict"], **fx["state_dict_after_train"]}, "sae")
    model.eval()
    exp = fx["eval"]
    calls = exp.get("neurons")  # float32: the encoder's 4 neuron calls, then the decoder's 5
    calls = None if calls is None else unpack_records(calls)
    encoder, decoder = (None, None) if calls is None else (calls[:4], calls[4:])
    with torch.no_grad():
        with original_spikes(model, calls, "eval forward") as flips:
            losses, spikes, recon = run_loss(model, fx["x"])
        with original_spikes(model, encoder, "eval encode()"):
            latent = model.encode(fx["x"])
        with original_spikes(model, decoder, "eval decode()"):
            decoded = model.decode(latent)
        with original_spikes(model, calls, "eval reconstruct()"):
            reconstructed = model.reconstruct(fx["x"])
    assert_matches(spikes[3], exp["latent"], "eval latent spikes")
    assert_matches(latent, exp["latent"], "eval encode()")
    assert_matches(recon, exp["recon"], f"eval reconstruction ({flips})")
    assert_matches(decoded, exp["recon"], "eval decode()")
    assert_matches(losses["loss"], exp["loss"], "eval MSE loss")
    assert_matches(reconstructed, exp["recon"].clamp(0, 1), "reconstruct()")


def test_initialisation_from_a_seed_is_the_tutorials(fx):
    # the same modules are created in the same order: torch.manual_seed gives the same weights
    torch.manual_seed(fx["seed"])
    cfg = build_run_config({"model": {"name": "sae", "channels": list(fx["widths"])}})
    model = build_model(cfg.model, DataInfo(channels=1, image_size=32))
    state = model.state_dict()
    sums = {k: v for k, v in fx["init_checksums"].items()
            if k.rsplit(".", 1)[1] not in importer("sae").NEURON_BUFFERS}
    mapped = importer("sae").convert(sums, model)
    assert len(mapped) == 1 + len(sums) == 1 + len(
        [k for k, v in state.items() if v.is_floating_point() and k != "latent_rate"])
    for name, want in mapped.items():
        if name != "latent_rate" and state[name].is_floating_point():
            v = state[name].double()
            got = torch.stack([v.sum(), v.square().sum(), v.flatten()[0]])
            assert_matches(got, want, f"initial {name}")


def test_import_refuses_missing_or_misshaped_weights():
    fx = load_fixture("sae_tutorial_float32")
    original = dict(fx["state_dict"])
    missing = {k: v for k, v in original.items() if k != "encoder.3.weight"}
    with pytest.raises(ImportMismatch, match=r"'encoder\.3\.weight'"):
        build({**fx, "state_dict": missing})
    missing = {k: v for k, v in original.items() if k != "linearNet.0.bias"}
    with pytest.raises(ImportMismatch, match=r"'from_latent\.0\.bias'"):
        build({**fx, "state_dict": missing})
    bad = {**original, "decoder.2.weight": original["decoder.2.weight"][:, :4]}
    with pytest.raises(ImportMismatch, match=r"'decoder\.0\.weight'.*shape"):
        build({**fx, "state_dict": bad})
    wrong_beta = {**original, "encoder.5.beta": torch.tensor(0.9)}
    with pytest.raises(ImportMismatch, match=r"'encoder\.5\.beta'"):
        build({**fx, "state_dict": wrong_beta})
    wrong_readout = {**original, "decoder.9.threshold": torch.tensor(1)}
    with pytest.raises(ImportMismatch, match=r"'decoder\.9\.threshold'"):
        build({**fx, "state_dict": wrong_readout})
