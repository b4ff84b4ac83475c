"""Golden fixtures of tts_vqvae's stage 2: the spiking GPT prior (``SnnGPT``) and its Lightning
wrappers ``Net2NetTransformer`` (temporal codebook) and ``Net2NetTransformerNonTE`` (vanilla
codebook baseline), run from Brain-Cog-Lab/tts_vqvae's own code.

Needs braincog, so it runs in the throwaway environment (see ``SEED_FACTS.md``)::

    SNNGEN_ORIGINALS=/work/.mirror /tmp/tts-venv/bin/python tests/golden/make_fixtures.py \
        --only prior

What runs and what is recorded (tiny width: 2 layers, 2 heads, n_embd 32, vocab 16, SNN T=2,
block 20, 16 tokens = 4x4 codes; weights re-drawn from a seed, large enough that every LIF
group spikes):

* ``prior_gpt``: ``SnnGPT.forward`` logits in train and eval mode (float64 and float32), the
  loss of ``Net2NetTransformer.shared_step`` on fixed stage-1 codes (a stand-in first stage
  that returns recorded indices; the SOS token, raster order and the ``[:, :-1]`` crop are the
  original's), its gradients w.r.t. every parameter (``tok_emb`` gets none: the original's
  ``SnnEncoder.forward`` is ``@torch.no_grad``), gradients w.r.t. the token embeddings (the
  original's ``forward`` re-run step by step with an embedding that requires grad), the weight
  decay groups of ``configure_optimizers``, samples of ``Net2NetTransformer.sample`` on seeded
  multinomial draws (temperature 1, 0.5 + top-k 5, argmax) and of the cached
  ``sample_with_past``, and the logits of the cached ``forward_with_past`` path (the known
  defect: they differ from the training forward).
* ``prior_vanilla``: ``Net2NetTransformerNonTE`` on 3 steps of vanilla codes: the step it
  picks (Python ``random``, seeded), its logits, target, loss and gradients, and its
  per-step-independent samples.

Float64 runs: braincog's surrogate returns ``x.gt(0).float()`` (float32 spikes even for a
float64 input, which the float64 ``Linear`` after it refuses), so while float64 fixtures are
made the builder has it return the spikes in the input's dtype - the values (0/1) are the same.
The float32 fixtures run braincog unchanged and record every neuron call of the compared forwards
(``neurons_train``, ``neurons_eval``, ``neurons_loss``: spikes and near-threshold membranes,
``golden.NeuronLog``), on which the tests run snngen (``golden.original_spikes``).
"""

from __future__ import annotations

import ast
import contextlib
import random
import sys
from pathlib import Path

import torch

ORIGINALS = {
    "tts_vqvae": ("Brain-Cog-Lab/tts_vqvae", "81c8b7fd11ab47942e4073a799394f979490beed"),
}

VOCAB, BLOCK, N_LAYER, N_HEAD, N_EMBD, T_SNN = 16, 20, 2, 2, 32, 2
H = W = 4  # 16 tokens per image
BATCH = 3
T_VANILLA = 3  # stage-1 steps of the vanilla codebook (the prior's SNN T stays 2)


class FakeFirstStage(torch.nn.Module):
    """Stands in for the frozen stage-1 model: returns recorded code indices (temporal
    codebook: ``[B, h, w]``; vanilla: one ``[B, h, w]`` per step)."""

    def __init__(self, indices: torch.Tensor, time_step: int, vanilla: bool = False):
        super().__init__()
        self.indices, self.time_step, self.vanilla = indices, time_step, vanilla

    def snn_encoder(self, x):
        return torch.stack([x] * self.time_step, 0)

    def encode(self, x_t):
        if self.vanilla:
            quant = torch.zeros(self.time_step, self.indices.shape[1], 1, H, W)
            return quant, None, [(None, None, self.indices[t]) for t in range(self.time_step)]
        return torch.zeros(self.indices.shape[0], 1, H, W), None, (None, None, self.indices)

    def reset(self):
        pass


@contextlib.contextmanager
def spikes_in_input_dtype():
    """(float64 runs only) braincog's quadratic-gate surrogate returns float32 spikes; return
    them in the input's dtype instead (same 0/1 values)."""
    from braincog.base.strategy import surrogate

    fn = surrogate.quadratic_gate
    original_forward = fn.forward

    def forward(ctx, x, alpha):
        return original_forward(ctx, x, alpha).to(x.dtype)

    fn.forward = staticmethod(forward)
    try:
        yield
    finally:
        fn.forward = original_forward


def spiky_weights(model: torch.nn.Module, seed: int) -> None:
    """Re-draw every parameter so the LIF neurons spike (the original init, std 0.02, leaves
    them silent); LayerNorm affine parameters away from 1/0 so a dropped LayerNorm shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:  # LIF threshold and surrogate alpha
                continue
            r = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if "ln" in name and name.endswith("weight"):
                v = 1.0 + 0.3 * r
            elif "ln" in name:
                v = 0.3 * r
            elif name.endswith("bias"):
                v = 0.5 * r
            elif "emb" in name:
                v = r
            else:  # Linear weights: unit-variance inputs give outputs of std ~1.5
                v = 1.5 * r / p.shape[1] ** 0.5
            p.copy_(v.to(p.dtype))


def make_wrapper(cls, indices, time_step, vanilla=False):
    return cls(
        transformer_config={
            "target": "src.modules.transformer.mingpt_snn.SnnGPT",
            "params": dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=N_LAYER, n_head=N_HEAD,
                           n_embd=N_EMBD, time_step=T_SNN, snn_encoder="direct",
                           snn_decoder="mean"),
        },
        first_stage_config={
            "target": "build_prior.FakeFirstStage",
            "params": dict(indices=indices, time_step=time_step, vanilla=vanilla),
        },
        cond_stage_config="__is_unconditional__",
        unconditional=True,
        sos_token=0,
    )


def grads_of(module: torch.nn.Module) -> tuple[dict, list[str]]:
    grads, none = {}, []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            none.append(name)
        else:
            grads[name] = p.grad.detach().clone()
    return grads, sorted(none)


def embedding_grad(gpt, idx: torch.Tensor, targets: torch.Tensor):
    """Gradient of the cross-entropy w.r.t. the token embeddings: ``SnnGPT.forward``'s steps
    (``forward_step`` per SNN step, ``snn_decoder``, ``reset``) with an embedding that requires
    grad in place of the no-grad ``snn_encoder`` output."""
    emb = gpt.tok_emb(idx).detach().requires_grad_(True)
    logits_t = [gpt.forward_step(token_embeddings=emb)[0] for _ in range(gpt.time_step)]
    logits = gpt.snn_decoder(torch.stack(logits_t, 0))
    gpt.reset()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    loss.backward()
    return emb.grad.detach().clone()


def cached_logits(gpt, seq: torch.Tensor) -> torch.Tensor:
    """Logits of the original's key/value-cache path (``forward_with_past``, as
    ``sample_with_past`` drives it) fed the tokens of ``seq`` one by one."""
    past, out = None, []
    for n in range(seq.shape[1]):
        logits, _, present = gpt.forward_with_past(seq[:, n : n + 1], past=past,
                                                   past_length=n)
        past = [present] if past is None else past + [present]
        out.append(logits[:, -1])
    return torch.stack(out, 1)


def logged(gpt, fn):
    """``fn()`` with every braincog neuron update of ``gpt`` recorded (float32 fixtures); returns
    (its result, the neuron calls as ``golden.neuron_record`` dicts, in snngen's layout)."""
    from build_vqvae import log_braincog
    from golden import NeuronLog

    log = NeuronLog()
    undo = log_braincog(gpt, log)
    try:
        result = fn()
    finally:
        undo()
    return result, log.records(gpt.time_step)


def build_temporal(src_ct, mingpt, dtype, seed_codes) -> dict:
    g = torch.Generator().manual_seed(seed_codes)
    codes = torch.randint(0, VOCAB, (BATCH, H, W), generator=g)
    torch.manual_seed(0)
    net = make_wrapper(src_ct.Net2NetTransformer, codes, time_step=4)
    spiky_weights(net.transformer, 1)
    net = net.to(dtype)
    gpt = net.transformer
    out: dict = {"codes": codes}
    out["state_dict"] = {k: v.detach().clone() for k, v in net.state_dict().items()}

    idx = torch.randint(0, VOCAB, (BATCH, H * W), generator=g)
    idx[:, 0] = 0
    out["idx"] = idx
    net.train()
    logits, out["neurons_train"] = logged(gpt, lambda: gpt(idx)[0])
    out["logits_train"] = logits.detach()
    net.eval()
    logits, out["neurons_eval"] = logged(gpt, lambda: gpt(idx)[0])
    out["logits_eval"] = logits.detach()
    gpt.reset()

    # loss on the stage-1 codes, through the wrapper (SOS, raster order, crop)
    net.train()
    x = torch.zeros(BATCH, 1, 8, 8, dtype=dtype)
    logits, target = net(x, x)
    out["loss_logits"], out["loss_target"] = logits.detach(), target
    net.zero_grad()
    loss, out["neurons_loss"] = logged(gpt, lambda: net.shared_step({"image": x}, 0))
    loss.backward()
    out["loss"] = loss.detach()
    out["grads"], out["no_grad_params"] = grads_of(gpt)
    net.zero_grad()
    sos = torch.zeros(BATCH, 1, dtype=torch.long)
    inp = torch.cat([sos, codes.view(BATCH, -1)], 1)[:, :-1]
    out["embedding_grad"] = embedding_grad(gpt, inp, codes.view(BATCH, -1))
    net.zero_grad()

    # sampling (eval mode, seeded multinomial draws)
    net.eval()
    empty = torch.zeros(BATCH, 0, dtype=torch.long)
    samples = {}
    for name, seed, kw in [
        ("t1", 11, dict(temperature=1.0, sample=True, top_k=None)),
        ("t05_top5", 12, dict(temperature=0.5, sample=True, top_k=5)),
        ("argmax", 13, dict(temperature=1.0, sample=False, top_k=None)),
    ]:
        torch.manual_seed(seed)
        tokens = net.sample(empty, sos, steps=H * W, **kw)
        samples[name] = {"seed": seed, "temperature": kw["temperature"], "top_k": kw["top_k"],
                         "argmax": not kw["sample"], "tokens": tokens}
    torch.manual_seed(11)
    samples["with_past_t1"] = {"seed": 11, "tokens": mingpt.sample_with_past(
        sos, gpt, steps=H * W, temperature=1.0, sample_logits=True)}
    out["samples"] = samples
    seq = torch.cat([sos, samples["t1"]["tokens"]], 1)[:, :-1]
    out["sample_logits"] = gpt(seq)[0].detach()
    gpt.reset()
    out["cached_logits"] = cached_logits(gpt, seq).detach()

    # minGPT weight-decay groups
    net.learning_rate = 1e-3
    opt = net.configure_optimizers()
    names = {id(p): n for n, p in gpt.named_parameters()}
    groups = [sorted(names[id(p)] for p in grp["params"]) for grp in opt.param_groups]
    out["optim"] = {
        "decay": groups[0], "no_decay": groups[1],
        "weight_decay": [grp["weight_decay"] for grp in opt.param_groups],
        "betas": list(opt.param_groups[0]["betas"]),
    }
    return out


def build_vanilla(src_ct, dtype, seed_codes) -> dict:
    g = torch.Generator().manual_seed(seed_codes)
    codes = torch.randint(0, VOCAB, (T_VANILLA, BATCH, H, W), generator=g)
    torch.manual_seed(0)
    net = make_wrapper(src_ct.Net2NetTransformerNonTE, codes, time_step=T_VANILLA, vanilla=True)
    spiky_weights(net.transformer, 2)
    net = net.to(dtype)
    gpt = net.transformer
    out: dict = {"codes": codes, "time_steps": T_VANILLA}
    out["state_dict"] = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.train()
    x = torch.zeros(BATCH, 1, 8, 8, dtype=dtype)
    seed = 5
    out["step_seed"] = seed
    out["step"] = random.Random(seed).randint(0, T_VANILLA - 1)  # what random.randint draws
    random.seed(seed)
    logits, target = net(x, x)
    out["loss_logits"], out["loss_target"] = logits.detach(), target
    net.zero_grad()
    random.seed(seed)
    loss, out["neurons_loss"] = logged(gpt, lambda: net.shared_step({"image": x}, 0))
    loss.backward()
    out["loss"] = loss.detach()
    out["grads"], out["no_grad_params"] = grads_of(gpt)
    net.zero_grad()
    net.eval()
    torch.manual_seed(21)
    sos = torch.zeros(BATCH, 1, dtype=torch.long)
    out["sample"] = {"seed": 21, "tokens": net.sample(
        torch.zeros(BATCH, 0, dtype=torch.long), sos, steps=H * W, temperature=1.0,
        sample=True, top_k=None)}  # [T, B, h*w]
    net.learning_rate = 1e-3
    try:  # NonTE's copy of configure_optimizers lacks the LIF-threshold branch
        net.configure_optimizers()
        out["configure_optimizers_error"], out["unseparated"] = "", []
    except AssertionError as e:  # the message holds a set: sort it (hash order varies)
        msg = str(e)
        a, b = msg.index("{"), msg.rindex("}") + 1
        out["configure_optimizers_error"] = msg[:a] + "{...}" + msg[b:]
        out["unseparated"] = sorted(ast.literal_eval(msg[a:b]))
    return out


def build(sources: dict[str, Path]) -> dict[str, dict]:
    torch.set_num_threads(1)
    sys.path.insert(0, str(sources["tts_vqvae"]))
    import src.models.cond_transformer as src_ct
    import src.modules.transformer.mingpt as mingpt

    with spikes_in_input_dtype():
        gpt64 = build_temporal(src_ct, mingpt, torch.float64, seed_codes=3)
        van64 = build_vanilla(src_ct, torch.float64, seed_codes=4)
    gpt32 = build_temporal(src_ct, mingpt, torch.float32, seed_codes=3)
    van32 = build_vanilla(src_ct, torch.float32, seed_codes=4)
    keep32 = ("state_dict", "logits_train", "logits_eval", "loss", "grads", "loss_logits",
              "neurons_train", "neurons_eval", "neurons_loss")
    gpt64["float32"] = {k: gpt32[k] for k in keep32}
    van64["float32"] = {k: van32[k] for k in ("state_dict", "loss", "loss_logits", "grads",
                                              "neurons_loss")}
    for fx in (gpt64, van64):  # (float64 is compared exactly: no neuron calls kept)
        for key in ("neurons_train", "neurons_eval", "neurons_loss"):
            fx.pop(key, None)
    return {"prior_gpt": gpt64, "prior_vanilla": van64}
