"""Golden fixtures of the snnTorch spiking-autoencoder tutorial (``tutorial_sae``).

Runs the tutorial's own code: the network class of section 3.5 ("Putting it all together"),
the hyper-parameter assignments of section 5 (``spike_grad``, ``beta``, ``num_steps``,
``latent_dim``, ``thresh``) and the loss expression of the training function (``loss_val =
F.mse_loss(x_recon, real_img)``) are read from ``docs/tutorials/tutorial_sae.rst`` of the pinned
snnTorch checkout and executed with snnTorch 1.0 from the package registry
(``pip install --no-deps "snntorch==1.0.*"``; it needs nothing beyond torch and numpy). The
``snntorch`` package itself is the installed one; its version is recorded in each fixture.

Two deliberate edits to what runs, both mechanical:

* tiny width: in the network class the integer literals 32, 64, 128 (channels) and 2048
  (= 128 * 4 * 4) become 4, 8, 16 and 256 (the tutorial hard-codes its widths); latent_dim,
  num_steps, beta, thresh and the output threshold 20000 stay the tutorial's. The weights of
  the Linear layers and of the first transposed conv are then multiplied by the constants in
  ``GAINS`` so that every layer fires at these tiny fan-ins (rates printed when building);
* float64: snnTorch's ``ATan.forward`` returns ``(x > 0).float()``, float32 whatever the input,
  which a float64 network cannot consume. For the float64 fixture the class is replaced by a
  subclass returning the same 0/1 values in the input's dtype (backward unchanged). The
  float32 fixture runs snnTorch unpatched.

The freshly built network's weights are summarised (per tensor: sum, sum of squares, first
element) to pin the initialisation drawn after ``torch.manual_seed(seed)``. Then the
BatchNorm weights/biases are re-drawn from a seeded generator (PyTorch would start them at 1/0)
so that the affine part is exercised. Each fixture holds the original's state dict before and
after one train-mode forward (the running statistics are updated once per time step), the
input, the train-mode reconstruction, latent spikes and the spikes of every ``Leaky`` layer
(time-first), the MSE loss, its gradients w.r.t. the input (which is also the loss's target)
and every parameter, and the
eval-mode reconstruction, latent spikes and loss (with the post-forward running statistics).
The float32 fixture also records every neuron call of both forwards with its near-threshold
membranes (``train["neurons"]``, ``eval["neurons"]``; ``golden.NeuronLog``), on which the tests
run snngen (``golden.original_spikes``).

Build: ``SNNGEN_ORIGINALS=/work/.mirror python3 tests/golden/make_fixtures.py --only sae``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import torch
from torch import Tensor

ORIGINALS = {"snntorch": ("jeshraghian/snntorch", "634fc22385ec5581998e62787bbe39b53662140f")}
TUTORIAL = "docs/tutorials/tutorial_sae.rst"
WIDTHS = {32: 4, 64: 8, 128: 16, 2048: 16 * 4 * 4}
GAINS = {"encoder.10": 5.0, "linearNet.0": 3.0, "decoder.2": 2.0}
HYPER = ("spike_grad", "beta", "num_steps", "latent_dim", "thresh")


def code_blocks(rst: str) -> list[str]:
    """The ``.. code:: python`` blocks of a Sphinx file, dedented."""
    blocks, lines = [], rst.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != ".. code:: python":
            continue
        indent = len(line) - len(line.lstrip()) + 3
        body = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) < indent:
                break
            body.append(nxt[indent:] if nxt.strip() else "")
        blocks.append("\n".join(body).strip("\n") + "\n")
    return blocks


def only(blocks: list[str], *needles: str, last: bool = False) -> str:
    found = [b for b in blocks if all(n in b for n in needles)]
    if not found or (len(found) > 1 and not last):
        raise RuntimeError(f"tutorial: {len(found)} code blocks contain {needles}")
    return found[-1]


class _Narrow(ast.NodeTransformer):
    """Replace the tutorial's hard-coded channel counts by tiny ones."""

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if type(node.value) is int and node.value in WIDTHS:
            return ast.copy_location(ast.Constant(WIDTHS[node.value]), node)
        return node


def tutorial_namespace(src: Path) -> dict:
    """Execute the tutorial's network class and hyper-parameters; return the namespace with
    ``SAE``, the hyper-parameters and ``loss_fn(x_recon, real_img)``."""
    import snntorch as snn
    import torch.nn.functional as F
    from snntorch import surrogate, utils
    from torch import nn

    blocks = code_blocks((src / TUTORIAL).read_text())
    ns: dict = {"torch": torch, "nn": nn, "F": F, "snn": snn, "utils": utils,
                "surrogate": surrogate}
    # section 5: the hyper-parameter assignments only (the cell also trains)
    params = ast.parse(only(blocks, "spike_grad = surrogate.atan", "net=SAE()"))
    keep = [s for s in params.body if isinstance(s, ast.Assign)
            and all(isinstance(t, ast.Name) and t.id in HYPER for t in s.targets)]
    exec(compile(ast.Module(keep, []), TUTORIAL, "exec"), ns)
    # section 3.5: the complete network class (the last block defining SAE with forward)
    net = ast.parse(only(blocks, "class SAE", "def forward", "def decode", last=True))
    net = ast.fix_missing_locations(_Narrow().visit(net))
    exec(compile(net, TUTORIAL, "exec"), ns)
    # section 4.1: the loss expression of the training function
    train = ast.parse(only(blocks, "def train(network"))
    loss = [n.value for n in ast.walk(train) if isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "loss_val" for t in n.targets)]
    if len(loss) != 1:
        raise RuntimeError("tutorial: expected one loss_val assignment in train()")
    expr = ast.fix_missing_locations(ast.Expression(loss[0]))
    code = compile(expr, TUTORIAL, "eval")
    ns["loss_fn"] = lambda x_recon, real_img: eval(
        code, ns, {"x_recon": x_recon, "real_img": real_img})
    return ns


def patch_atan_dtype() -> None:
    """snnTorch's ATan returns float32 spikes for any input; make them the input's dtype."""
    from snntorch import surrogate

    base = surrogate.ATan

    class ATanSameDtype(base):
        @staticmethod
        def forward(ctx, input_, alpha):
            return base.forward(ctx, input_, alpha).to(input_.dtype)

    surrogate.ATan = ATanSameDtype


def leaky_spike_hooks(net: torch.nn.Module, store: list, log=None) -> list:
    """Record every ``Leaky``'s spikes, one list per layer (in module order), per step; with
    ``log`` (a ``golden.NeuronLog``), also every update's membrane (``Leaky.mem`` after the
    step: the charge before the reset, which snnTorch applies at the next step)."""
    import snntorch as snn

    layers = [m for m in net.modules() if isinstance(m, snn.Leaky)]
    names = {id(m): n for n, m in net.named_modules()}
    store.extend([] for _ in layers)

    def hook(i):
        def fn(module, inputs, output):
            spk = output[0] if isinstance(output, tuple) else output
            store[i].append(spk.detach().clone())
            if log is not None:
                log.add(module, names[id(module)], module.mem, spk, float(module.threshold))
        return fn

    return [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]


def latent_spikes(net: torch.nn.Module, spikes: list) -> Tensor:
    """[T, B, latent]: the spikes of the encoder's last Leaky."""
    import snntorch as snn

    layers = [m for m in net.modules() if isinstance(m, snn.Leaky)]
    return torch.stack(spikes[layers.index(net.encoder[-1])])


def run(src: Path, dtype: torch.dtype, seed: int, batch: int) -> dict:
    import snntorch as snn

    torch.manual_seed(seed)
    ns = tutorial_namespace(src)
    net = ns["SAE"]()
    init = {k: torch.stack([v.double().sum(), v.double().square().sum(), v.double().flatten()[0]])
            for k, v in net.state_dict().items() if v.is_floating_point()}
    net = net.to(dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen, dtype=dtype))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen, dtype=dtype))
        for name, gain in GAINS.items():  # tiny layers: scaled so that every layer fires
            net.get_submodule(name).weight.mul_(gain)
    x = torch.rand(batch, 1, 32, 32, generator=gen, dtype=dtype)
    x = x * (torch.rand(batch, 1, 32, 32, generator=gen, dtype=dtype) < 0.6)  # some zeros
    state_before = {k: v.clone() for k, v in net.state_dict().items()}

    from golden import NeuronLog

    log = NeuronLog() if dtype == torch.float32 else None  # float32: every neuron call
    net.train()
    spikes: list = []
    hooks = leaky_spike_hooks(net, spikes, log)
    xg = x.clone().requires_grad_(True)
    recon = net(xg)
    loss = ns["loss_fn"](recon, xg)  # the image is the input and the target
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(loss, [xg, *params.values()])
    for h in hooks:
        h.remove()
    train = {
        "recon": recon.detach(), "loss": loss.detach(),
        "latent": latent_spikes(net, spikes),
        "spikes": [torch.stack(s).to(torch.uint8) for s in spikes],
        "grad_x": grads[0],
        "grads": {k: g for k, g in zip(params, grads[1:], strict=True)},
    }
    if log is not None:
        train["neurons"] = log.records(ns["num_steps"])
    state_after = {k: v.clone() for k, v in net.state_dict().items()
                   if k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")}

    net.eval()
    spikes = []
    hooks = leaky_spike_hooks(net, spikes, log)
    with torch.no_grad():
        recon_e = net(x)
        loss_e = ns["loss_fn"](recon_e, x)
    for h in hooks:
        h.remove()
    evaluation = {"recon": recon_e, "loss": loss_e, "latent": latent_spikes(net, spikes)}
    if log is not None:
        evaluation["neurons"] = log.records(ns["num_steps"])
    rates = [round(s.float().mean().item(), 3) for s in train["spikes"]]
    print(f"sae fixture {dtype}: loss {loss.item():.5f}, Leaky firing rates {rates}")
    return {
        "snntorch_version": snn.__version__,
        "hyper": {k: (ns[k] if k != "spike_grad" else "atan(alpha=2.0)") for k in HYPER},
        "widths": [4, 8, 16], "seed": seed,
        "init_checksums": init,
        "state_dict": state_before, "state_dict_after_train": state_after,
        "x": x, "train": train, "eval": evaluation,
    }


def build(sources: dict[str, Path]) -> dict[str, dict]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    src = sources["snntorch"]
    text = (src / TUTORIAL).read_text()
    if not re.search(r"threshold=20000", text):
        raise RuntimeError("tutorial: the read-out threshold 20000 was not found")
    out = {"sae_tutorial_float32": run(src, torch.float32, seed=1, batch=3)}
    patch_atan_dtype()
    out["sae_tutorial_float64"] = run(src, torch.float64, seed=0, batch=4)
    return out
