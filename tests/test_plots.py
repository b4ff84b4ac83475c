"""The data behind each picture of :mod:`snngen.plots`, pinned against independent computations:
the raster's spikes are what a forward hook on that layer sees for the same input, the bars are
the Monitor's (and ``snngen info``'s) rates and a hand count of spikes, the chain's last frame is
the sampler's output for the same seed and its frames follow the sampler's grid, codebook counts
are ``torch.bincount`` of the encoded indices, curves come from the CSV rows in version order.
Tiny untrained models (8 px), so every test takes a second or two."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from snngen.config import build_run_config
from snngen.diffusion.schedule import sampling_timesteps
from snngen.errors import SnngenError
from snngen.evaluation import model_info
from snngen.models import DataInfo, build_model
from snngen.plots import (
    activity_call,
    choose_layers,
    codebook_counts,
    denoising_chain,
    draw_chain,
    draw_codebook,
    draw_curves,
    draw_firing_rates,
    draw_membranes,
    draw_raster,
    neuron_layers,
    raster_neurons,
    record_activity,
    training_curves,
)

INFO = DataInfo(channels=1, image_size=8)
SAE = {"name": "sae", "channels": [4, 8, 8], "latent_dim": 4, "num_steps": 3}
DDPM = {"name": "sddpm", "ch": 8, "ch_mult": [1], "num_res_blocks": 1, "timesteps": 2,
        "diffusion_steps": 10, "solver": "ddim", "sample_steps": 4}
VQVAE = {"name": "vqvae", "time_steps": 2, "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1,
         "attn_resolutions": [], "z_channels": 8, "embed_dim": 4, "n_embed": 16,
         "num_groups": 4, "disc_ndf": 8, "disc_layers": 1, "disc_start": 1}


def tiny(model: dict):
    """An untrained tiny model; the SAE's weights scaled x8 so that every layer but the readout
    spikes (at initialisation it is almost silent, and a silent layer pins nothing)."""
    torch.manual_seed(0)
    net = build_model(build_run_config({"model": model}, check_eval=False).model, INFO)
    if model["name"] == "sae":
        with torch.no_grad():
            for p in net.parameters():
                if p.dim() > 1:
                    p.mul_(8.0)
    return net.eval()


def images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


class _Hook:
    """A plain forward hook on one named module: every output, and its spike totals."""

    def __init__(self, model, name):
        self.outs = []
        self.handle = dict(model.named_modules())[name].register_forward_hook(
            lambda m, a, o: self.outs.append((o[0] if isinstance(o, tuple) else o).detach()))

    def remove(self):
        self.handle.remove()


@pytest.mark.parametrize("spec", [SAE, DDPM], ids=["sae", "sddpm"])
def test_rates_are_the_monitor_and_info_numbers_and_a_hand_count(spec):
    model, x = tiny(spec), images()
    layer = neuron_layers(model)[len(neuron_layers(model)) // 2]
    hook = _Hook(model, layer)
    call, _ = activity_call(model, x)
    act = record_activity(model, call, n_samples=4)
    hook.remove()
    spikes = sum(float(o.sum()) for o in hook.outs)
    numel = sum(o.numel() for o in hook.outs)
    assert act.rates[layer] == pytest.approx(spikes / numel, rel=1e-12)  # integer counts
    assert list(act.rates) == neuron_layers(model)  # model order, every layer
    dataset = [(img, 0) for img in x]
    rows = model_info(model, dataset, n=4)["layers"]  # what `snngen info` prints
    assert act.rates == {r["name"]: r["firing_rate"] for r in rows if r["kind"] == "neuron"}


@pytest.mark.parametrize("spec", [SAE, DDPM], ids=["sae", "sddpm"])
def test_raster_is_what_a_hook_on_that_layer_sees(spec):
    model, x = tiny(spec), images()
    names = neuron_layers(model)
    layer = names[1]
    hook = _Hook(model, layer)
    call, _ = activity_call(model, x)
    act = record_activity(model, call, layers=[names[0], layer])
    hook.remove()
    first = hook.outs[0]  # [T, B, ...], the layer's first call
    tr = act.traces[layer]
    want = first[:, 0].reshape(first.shape[0], -1)
    assert tr.n_neurons == want.shape[1] and tr.sample_rate == pytest.approx(float(want.mean()))
    assert torch.equal(tr.spikes, want[:, tr.neurons])
    other = act.traces[names[0]].spikes  # another layer's raster is not this one's
    assert other.shape != tr.spikes.shape or not torch.equal(other, tr.spikes)
    # the membrane (charge before reset / threshold) crosses 1 exactly where the layer spiked
    mem = tr.membrane  # [T, B, M]
    flat = first.reshape(first.shape[0], first.shape[1], -1)[:, :, tr.membrane_neurons]
    assert torch.equal((mem >= 1).float(), flat.float())


def test_default_layers_spread_and_bad_layer_is_one_line():
    model = tiny(DDPM)
    names = neuron_layers(model)
    chosen = choose_layers(model)
    assert chosen[0] == names[0] and chosen[-1] == names[-1] and len(chosen) == 4
    assert [names.index(c) for c in chosen] == sorted(names.index(c) for c in chosen)
    with pytest.raises(SnngenError, match=r"--layers nope: not a spiking layer of model 'sddpm'"):
        choose_layers(model, ["nope"])


def test_chain_ends_at_the_samplers_output_and_walks_its_grid():
    model = tiny(DDPM)
    imgs, chain = denoising_chain(model, n=2, frames=8, seed=3, solver="ddim", steps=5)
    plain = model.sample(2, generator=torch.Generator().manual_seed(3), solver="ddim", steps=5)
    assert torch.equal(imgs, plain)
    assert torch.equal((chain.x[-1].clamp(-1, 1) + 1) / 2, plain)
    grid = sampling_timesteps(model.schedule, 5, "sddpm", None)  # [9, 7, 5, 3, 1]
    assert chain.times == [float(t) for t in grid] + [0.0]  # noise first, output last
    assert chain.x[0].shape == (2, 1, 8, 8)


def test_codebook_counts_are_a_bincount_of_the_encoded_indices():
    vq, x = tiny(VQVAE), images(6)
    counts, usage = codebook_counts(vq, [x[:4], x[4:]])
    with torch.no_grad():
        idx = vq.encode(vq.to_model_space(x)).indices  # [T, B, h, w] (vanilla)
    want = torch.bincount(idx.reshape(-1), minlength=16)
    assert torch.equal(counts, want)
    p = want[want > 0].double() / want.sum()
    assert usage["perplexity"] == pytest.approx(math.exp(-(p * p.log()).sum()), rel=1e-12)
    assert usage["dead"] == int((want == 0).sum())


def test_training_curves_follow_versions_in_numeric_order(tmp_path):
    for version, rows in ((10, "3,0,0.5,\n"), (2, "1,0,1.5,\n2,0,,7.0\n")):
        folder = tmp_path / "logs" / f"version_{version}"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text("step,epoch,train/loss,train/kl\n" + rows)
    curves = training_curves(tmp_path)
    assert curves == {"train/loss": ([1, 3], [1.5, 0.5]), "train/kl": ([2], [7.0])}


def test_default_layers_are_among_those_that_ran():
    model, x = tiny(SAE), images()
    call, _ = activity_call(model, x)
    # the SAE's reconstruction runs every layer: 4 spread over all of them
    assert list(record_activity(model, call).traces) == choose_layers(model)
    ran = [name for name in neuron_layers(model) if name != neuron_layers(model)[-1]]
    picked = choose_layers(model, among=ran)
    assert picked[-1] == ran[-1] and neuron_layers(model)[-1] not in picked


def test_raster_neurons_are_evenly_spread():
    assert raster_neurons(5, 8) == [0, 1, 2, 3, 4]
    idx = raster_neurons(1000, 5)
    assert idx == [0, 250, 500, 749, 999]


def test_every_picture_is_written(tmp_path):
    model, x = tiny(SAE), images()
    call, _ = activity_call(model, x)
    act = record_activity(model, call)
    _, chain = denoising_chain(tiny(DDPM), n=2, frames=4)
    counts, usage = codebook_counts(tiny(VQVAE), [x])
    paths = [
        draw_firing_rates(act.rates, tmp_path / "r.png"),
        draw_raster(act.traces, tmp_path / "s.png"),
        draw_membranes(act.traces, tmp_path / "m.png"),
        draw_chain(chain, tmp_path / "c.png"),
        draw_codebook(counts, usage, tmp_path / "q.png"),
        draw_curves({"train/loss": ([1, 2], [1.0, 0.5])}, tmp_path / "t.png"),
    ]
    for path in paths:
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) >= 200  # readable, not a thumbnail
