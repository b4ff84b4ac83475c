"""Golden fixtures of FSVAE and its ANN VAE baseline (kamata1729/FullySpikingVAE, AAAI 2022).

Runs the original's own modules from the pinned checkout: ``fsvae_models/fsvae.py`` (``FSVAE``,
``FSVAELarge``), its posterior/prior, ``snn_layers.py``, ``ann_models/ann_vae.py``
(``VanillaVAE``) and the op counter ``utils.CountMulAddSNN`` hooked exactly as
``main_fsvae.add_hook`` hooks it. ``utils.py`` imports ``pycuda`` at module level for a GPU
report it never needs here: empty ``pycuda`` modules are put in ``sys.modules`` first.

Deliberate, mechanical changes to what runs:

* tiny width: the original hard-codes ``hidden_dims = [32, 64, 128, 256]`` (``[..., 512]`` in the
  large variant) inside ``__init__``; the constant tuple of that literal in the compiled
  ``__init__`` is replaced by a tiny one (``SMALL``/``LARGE``/``ANN`` below). Latent size, k and
  T come from ``glv.network_config`` as in the original.
* float64: the whole build runs with ``torch.set_default_dtype(torch.float64)`` (the original's
  ``LIFSpike`` allocates its state with the default dtype); ``SpikeAct`` still returns float32
  0/1 values, written into the float64 output (exact). Its backward then carries the incoming
  gradient in float32 (a rounding of ~6e-8 relative, far inside the 1e-6 tolerance).
* seeded weights: tdBN/BN affine weights and biases are re-drawn (PyTorch starts them at 1/0),
  then one warm-up train-mode forward with ``momentum = None`` (cumulative average: the running
  statistics become that batch's statistics) makes the eval-mode forward meaningful; momentum
  goes back to 0.1 before anything is recorded.

Random numbers: the posterior's and the prior sampler's ``torch.randint`` draws come from the
global generator seeded with ``SEED_*``; snngen draws its ``[T, B, C]`` indices at once and
consumes the generator identically (the recorded indices are stored too). The scheduled-sampling
draws (``random.random()`` and ``torch.randn_like``) are recorded and fed to snngen.

Fixtures (all float64 unless named ``float32``):

* ``fsvae_small``: state dict; input; train mode without / with scheduled sampling (outputs,
  ``q_z``, ``p_z``, sampled z, every loss term incl. the KLD variant, gradients w.r.t. the input
  and every parameter, running statistics after the forward); eval mode (outputs, losses, the
  ``CountMulAddSNN`` additions/multiplications); prior samples; the p ramp of ``update_p``;
  and a float32 repeat of train and eval;
* ``fsvae_large``: the 5-level CelebA variant (3 x 64 x 64): train loss, gradients, eval, count,
  samples;
* ``ann_vae``: the ANN VAE: train mode (outputs, mu, log_var, losses, gradients, running stats),
  eval reconstruction, samples, float32 repeat.

The float32 repeat of ``fsvae_small`` also records every ``LIFSpike`` call of the train step,
the eval forward and the sampling (spikes and near-threshold membranes, :func:`logged_neurons`),
on which the tests run snngen (``golden.original_spikes``).

Build: ``SNNGEN_ORIGINALS=/work/.mirror python3 tests/golden/make_fixtures.py --only fsvae``.
"""

from __future__ import annotations

import contextlib
import random
import sys
import types
from pathlib import Path

import torch
from torch import Tensor

ORIGINALS = {"fsvae": ("kamata1729/FullySpikingVAE", "ffadb3d4bf4fe02927acb241ac11e6ad693c22dc")}

SMALL = dict(widths=(4, 8, 8, 8), in_channels=1, image_size=32, latent_dim=8, k=4, n_steps=8,
             batch=3)
LARGE = dict(widths=(4, 4, 8, 8, 8), in_channels=3, image_size=64, latent_dim=8, k=4, n_steps=6,
             batch=2)
ANN = dict(widths=(4, 8, 8, 8), in_channels=1, image_size=32, latent_dim=8, batch=3)
ORIGINAL_WIDTHS = ((32, 64, 128, 256), (32, 64, 128, 256, 512))
SCHEDULED_P = 0.5  # the prior's scheduled-sampling probability in the scheduled fixture
KLD_WEIGHT = 0.01  # the ANN VAE's kld_weight (the original passes 1 / len(loader))
SEED_WEIGHTS, SEED_TRAIN, SEED_SCHED, SEED_EVAL, SEED_SAMPLE = 0, 11, 12, 13, 14


# --------------------------------------------------------------------------- the original


def import_original(root: Path) -> types.SimpleNamespace:
    """Import the original's modules from ``root`` (``pycuda`` stubbed for ``utils.py``)."""
    sys.path.insert(0, str(root))
    for name in ("pycuda", "pycuda.driver", "pycuda.autoinit"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import global_v as glv
    import utils
    from ann_models import ann_vae
    from fsvae_models import fsvae, snn_layers

    return types.SimpleNamespace(glv=glv, fsvae=fsvae, layers=snn_layers, utils=utils,
                                 ann_vae=ann_vae)


def narrow(cls: type, widths: tuple[int, ...]) -> None:
    """Replace the ``hidden_dims`` literal of ``cls.__init__`` by ``widths`` (same length)."""
    code = cls.__init__.__code__
    consts = tuple(widths if c in ORIGINAL_WIDTHS and len(c) == len(widths) else c
                   for c in code.co_consts)
    if consts == code.co_consts:
        if widths in consts:  # narrowed already (the float32 repeat)
            return
        raise RuntimeError(f"{cls.__name__}.__init__: no hidden_dims literal to narrow")
    cls.__init__.__code__ = code.replace(co_consts=consts)


def configure(orig: types.SimpleNamespace, cfg: dict) -> None:
    """``glv.init`` with the fixture's sizes (batch 250 / lr unused)."""
    orig.glv.init({"in_channels": cfg["in_channels"], "latent_dim": cfg["latent_dim"],
                   "n_steps": cfg["n_steps"], "k": cfg["k"], "batch_size": cfg["batch"],
                   "lr": 1e-3}, [0])


def seed_norms(net: torch.nn.Module, norm_type: type, run_warmup) -> None:
    """Re-draw the affine weights of every ``norm_type`` and set running statistics from one
    cumulative-average warm-up forward (``run_warmup()``), then restore momentum 0.1."""
    gen = torch.Generator().manual_seed(SEED_WEIGHTS + 1)
    norms = [m for m in net.modules() if isinstance(m, norm_type)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(0.6 + 0.8 * torch.rand(m.weight.shape, generator=gen))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            m.momentum = None
        run_warmup()
    for m in norms:
        m.momentum = 0.1


def image_codes(cfg: dict, seed: int) -> Tensor:
    """Integer codes k in [0, 256] of images k / 256 (stored as int16)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (cfg["batch"], cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    return torch.randint(0, 257, shape, generator=gen).to(torch.int16)


def images(cfg: dict, seed: int) -> Tensor:
    """Images in [0, 1] on a 1/256 grid (so ``2 x - 1`` is exact in both codes)."""
    return image_codes(cfg, seed).to(torch.get_default_dtype()) / 256


@contextlib.contextmanager
def recording():
    """Record ``torch.randint``, ``random.random`` and ``torch.randn_like`` results."""
    log = {"randint": [], "random": [], "randn_like": []}
    randint, rand, randn_like = torch.randint, random.random, torch.randn_like

    def rec(name, fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            log[name].append(out.clone() if isinstance(out, Tensor) else out)
            return out
        return wrapped

    torch.randint, random.random = rec("randint", randint), rec("random", rand)
    torch.randn_like = rec("randn_like", randn_like)
    try:
        yield log
    finally:
        torch.randint, random.random, torch.randn_like = randint, rand, randn_like


@contextlib.contextmanager
def logged_neurons(orig, net: torch.nn.Module, full_only: bool = False):
    """Record every ``LIFSpike`` call of ``net`` (float32 fixtures): yields a dict that is
    filled, on leaving, with the calls as ``golden.pack_records`` (time first, as snngen).

    The membranes are recomputed from the call's input and spikes with ``state_update``'s own
    expression (``u = tau u (1 - o) + x``, elementwise, so bit-identical) and checked against
    the spikes (``u > Vth``). ``full_only``: of the posterior's and prior's calls keep only
    those over all T steps (eval mode: snngen advances them one step at a time outside its
    hooks, then runs each neuron once over the whole sequence; the original re-runs every
    prefix)."""
    from golden import NeuronLog

    layers, log, steps = orig.layers, NeuronLog(), orig.glv.network_config["n_steps"]
    names = {id(m): n for n, m in net.named_modules()}
    forward = layers.LIFSpike.forward

    def logged(self, x):
        out = forward(self, x)
        u = torch.zeros(x.shape[:-1], device=x.device)
        o = torch.zeros_like(u)
        membranes = []
        for t in range(x.shape[-1]):
            u = layers.tau * u * (1 - o) + x[..., t]
            membranes.append(u)
            o = out[..., t]
        h = torch.stack(membranes)
        assert torch.equal((h > layers.Vth).to(out.dtype), out.movedim(-1, 0))
        name = names[id(self)]
        if not (full_only and name.startswith(("posterior.", "prior.")) and len(h) != steps):
            log.add(self, name, h, out.movedim(-1, 0), layers.Vth)
        return out

    layers.LIFSpike.forward = logged
    calls: dict = {}
    try:
        yield calls
    finally:
        layers.LIFSpike.forward = forward
        calls.update(log.records())


def float32_neurons(orig, net: torch.nn.Module, full_only: bool = False):
    """:func:`logged_neurons` in a float32 build, else nothing recorded (float64 fixtures are
    compared exactly, chained)."""
    if torch.get_default_dtype() == torch.float32:
        return logged_neurons(orig, net, full_only)
    return contextlib.nullcontext({})


def detached(d: dict) -> dict:
    return {k: v.detach().clone() for k, v in d.items()}


def param_grads(net: torch.nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def norm_buffers(net: torch.nn.Module) -> dict[str, Tensor]:
    return {n: b.detach().clone() for n, b in net.named_buffers()
            if n.endswith(("running_mean", "running_var"))}


# --------------------------------------------------------------------------- FSVAE


def spikes_in(x: Tensor, steps: int) -> Tensor:
    return x.unsqueeze(-1).repeat(1, 1, 1, 1, steps)  # (N, C, H, W, T), as main_fsvae


def make_fsvae(orig, cfg: dict, large: bool) -> torch.nn.Module:
    configure(orig, cfg)
    cls = orig.fsvae.FSVAELarge if large else orig.fsvae.FSVAE
    narrow(cls, cfg["widths"])
    torch.manual_seed(SEED_WEIGHTS)
    net = cls()
    warm = images(cfg, 100) * 2 - 1

    def warmup():
        net.train()
        net(spikes_in(warm, cfg["n_steps"]), scheduled=False)

    seed_norms(net, orig.layers.tdBatchNorm, warmup)
    return net


def fsvae_train(net, orig, cfg: dict, x01: Tensor, scheduled: bool) -> dict:
    """One train-mode forward + loss + backward of the original, with its random draws."""
    state = detached(net.state_dict())
    net.train()
    net.zero_grad(set_to_none=True)
    net.p = SCHEDULED_P
    x = (x01 * 2 - 1).requires_grad_()
    torch.manual_seed(SEED_SCHED if scheduled else SEED_TRAIN)
    random.seed(SEED_SCHED)
    with recording() as log, float32_neurons(orig, net) as neurons:
        recon, q_z, p_z, z = net(spikes_in(x, cfg["n_steps"]), scheduled=scheduled)
    mmd = net.loss_function_mmd(x, recon, q_z, p_z)
    kld = net.loss_function_kld(x, recon, q_z, p_z)
    mmd["loss"].backward()
    out = {
        "seed": SEED_SCHED if scheduled else SEED_TRAIN,
        "recon": recon.detach(), "q_z": q_z.detach(), "p_z": p_z.detach(), "z": z.detach(),
        "loss": mmd["loss"].detach(), "mse": mmd["Reconstruction_Loss"].detach(),
        "mmd": mmd["Distance_Loss"].detach(), "kld": kld["Distance_Loss"].detach(),
        "loss_kld": kld["loss"].detach(),
        "grad_input": x.grad.detach().clone(), "grad": param_grads(net),
        "running_after": norm_buffers(net),
        "index": torch.stack(log["randint"]).view(cfg["n_steps"], cfg["batch"], -1),
    }
    if neurons:
        out["neurons"] = neurons
    if scheduled:
        out["p"] = SCHEDULED_P
        out["draws"] = torch.tensor(log["random"], dtype=torch.float64)
        out["noise"] = [n.detach().clone() for n in log["randn_like"]]
    net.load_state_dict(state)
    return out


def count_hooks(orig, net):
    """``main_fsvae.add_hook``: CountMulAddSNN on every Conv3d/Linear/ConvTranspose3d/LIFSpike."""
    counter = orig.utils.CountMulAddSNN()
    kinds = (torch.nn.Conv3d, torch.nn.Linear, torch.nn.ConvTranspose3d, orig.layers.LIFSpike)
    handles = [m.register_forward_hook(counter) for m in net.modules() if isinstance(m, kinds)]
    return counter, handles


def fsvae_eval(net, orig, cfg: dict, x01: Tensor) -> dict:
    """Eval-mode forward (as ``main_fsvae.test``, with the op count) and prior samples."""
    state = detached(net.state_dict())
    net.eval()
    x = x01 * 2 - 1
    counter, handles = count_hooks(orig, net)
    torch.manual_seed(SEED_EVAL)
    with torch.no_grad(), recording() as log, float32_neurons(orig, net, True) as neurons:
        recon, q_z, p_z, z = net(spikes_in(x, cfg["n_steps"]), scheduled=True)
        mmd = net.loss_function_mmd(x, recon, q_z, p_z)
    for h in handles:
        h.remove()
    torch.manual_seed(SEED_SAMPLE)
    with torch.no_grad(), float32_neurons(orig, net, True) as sample_neurons:
        sample_x, sample_z = net.sample(cfg["batch"])
    net.load_state_dict(state)
    out = {
        "seed": SEED_EVAL, "sample_seed": SEED_SAMPLE,
        "recon": recon, "q_z": q_z, "p_z": p_z, "z": z,
        "loss": mmd["loss"], "mse": mmd["Reconstruction_Loss"], "mmd": mmd["Distance_Loss"],
        "index": torch.stack(log["randint"]).view(cfg["n_steps"], cfg["batch"], -1),
        "count_add": float(counter.add_sum), "count_mul": float(counter.mul_sum),
        "sample": sample_x, "sample_z": sample_z,
    }
    if neurons:  # float32
        out["neurons"], out["sample_neurons"] = neurons, sample_neurons
    return out


def fsvae_fixture(orig, cfg: dict, large: bool, float32: bool) -> dict:
    net = make_fsvae(orig, cfg, large)
    x01 = images(cfg, 1)
    out = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "large": large,
        "state_dict": detached(net.state_dict()),
        "x_codes": image_codes(cfg, 1),  # the input is x_codes / 256
        "train": fsvae_train(net, orig, cfg, x01, scheduled=False),
        "eval": fsvae_eval(net, orig, cfg, x01),
    }
    if large:  # size: the samples decode through the same eval-mode decoder
        del out["eval"]["recon"]
    if not large and float32:
        out["train_scheduled"] = fsvae_train(net, orig, cfg, x01, scheduled=True)
        ramp = []
        for epoch in (0, 1, 74, 149):
            net.update_p(epoch, 150)
            ramp.append([epoch, 150, net.p])
        out["update_p"] = ramp
    if float32:
        torch.set_default_dtype(torch.float32)
        try:
            out["float32"] = fsvae_fixture(orig, cfg, large, float32=False)
        finally:
            torch.set_default_dtype(torch.float64)
    return out


# --------------------------------------------------------------------------- ANN VAE


def ann_fixture(orig, cfg: dict, float32: bool) -> dict:
    cls = orig.ann_vae.VanillaVAE
    narrow(cls, cfg["widths"])
    torch.manual_seed(SEED_WEIGHTS)
    net = cls(cfg["in_channels"], cfg["latent_dim"])
    warm = images(cfg, 100) * 2 - 1
    seed_norms(net, torch.nn.BatchNorm2d, lambda: net.train()(warm))
    state = detached(net.state_dict())
    x01 = images(cfg, 1)
    x = (x01 * 2 - 1).requires_grad_()
    net.train()
    torch.manual_seed(SEED_TRAIN)
    recon, mu, log_var = net(x)
    losses = net.loss_function(recon, x, mu, log_var, KLD_WEIGHT)
    losses["loss"].backward()
    train = {
        "seed": SEED_TRAIN, "kld_weight": KLD_WEIGHT,
        "recon": recon.detach(), "mu": mu.detach(), "log_var": log_var.detach(),
        "loss": losses["loss"].detach(), "mse": losses["Reconstruction_Loss"].detach(),
        "kld": losses["KLD"].detach(), "grad_input": x.grad.detach().clone(),
        "grad": param_grads(net), "running_after": norm_buffers(net),
    }
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        torch.manual_seed(SEED_EVAL)
        recon_eval, mu_eval, log_var_eval = net(x.detach())
        torch.manual_seed(SEED_SAMPLE)
        sample = net.sample(cfg["batch"], "cpu")
    out = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "state_dict": state, "x_codes": image_codes(cfg, 1), "train": train,
        "eval": {"seed": SEED_EVAL, "sample_seed": SEED_SAMPLE, "recon": recon_eval,
                 "mu": mu_eval, "log_var": log_var_eval, "sample": sample},
    }
    if float32:
        torch.set_default_dtype(torch.float32)
        try:
            out["float32"] = ann_fixture(orig, cfg, float32=False)
        finally:
            torch.set_default_dtype(torch.float64)
    return out


# --------------------------------------------------------------------------- entry point


def compact(obj):
    """Tensors cloned into storages of their own size (a view would save its whole base)."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: compact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(compact(v) for v in obj)
    return obj


def build(sources: dict[str, Path]) -> dict[str, dict]:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    orig = import_original(sources["fsvae"])
    return compact({
        "fsvae_small": fsvae_fixture(orig, SMALL, large=False, float32=True),
        "fsvae_large": fsvae_fixture(orig, LARGE, large=True, float32=False),
        "ann_vae": ann_fixture(orig, ANN, float32=True),
    })
