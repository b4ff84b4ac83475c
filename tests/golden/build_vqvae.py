"""Golden fixtures of the temporal-codebook spiking VQ-VAE, stage 1 (Brain-Cog-Lab/tts_vqvae).

Runs the original code (``SVQModelTE``, ``SVQModel``, ``SVQModelTEEpochDVS``, their encoder,
decoder, quantisers, ``VQLPIPSWithDiscriminator`` and the PatchGAN) at a tiny width: ch 32
(GroupNorm(32) needs multiples of 32), ch_mult [1, 1], one residual block per level (the decoder
has two), attention at the lowest resolution (8), z 8, codebook 16 x (T x 8), T = 2, 16x16
images, a 2-layer PatchGAN with ndf 8. The perceptual term is off (``perceptual_weight`` 0, as
the original's N-MNIST config): LPIPS needs VGG16 weights that are not available offline, so
the original's ``LPIPS`` class is replaced by an empty module before the loss is built.

In float64, braincog's spikes are returned in the input's dtype (:func:`spikes_in_input_dtype`).
The float32 run (encoder, quantiser and decoder only) also records every neuron call of the
encoder and of the decoder with its near-threshold membranes (:func:`neuron_calls`), on which
the tests run snngen (``golden.original_spikes``).

The original's own ``training_step`` is run with stand-ins for what Lightning provides
(``optimizers()`` that record the gradients at ``step()``, ``log``, ``manual_backward``, and a
``global_step`` that advances once per optimiser step, as Lightning's does), so the fixture
pins the generator step, the discriminator step and the order between them.

Weights: the original's initialisation, with GroupNorm/BatchNorm scales and shifts drawn
around 1 and 0, q/k convs scaled up (so the attention's neurons fire), a codebook of the
latents' scale, all rounded to float16 values and stored as float16 (the fixture size limit);
the original runs them in float64 (and a float32 copy). Variant models (vanilla codebook,
events) share every same-shaped weight with the main model; their fixtures store only the
tensors that differ.

Needs braincog: run with the throwaway interpreter that has it::

    /tmp/tts-venv/bin/python tests/golden/make_fixtures.py --only vqvae
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

ORIGINALS = {"tts_vqvae": ("Brain-Cog-Lab/tts_vqvae", "81c8b7fd11ab47942e4073a799394f979490beed")}

T, B, RES, NE, ED, ZC = 2, 2, 16, 16, 8, 8
DDCONFIG = dict(double_z=False, z_channels=ZC, resolution=RES, in_channels=3, out_ch=3, ch=32,
                ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[8], dropout=0.0)
DISC = dict(disc_conditional=False, disc_weight=0.8, codebook_weight=1.0, perceptual_weight=0.0,
            disc_num_layers=2, disc_ndf=8)
DISC_START = 3  # in the original's global_step units
BATCH_INDEX = 2  # the batch the training step is taken at: global_step 4 (generator), 5 (disc)
GRAD_FULL = ("decoder.conv_out.weight", "quantize.embedding.weight", "encoder.conv_in.weight",
             "loss.discriminator.main.0.weight")


def probe(n: int, dtype=torch.float64) -> torch.Tensor:
    """The fixed weighting of a gradient checksum (same in the tests)."""
    return torch.sin(torch.arange(n, dtype=dtype) * 0.7 + 0.3)


def checksums(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-tensor ``[sum, sum |g|, sum g * probe]`` (float64)."""
    out = {}
    for name, g in grads.items():
        g = g.double().flatten()
        out[name] = torch.stack([g.sum(), g.abs().sum(), (g * probe(g.numel())).sum()])
    return out


class RecordingOptimizer:
    """Stands in for a Lightning optimiser: ``step`` records the gradients and advances the
    module's ``global_step`` (Lightning counts every optimiser step)."""

    def __init__(self, model, params, record: dict, key: str) -> None:
        ids = {id(p) for p in params}
        self.named = [(n, p) for n, p in model.named_parameters() if id(p) in ids]
        self.model, self.record, self.key = model, record, key

    def zero_grad(self) -> None:
        for _, p in self.named:
            p.grad = None

    def step(self) -> None:
        self.record[self.key] = {n: p.grad.detach().clone() for n, p in self.named
                                 if p.grad is not None}
        self.model._golden_step += 1


def spikes_in_input_dtype() -> None:
    """braincog's quadratic-gate surrogate returns float32 spikes (``x.gt(0.).float()``) whatever
    the input dtype, so the original's spiking attention (``bmm`` of float32 spikes with float64
    values) cannot run in float64. Return them in the input's dtype instead: the values (0/1)
    and the surrogate gradient are unchanged."""
    from braincog.base.strategy import surrogate

    forward = surrogate.quadratic_gate.forward

    def typed_forward(ctx, x, alpha):
        return forward(ctx, x, alpha).to(x.dtype)

    surrogate.quadratic_gate.forward = staticmethod(typed_forward)


def install_lightning_standins(pl) -> None:
    pl.LightningModule.global_step = property(lambda self: self._golden_step)
    pl.LightningModule.current_epoch = property(lambda self: self._golden_epoch)


def run_training_step(model, batch, step: int, epoch: int = 0) -> dict:
    """Run the original's ``training_step`` once; return the losses, logs and gradients."""
    record: dict = {"loss_calls": []}
    model._golden_step, model._golden_epoch = step, epoch
    opt_ae = RecordingOptimizer(model, [p for n, p in model.named_parameters()
                                        if not n.startswith("loss.")], record, "grads_ae")
    opt_dis = RecordingOptimizer(model, list(model.loss.discriminator.parameters()), record,
                                 "grads_disc")
    model.optimizers = lambda: (opt_ae, opt_dis)
    model.manual_backward = lambda loss: loss.backward()
    logged: dict = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, value.detach().clone())
    model.log_dict = lambda d, **kw: logged.update({k: v.detach().clone() for k, v in d.items()})
    loss_forward = model.loss.forward

    def recording_forward(*args, **kwargs):
        out, log = loss_forward(*args, **kwargs)
        record["loss_calls"].append({"optimizer_idx": args[3], "step": args[4],
                                     "loss": out.detach().clone(),
                                     **{k.split("/")[1]: torch.as_tensor(v).detach().clone()
                                        .double().reshape(()) for k, v in log.items()}})
        return out, log

    model.loss.forward = recording_forward
    model.reset()
    model.training_step(batch, 0)
    model.loss.forward = loss_forward
    record["logged"] = logged
    record["global_step_after"] = model._golden_step
    return record


def randomise(model, seed: int) -> None:
    """Draw the weights described in the module docstring (in place), float16-exact."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".threshold", ".alpha")):
                continue  # braincog's neuron constants
            if "norm" in name or ".main." in name and p.dim() == 1:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("embedding.weight"):
                p.copy_(0.6 * torch.randn(p.shape, generator=g))
            elif name.endswith((".q.weight", ".k.weight")):
                p.mul_(3.0)
            p.copy_(p.half().float())


def fp16_state(model) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(v.float(), v.float().half().float()), k
    return {k: v.half() if v.is_floating_point() else v.clone() for k, v in sd.items()}


def diff_state(sd: dict, base: dict) -> dict:
    """The entries of ``sd`` that ``base`` lacks or holds with other values."""
    return {k: v for k, v in sd.items() if k not in base or not torch.equal(v, base[k])}


def codebook_from_latents(model, x_t, generator, vanilla: bool) -> None:
    """Set the codebook to latents of ``x_t`` plus noise (so that several codes are used)."""
    with torch.no_grad():
        model.reset()
        h = model.encoder(x_t)
        model.reset()
        t, b = h.shape[:2]
        z = model.quant_conv(h.flatten(0, 1)).reshape(t, b, ED, *h.shape[3:])
        rows = (z.permute(0, 1, 3, 4, 2).reshape(-1, ED) if vanilla
                else z.permute(1, 3, 4, 0, 2).reshape(-1, t * ED))
        pick = torch.randperm(rows.shape[0], generator=generator)[:NE]
        noise = torch.randn(NE, rows.shape[1], generator=generator) * rows.std()
        model.quantize.embedding.weight.copy_((rows[pick] + 0.5 * noise).half().float())


def eval_forward(model, x_t) -> dict:
    """Encoder, quantiser and decoder outputs of the original in eval mode (no grad)."""
    out = {}
    model.eval()
    t, b = x_t.shape[:2]
    with torch.no_grad():
        model.reset()
        h = model.encoder(x_t)
        out["h"] = h
        out["z"] = model.quant_conv(h.flatten(0, 1)).reshape(t, b, ED, *h.shape[3:])
        model.reset()
        quant, qloss, info = model.encode(x_t)
        out["z_q"], out["q_loss"] = quant, qloss
        if isinstance(info, list):  # vanilla: one (perplexity, encodings, indices) per step
            out["indices"] = torch.stack([i[2].reshape(b, *quant.shape[3:]) for i in info])
        else:
            out["indices"] = info[2]
        model.reset()
        out["dec"] = model.decode(quant)
        model.reset()
    return out


def quantiser_grads(model, z) -> dict:
    """Straight-through and codebook gradients of ``sum(z_q * probe) + mean(loss)``."""
    zl = z.detach().clone().requires_grad_(True)
    model.quantize.embedding.weight.grad = None
    z_q, loss, _ = model.quantize(zl)
    # the vanilla quantiser returns one loss per step; the training step averages them
    objective = (z_q * probe(z_q.numel(), z_q.dtype).reshape(z_q.shape)).sum() + loss.mean()
    objective.backward()
    out = {"z_grad": zl.grad.clone(),
           "embedding_grad": model.quantize.embedding.weight.grad.clone()}
    model.quantize.embedding.weight.grad = None
    return out


def input_grads(model, x, step: int, events: bool) -> dict:
    """Gradient of the generator loss (the original's loss module) w.r.t. the model input."""
    model = copy.deepcopy(model).train()
    model.reset()
    x = x.detach().clone().requires_grad_(True)
    x_t = x if events else torch.stack([x] * T, dim=0)
    xrec_t, qloss_t = model(x_t)
    qloss = torch.mean(qloss_t, dim=0)
    last = model.get_last_layer()
    if events:
        losses = [model.loss(qloss, x_t[t], xrec_t[t], 0, step, last_layer=last)[0]
                  for t in range(x_t.shape[0])]
        loss = sum(losses) / len(losses)
    else:
        loss = model.loss(qloss, x, torch.mean(xrec_t, 0), 0, step, last_layer=last)[0]
    loss.backward()
    model.reset()
    return {"loss": loss.detach(), "x_grad": x.grad.clone()}


def summarise_step(rec: dict) -> dict:
    """What the fixture keeps of a training step: losses, logs, gradient checksums, a few
    full gradients."""
    grads = {**rec["grads_ae"], **rec["grads_disc"]}
    return {
        "loss_calls": rec["loss_calls"],
        "aeloss": rec["logged"]["train/aeloss"],
        "discloss": rec["logged"]["train/discloss"],
        "grad_checksums": checksums(grads),
        "grads": {k: grads[k].clone() for k in GRAD_FULL if k in grads},
        "global_step_after": rec["global_step_after"],
    }


def disc_buffers(model) -> dict:
    return {k: v.clone() for k, v in model.loss.discriminator.state_dict().items()
            if "running" in k or "num_batches" in k}


def log_braincog(model, log) -> callable:
    """Make braincog's ``LIFNode`` report every update (the membrane before the spike, the
    spike) of ``model``'s neurons to ``log`` (a ``golden.NeuronLog``); returns the undo."""
    from braincog.base.node import LIFNode

    names = {id(m): n for n, m in model.named_modules()}
    calc_spike = LIFNode.calc_spike

    def logged(self):
        membrane = self.mem
        calc_spike(self)
        log.add(self, names[id(self)], membrane, self.spike, float(self.get_thres()))

    LIFNode.calc_spike = logged
    return lambda: setattr(LIFNode, "calc_spike", calc_spike)


def snngen_layout(name: str, t: torch.Tensor) -> torch.Tensor:
    """The attention's neurons as snngen runs them, on ``[T, B, C, H, W]``: the original's
    ``q_lif`` sees ``[T, B, HW, C]``, its ``k_lif`` ``[T, B, C, HW]``."""
    if name.endswith(("q_lif", "k_lif")):
        if name.endswith("q_lif"):
            t = t.transpose(2, 3)
        side = round(t.shape[-1] ** 0.5)
        return t.reshape(*t.shape[:3], side, side)
    return t


def neuron_calls(model, x_t, z_q) -> dict:
    """The original's neuron calls (``golden.neuron_record``) of the encoder on ``x_t`` and of
    the decoder on ``z_q``, eval mode, in snngen's layout."""
    from golden import NeuronLog

    log = NeuronLog()
    undo = log_braincog(model, log)
    model.eval()
    with torch.no_grad():
        model.reset()
        model.encoder(x_t)
        encoder = log.records(T, snngen_layout)
        model.reset()
        model.decode(z_q)
        decoder = log.records(T, snngen_layout)
        model.reset()
    undo()
    return {"encoder": encoder, "decoder": decoder}


def case(model, x, x_t_model, *, step: int, events: bool, epoch: int = 0,
         components_only: bool = False) -> dict:
    """Everything recorded for one model in one dtype (``components_only``: the encoder,
    quantiser and decoder outputs, without the training step)."""
    out = eval_forward(model, x_t_model)
    out["quantiser"] = quantiser_grads(model, out["z"])
    if components_only:
        return out
    before = copy.deepcopy(model)
    model.train()
    rec = run_training_step(model, [x], step, epoch)
    out["train"] = summarise_step(rec)
    out["train"]["disc_buffers"] = disc_buffers(model)
    out["input_grad"] = input_grads(before, x_t_model if events else x, step if not events
                                    else epoch, events)
    return out


def build(sources: dict[str, Path]) -> dict[str, dict]:
    torch.set_num_threads(1)
    root = str(sources["tts_vqvae"])
    sys.path.insert(0, root)
    import pytorch_lightning as pl
    import src.modules.losses.vqperceptual as vqp

    class NoLPIPS(torch.nn.Module):
        """Stands in for LPIPS (perceptual weight 0: never called)."""

    vqp.LPIPS = NoLPIPS
    install_lightning_standins(pl)
    spikes_in_input_dtype()
    from src.models.svqgan.svqgan_base import SVQModel
    from src.models.svqgan.svqgan_te import SVQModelTE, SVQModelTEEpochDVS

    def loss_cfg(cls: str, channels: int, **kw) -> dict:
        return {"target": f"src.modules.losses.vqperceptual.{cls}",
                "params": dict(DISC, disc_in_channels=channels, **kw)}

    torch.manual_seed(0)
    main = SVQModelTE(DDCONFIG, loss_cfg("VQLPIPSWithDiscriminator", 3, disc_start=DISC_START),
                      n_embed=NE, embed_dim=ED, time_step=T, snn_encoder="direct",
                      snn_decoder="mean")
    randomise(main, 1)
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 257, (B, 3, RES, RES), generator=g).double() / 256  # in [0, 1]
    x = images * 2 - 1  # the original's data are in [-1, 1]
    codebook_from_latents(main, torch.stack([x.float()] * T), g, vanilla=False)
    base_sd = fp16_state(main)
    step = 2 * BATCH_INDEX
    common = {"config": {"ddconfig": DDCONFIG, "n_embed": NE, "embed_dim": ED, "time_steps": T,
                         "disc": DISC, "disc_start": DISC_START, "batch_index": BATCH_INDEX}}
    fixtures = {}

    # -- static images, temporal codebook (the paper's model)
    m64 = copy.deepcopy(main).double()
    m32 = copy.deepcopy(main).float()
    # float32: stage by stage only, and every neuron call of the encoder and the decoder
    # recorded (golden.original_spikes: a membrane within rounding of the threshold flips a
    # spike depending on the processor's kernels; chained, the flip would cascade)
    f64 = case(m64, x, torch.stack([x] * T), step=step, events=False)
    f32 = case(m32, x.float(), torch.stack([x.float()] * T), step=step, events=False,
               components_only=True)
    f32["neurons"] = neuron_calls(m32, torch.stack([x.float()] * T), f32["z_q"])
    fixtures["vqvae_static_temporal"] = {
        **common, "state_dict": base_sd, "images": images, "float64": f64, "float32": f32}

    # -- static images, vanilla codebook (the baseline): same weights but the codebook
    torch.manual_seed(0)
    van = SVQModel(DDCONFIG, loss_cfg("VQLPIPSWithDiscriminator", 3, disc_start=DISC_START),
                   n_embed=NE, embed_dim=ED, time_step=T)
    van.snn_encoder.time_step = T  # SVQModel passes its own time_step on
    van.load_state_dict({k: v.float() for k, v in base_sd.items()
                         if k != "quantize.embedding.weight"}, strict=False)
    codebook_from_latents(van, torch.stack([x.float()] * T), torch.Generator().manual_seed(3),
                          vanilla=True)
    van_sd = fp16_state(van)
    van_diff = diff_state(van_sd, base_sd)
    fixtures["vqvae_static_vanilla"] = {
        **common, "state_dict_diff": van_diff, "images": images,
        "float64": case(copy.deepcopy(van).double(), x, torch.stack([x] * T), step=step,
                        events=False),
    }

    # -- event frames (N-MNIST style), temporal codebook, losses per frame
    dd_ev = dict(DDCONFIG, in_channels=2, out_ch=2)
    torch.manual_seed(0)
    ev = SVQModelTEEpochDVS(dd_ev, loss_cfg("VQLPIPSWithDiscriminatorEpoch", 2,
                                            disc_start_epoch=1),
                            n_embed=NE, embed_dim=ED, time_step=T, snn_encoder="dvs",
                            snn_decoder="dvs")
    ev.load_state_dict({k: v.float() for k, v in base_sd.items()
                        if k in ev.state_dict() and ev.state_dict()[k].shape == v.shape},
                       strict=False)
    ge = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for k, p in ev.named_parameters():
            if k in ("encoder.conv_in.weight", "decoder.conv_out.weight", "decoder.conv_out.bias",
                     "loss.discriminator.main.0.weight"):
                p.copy_((p * (1 + 0.1 * torch.randn(p.shape, generator=ge))).half())
    ev_sd = fp16_state(ev)
    ev_diff = diff_state(ev_sd, base_sd)
    counts = torch.randint(0, 4, (T, B, 2, RES, RES), generator=ge).double()
    peak = counts.amax(dim=(0, 2, 3, 4), keepdim=True)
    low = counts.amin(dim=(0, 2, 3, 4), keepdim=True)
    assert (low == 0).all()
    x_ev = 2 * counts / (peak - low) - 1  # the original's dataset transform, per sample
    batch_ev = x_ev.transpose(0, 1)  # the original's loader gives [B, T, 2, H, W]
    fixtures["vqvae_events_temporal"] = {
        **common, "state_dict_diff": ev_diff, "counts": counts, "epoch": 1,
        "config": dict(common["config"], ddconfig=dd_ev),
        "float64": case(copy.deepcopy(ev).double(), batch_ev, x_ev, step=step, events=True,
                        epoch=1),
    }
    return fixtures
