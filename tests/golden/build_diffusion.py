"""Golden fixtures of the spiking diffusion family, made by running the original code.

Originals (see ``ORIGINALS``):

* ``sddpm``: AndyCao1125/SDDPM - ``model/SpikingUNet.py`` (``Spk_UNet``) and ``diffusion.py``
  (``GaussianDiffusionTrainer``, ``GaussianDiffusionSampler``: DDPM and DDIM);
* ``sdm``: AndyCao1125/SDM - ``SDM/TSM.py`` (``Spk_UNet_TSM``);
* ``analytic_dpm``: baofff/Analytic-DPM - ``cifar_imagenet_codes/core/inference`` (the optimal
  variance and mean on DDPM and DDIM trajectories, ``reverse_ddpm_ms_eps`` /
  ``reverse_ddim_ms_eps``, the trajectories ``_choice_steps``) and ``DDPMNaiveEvaluator
  .save_ms_eps`` (the Gamma estimate).

Interpreter: the originals import ``spikingjelly`` (0.0.0.0.14, their requirements); make a
throwaway environment and run the builder with it::

    python3 -m venv --system-site-packages /tmp/diff-venv
    /tmp/diff-venv/bin/pip install --no-deps spikingjelly==0.0.0.0.14
    SNNGEN_ORIGINALS=/work/.mirror /tmp/diff-venv/bin/python tests/golden/make_fixtures.py \
        --only diffusion

``torchvision`` (imported by Analytic-DPM's evaluator for image grids, unused here) is stubbed.

What is adjusted, and why:

* Float64 runs: SDDPM's ``extract`` casts every schedule coefficient to float32 (``.float()``);
  for the float64 fixtures the builder replaces it by the same gather without the cast, so the
  comparison measures the computation, not float32 rounding. The float32 fixtures run the
  original unchanged.
* Time index: Analytic-DPM numbers steps 1..N (0 = data); the cheap eps function sees snngen's
  0-based step ``n - 1`` (the original's ``shift1`` convention for pretrained models).
* Random draws: the originals draw noise from torch's global generator; the builder seeds it and
  records the seed; snngen's samplers are given a generator with the same seed and consume it in
  the same order (checked by the tests: a different order gives different samples).

The float32 U-Net forwards and the float32 DDIM run also record every neuron call of the original
(spikes and near-threshold membranes, :class:`LoggedNeurons`), on which the tests run snngen's
float32 U-Net (``golden.original_spikes``).
"""

from __future__ import annotations

import importlib
import logging
import math
import random
import sys
import types
from pathlib import Path

import numpy as np
import torch

ORIGINALS = {
    "sddpm": ("AndyCao1125/SDDPM", "91632f6138575fb7e6388e98f02c318b961a1d4d"),
    "sdm": ("AndyCao1125/SDM", "d249bc0c50b650300e93a071637ad3d9a3374fb0"),
    "analytic_dpm": ("baofff/Analytic-DPM", "2d7a28c0bbd984a6d47744ab4f6440f3e79757db"),
}

#: the tiny U-Net of every U-Net fixture
UNET = dict(T=1000, ch=4, ch_mult=[1, 2], attn=[], num_res_blocks=1, dropout=0.0, timestep=4,
            img_ch=3)
IMAGE = 8
BATCH = 3


# --------------------------------------------------------------------------- helpers


def cheap_eps(params: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in eps network ``[B, C, H, W], t [B] -> [B, C, H, W]`` (0-based t):
    ``tanh(a x + b sin(t / 37) + c)``; the golden tests evaluate the same formula."""
    s = torch.sin(t.to(x.dtype) / 37.0).reshape(-1, 1, 1, 1)
    return torch.tanh(params["a"].to(x.dtype) * x + params["b"].to(x.dtype) * s
                      + params["c"].to(x.dtype))


def cheap_params(seed: int, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a": 0.5 + torch.rand(shape, generator=g, dtype=torch.float64),
        "b": torch.randn(shape, generator=g, dtype=torch.float64),
        "c": 0.3 * torch.randn(shape, generator=g, dtype=torch.float64),
    }


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter and BN statistic a seeded value that makes the net fire."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.6 + 0.8 * torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 1.5 / math.sqrt(fan_in))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        for name, p in model.named_parameters():
            if name.endswith("tsmp"):
                p.copy_(0.6 + 0.8 * torch.rand(p.shape, generator=g))


def _import_from(folder: Path, modules: list[str]) -> list[types.ModuleType]:
    """Import ``modules`` with ``folder`` first on sys.path (fresh, forgetting earlier ones)."""
    for name in list(sys.modules):
        if name.split(".")[0] in {"model", "diffusion", "TSM", "core", "interface"}:
            del sys.modules[name]
    sys.path.insert(0, str(folder))
    try:
        return [importlib.import_module(m) for m in modules]
    finally:
        sys.path.remove(str(folder))


def _double_extract(diffusion_module: types.ModuleType) -> None:
    """SDDPM's ``extract`` without its float32 cast (for the float64 runs, see docstring)."""

    def extract(v, t, x_shape):
        out = torch.gather(v, index=t, dim=0)
        return out.view([t.shape[0]] + [1] * (len(x_shape) - 1))

    diffusion_module.extract = extract


# --------------------------------------------------------------------------- U-Net


class LoggedNeurons:
    """``with LoggedNeurons(net) as calls:`` records every spikingjelly ``IFNode`` call of
    ``net`` (multi-step, hard reset) as ``golden.neuron_record`` dicts in ``calls``. The node's
    own ``multi_step_forward`` computes the spikes (eval mode: its TorchScript loop); the
    membranes are recomputed from its input and spikes with its update (``h = v + x``, then
    ``v = h (1 - s) + v_reset s``), elementwise and so bit-identical, and checked against the
    spikes (``s = h >= v_threshold``)."""

    def __init__(self, net: torch.nn.Module) -> None:
        from golden import NeuronLog

        self.net, self.log, self.calls = net, NeuronLog(), {}
        self.names = {id(m): n for n, m in net.named_modules()}

    def __enter__(self) -> dict:
        from spikingjelly.activation_based.neuron import IFNode

        self.cls, self.forward = IFNode, IFNode.multi_step_forward
        log, forward, names = self.log, self.forward, self.names

        def logged(node, x_seq):
            v = node.v
            spikes = forward(node, x_seq)
            membranes = []
            for x, s in zip(x_seq, spikes, strict=True):
                h = v + x
                membranes.append(h)
                v = h * (1.0 - s) + node.v_reset * s
            h = torch.stack(membranes)
            assert torch.equal((h >= node.v_threshold).to(spikes.dtype), spikes)
            log.add(node, names[id(node)], h, spikes, node.v_threshold)
            return spikes

        IFNode.multi_step_forward = logged
        return self.calls

    def __exit__(self, *exc) -> None:
        self.cls.multi_step_forward = self.forward
        self.calls.update(self.log.records())


def unet_payload(unet_cls, functional, diffusion, seed: int) -> dict:
    """Forward (train and eval), loss and gradients of one original U-Net, float64 + float32."""
    torch.manual_seed(seed)
    net = unet_cls(**UNET)
    randomise(net, seed + 1)
    net = net.double()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(BATCH, UNET["img_ch"], IMAGE, IMAGE, generator=g, dtype=torch.float64)
    t = torch.tensor([999, 500, 3])
    out: dict = {"state_dict": state, "config": dict(UNET, image_size=IMAGE), "x": x, "t": t}

    net.eval()
    out["eval_eps"] = net(x, t).detach()
    functional.reset_net(net)
    net.train()
    out["train_eps"] = net(x, t).detach()
    functional.reset_net(net)
    out["running_stats_after_train"] = {
        k: v.clone() for k, v in net.state_dict().items() if "running" in k
    }
    net.load_state_dict(state)

    # the training loss on recorded t and noise (seeded global generator)
    trainer = diffusion.GaussianDiffusionTrainer(net, 1e-4, 0.02, 1000).double()
    x0 = x.clamp(-1, 1).clone().requires_grad_(True)
    torch.manual_seed(seed + 3)
    loss = trainer(x0).mean()
    loss.backward()
    functional.reset_net(net)
    out["loss_seed"] = seed + 3
    out["x0"] = x0.detach()
    out["loss"] = loss.detach()
    out["grad_x0"] = x0.grad.detach().clone()
    out["grad_params"] = {k: p.grad.detach().clone() for k, p in net.named_parameters()
                          if p.grad is not None}
    net.load_state_dict(state)
    net.zero_grad()

    # float32: the original as it is
    net32 = unet_cls(**UNET)
    net32.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    net32.eval()
    with LoggedNeurons(net32) as out["eval_neurons_float32"]:
        out["eval_eps_float32"] = net32(x.float(), t).detach()
    functional.reset_net(net32)
    net32.train()
    with LoggedNeurons(net32) as out["train_neurons_float32"]:
        out["train_eps_float32"] = net32(x.float(), t).detach()
    functional.reset_net(net32)
    return out


# --------------------------------------------------------------------------- DDPM / DDIM


class _CheapNet(torch.nn.Module):
    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.params = params

    def forward(self, x, t):
        return cheap_eps(self.params, x, t)


def sampler_run(diffusion, functional, model, n_steps: int, sample_type: str, steps: int,
                x_T: torch.Tensor, seed: int) -> torch.Tensor:
    """Run SDDPM's ``GaussianDiffusionSampler`` from ``x_T`` with the global generator seeded."""
    sampler = diffusion.GaussianDiffusionSampler(
        model, 1e-4, 0.02, n_steps, img_size=x_T.shape[-1], mean_type="epsilon",
        var_type="fixedlarge", sample_type=sample_type, sample_steps=steps)
    if x_T.dtype == torch.float64:
        sampler = sampler.double()
    torch.manual_seed(seed)
    with torch.no_grad():
        x = sampler(x_T.clone())
    functional.reset_net(model)
    return x, list(sampler.t_list)


def sampler_payload(diffusion, functional, unet_cls, unet_state) -> dict:
    out: dict = {}
    # the tiny U-Net: DDPM over a 40-step schedule, DDIM 50 steps of SDDPM's 1000-step grid
    g = torch.Generator().manual_seed(11)
    x_T = torch.randn(2, UNET["img_ch"], IMAGE, IMAGE, generator=g, dtype=torch.float64)
    net = unet_cls(**UNET).double()
    net.load_state_dict(unet_state)
    net.eval()
    out["unet_x_T"] = x_T
    out["unet_ddpm_40"], _ = sampler_run(diffusion, functional, net, 40, "ddpm", 40, x_T, 21)
    out["unet_ddim_50"], grid = sampler_run(diffusion, functional, net, 1000, "ddim", 50, x_T, 22)
    out["ddim_50_t_list"] = torch.tensor(grid)
    out["unet_ddpm_40_seed"], out["unet_ddim_50_seed"] = 21, 22
    # the cheap eps function: the full 1000-step DDPM and DDIM grids of several lengths
    params = cheap_params(5, (3, 4, 4))
    out["cheap_params"] = params
    cheap = _CheapNet(params)
    x_T = torch.randn(4, 3, 4, 4, generator=g, dtype=torch.float64)
    out["cheap_x_T"] = x_T
    out["cheap_ddpm_1000"], _ = sampler_run(diffusion, functional, cheap, 1000, "ddpm", 1000,
                                            x_T, 31)
    out["cheap_ddpm_1000_seed"] = 31
    for steps in (10, 50, 600):
        x, grid = sampler_run(diffusion, functional, cheap, 1000, "ddim", steps, x_T, 32)
        out[f"cheap_ddim_{steps}"] = x
        out[f"ddim_{steps}_t_list"] = torch.tensor(grid)
    return out


def sampler_payload_float32(diffusion, functional, unet_cls, unet_state, x_T) -> dict:
    net = unet_cls(**UNET)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in unet_state.items()})
    net.eval()
    with LoggedNeurons(net) as calls:
        x, _ = sampler_run(diffusion, functional, net, 1000, "ddim", 50, x_T.float(), 22)
    return {"unet_ddim_50_float32": x, "unet_ddim_50_float32_neurons": calls}


# --------------------------------------------------------------------------- Analytic-DPM


class _Anything(types.ModuleType):
    """A stand-in module: any attribute is a no-op callable class."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None,
                               "__call__": lambda self, *a, **k: None})


def _stub_torchvision() -> None:
    """Analytic-DPM imports torchvision for data sets and image grids, unused here."""
    for name in ("torchvision", "torchvision.utils", "torchvision.datasets",
                 "torchvision.transforms"):
        sys.modules.setdefault(name, _Anything(name))


def analytic_payload(folder: Path) -> dict:
    _stub_torchvision()
    root = folder / "cifar_imagenet_codes"
    rd, rdi, utils, ev = _import_from(root, [
        "core.inference.sampler.reverse_ddpm", "core.inference.sampler.reverse_ddim",
        "core.inference.utils", "interface.evaluators.ddpm_evaluator"])
    N = 1000
    betas = np.append(0.0, np.linspace(1e-4, 0.02, N))  # index 0: data, 1..N: steps
    params = cheap_params(7, (3, 4, 4))

    def eps_model(x, t):  # the original's 1-based t -> snngen's 0-based step
        return cheap_eps(params, x, t.to(torch.float64) - 1)

    # Gamma_n (ms_eps) as the original estimates it: every step, the whole (tiny) data set
    data = torch.rand(12, 3, 4, 4, generator=torch.Generator().manual_seed(3),
                      dtype=torch.float64) * 2 - 1
    fake = types.SimpleNamespace(
        dataset=types.SimpleNamespace(get_train_val_data=lambda labelled: data),
        eps_model=eps_model)
    random.seed(0)
    torch.manual_seed(4)
    tmp = Path(__import__("tempfile").mkdtemp())
    ev.DDPMNaiveEvaluator.save_ms_eps(fake, str(tmp / "ms_eps.pth"), batch_size=64, betas=betas,
                                      rescale_timesteps=False)
    ms_eps_est = torch.load(tmp / "ms_eps.pth", weights_only=False)
    random.seed(0)
    order = torch.tensor(random.sample(list(range(len(data))), len(data)))

    # a Gamma with values above 1 (steps 300..349, on every trajectory here) and small ones, so
    # both clips (Gamma <= 1, i.e. cov >= 0, and cov <= 1) bind
    gamma = 1.02 - 0.9 * np.linspace(0, 1, N) ** 0.5
    gamma[300:350] = 1.05
    ms_eps = np.concatenate([[0.0], gamma])
    captured: list[dict] = []
    utils._report_statistics = lambda s, r, st: captured.append({"s": s, "r": r, **st})
    rd._report_statistics = rdi._report_statistics = utils._report_statistics
    out: dict = {"gamma_data": data, "gamma_data_order": order, "gamma_seed": 4,
                 "gamma_estimate": torch.as_tensor(ms_eps_est[1:], dtype=torch.float64),
                 "cheap_params": params, "gamma": torch.as_tensor(ms_eps[1:])}
    x_init = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(9),
                         dtype=torch.float64)
    out["x_T"] = x_init
    for steps in (10, 25, 50):
        out[f"steps_{steps}"] = torch.tensor(utils._choice_steps(N, steps, "linear")) - 1
        for kind, fn, kwargs in (
            ("ddpm", rd.reverse_ddpm_ms_eps, dict(steps_type="linear")),
            ("ddim", rdi.reverse_ddim_ms_eps, dict(eta=0.0)),
        ):
            for clip in (0, 1):
                captured.clear()
                torch.manual_seed(40 + steps)
                x = fn(x_init.clone(), betas, False, eps_model=eps_model, ms_eps=ms_eps,
                       sample_steps=steps, clip_sigma_idx=clip, clip_pixel=2, **kwargs)
                key = f"{kind}_{steps}_clip{clip}"
                out[key] = x
                out[key + "_seed"] = 40 + steps
                out[key + "_sigma2"] = torch.tensor(
                    [float(st["sigma2"]) for st in captured if "sigma2" in st],
                    dtype=torch.float64)
    return out


# --------------------------------------------------------------------------- entry point


def build(sources: dict[str, Path]) -> dict[str, dict]:
    torch.set_num_threads(1)
    logging.disable(logging.CRITICAL)
    model_mod, diffusion = _import_from(sources["sddpm"], ["model.SpikingUNet", "diffusion"])
    from spikingjelly.activation_based import functional

    fixtures: dict[str, dict] = {}
    _double_extract(diffusion)
    plain = unet_payload(model_mod.Spk_UNet, functional, diffusion, seed=100)
    fixtures["diffusion_unet"] = plain
    fixtures["diffusion_samplers"] = sampler_payload(
        diffusion, functional, model_mod.Spk_UNet, plain["state_dict"])
    tsm_mod, sdm_diffusion = _import_from(sources["sdm"] / "SDM", ["TSM", "diffusion"])
    _double_extract(sdm_diffusion)
    fixtures["diffusion_unet_tsm"] = unet_payload(tsm_mod.Spk_UNet_TSM, functional,
                                                  sdm_diffusion, seed=200)
    # float32 sampling: the original's extract as it is
    (diffusion32,) = _import_from(sources["sddpm"], ["diffusion"])
    fixtures["diffusion_samplers"].update(sampler_payload_float32(
        diffusion32, functional, model_mod.Spk_UNet, plain["state_dict"],
        fixtures["diffusion_samplers"]["unet_x_T"]))
    fixtures["diffusion_analytic_dpm"] = analytic_payload(sources["analytic_dpm"])
    return fixtures
