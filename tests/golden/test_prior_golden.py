"""snngen's spiking GPT prior against tts_vqvae's own stage 2 (``SnnGPT`` in
``Net2NetTransformer`` / ``Net2NetTransformerNonTE``; fixtures from ``build_prior.py``).

The original's weights are loaded through the ``tts-prior`` key map. Compared: logits in train
and eval mode (float64 and float32; float32 with every neuron fed the original's spikes,
``golden.original_spikes``), the loss on fixed stage-1 codes (start token 0, raster
order, the vanilla baseline's one-step sequences), gradients w.r.t. every parameter and the
token embeddings, the minGPT weight-decay groups, and samples drawn from the same seeded
multinomial draws (cached and uncached in snngen).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from golden import assert_matches, load_fixture, original_spikes
from torch import Tensor, nn

from snngen.importers import ImportMismatch, load_original
from snngen.importers.tts_prior import rename
from snngen.models import DataInfo
from snngen.models.prior import PriorConfig, SpikingGPT, VQPrior

VOCAB, HW = 16, 16
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def gpt_fx():
    return load_fixture("prior_gpt")


@pytest.fixture(scope="module")
def vanilla_fx():
    return load_fixture("prior_vanilla")


class FakeStage1(nn.Module):
    """The frozen stage 1 reduced to its token interface: returns the original's recorded codes
    in snngen's layout (``VQVAE.encode_tokens``: raster order; vanilla: the T codes of a
    position in time order)."""

    def __init__(self, codes: Tensor, vanilla: bool) -> None:
        super().__init__()
        steps = codes.shape[0] if vanilla else 1
        self.cfg = SimpleNamespace(codebook="vanilla" if vanilla else "temporal", time_steps=steps)
        self.vocab_size, self.tokens_per_sample = VOCAB, HW * steps
        self.codes = codes.permute(1, 2, 3, 0).flatten(1) if vanilla else codes.flatten(1)

    def encode_tokens(self, x: Tensor) -> Tensor:
        return self.codes


def prior_cfg(**kw) -> PriorConfig:
    return PriorConfig(n_layer=2, n_head=2, n_embd=32, time_steps=2, **kw)


def make_prior(fx, dtype=torch.float64, vanilla=False, state=None, **kw) -> VQPrior:
    prior = VQPrior(prior_cfg(**kw), DataInfo(1, 8), stage1=FakeStage1(fx["codes"], vanilla))
    prior.gpt.to(dtype)
    load_original(prior.gpt, fx["state_dict"] if state is None else state, "tts-prior")
    return prior


def compare_grads(gpt: SpikingGPT, fx_grads: dict, no_grad: list[str], what: str) -> None:
    names = {rename(k): k for k in fx_grads}
    for name, p in gpt.named_parameters():
        original = names.get(name)
        if original is None:
            assert name == "tok_emb.weight" and "tok_emb.weight" in no_grad
            assert p.grad is None, "the original never trains the token embeddings"
            continue
        assert p.grad is not None, f"{what}: {name} got no gradient"
        expected = fx_grads[original]
        if name == "pos_emb":  # the original's block (20) is longer than the sequence (16)
            assert not expected[:, p.shape[1]:].any()
            expected = expected[:, : p.shape[1]]
        assert_matches(p.grad, expected, f"{what} grad {name}")
    assert len(names) == len(list(gpt.parameters())) - 1


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gpt_logits_float64(gpt_fx, mode):
    gpt = make_prior(gpt_fx).gpt.train(mode == "train")
    assert_matches(gpt(gpt_fx["idx"]), gpt_fx[f"logits_{mode}"], f"logits ({mode})")


def test_gpt_logits_float32(gpt_fx):
    fx32 = gpt_fx["float32"]
    gpt = make_prior(gpt_fx, torch.float32, state=fx32["state_dict"]).gpt
    for mode in ("train", "eval"):
        gpt.train(mode == "train")
        with original_spikes(gpt, fx32[f"neurons_{mode}"], f"float32 {mode}") as flips:
            logits = gpt(gpt_fx["idx"])
        assert_matches(logits, fx32[f"logits_{mode}"], f"float32 logits ({mode}; {flips})")


def test_spikes_really_happen(gpt_fx):
    """The fixture's weights make every LIF group fire partly (else a test could not see
    a wrong neuron)."""
    gpt = make_prior(gpt_fx).gpt.eval()
    rates: list[float] = []

    def record(module, inputs, out):
        rates.append(float((out[0] if isinstance(out, tuple) else out).detach().float().mean()))

    neurons = [m for b in gpt.blocks
               for m in (b.attn.k_neuron, b.attn.q_neuron, b.attn.v_neuron, b.act)]
    hooks = [m.register_forward_hook(record) for m in neurons]
    gpt(gpt_fx["idx"])
    for h in hooks:
        h.remove()
    assert len(rates) == 8 and all(0.05 < r < 0.95 for r in rates), rates


# ----------------------------------------------------------------------------- loss, gradients


def test_loss_and_gradients_temporal(gpt_fx):
    prior = make_prior(gpt_fx).train()
    x = torch.zeros(3, 1, 8, 8)
    tokens = prior.stage1.encode_tokens(x)
    assert torch.equal(tokens, gpt_fx["loss_target"].view(3, -1))
    assert_matches(prior.gpt(prior._with_sos(tokens)), gpt_fx["loss_logits"], "loss logits")
    out = prior.loss(x)
    assert_matches(out["loss"], gpt_fx["loss"], "cross-entropy")
    out["loss"].backward()
    compare_grads(prior.gpt, gpt_fx["grads"], gpt_fx["no_grad_params"], "float64")


def test_loss_and_gradients_float32(gpt_fx):
    fx32 = gpt_fx["float32"]
    prior = make_prior(gpt_fx, torch.float32, state=fx32["state_dict"]).train()
    with original_spikes(prior, fx32["neurons_loss"], "float32 loss") as flips:
        out = prior.loss(torch.zeros(3, 1, 8, 8))
    assert_matches(out["loss"], fx32["loss"], f"float32 cross-entropy ({flips})")
    if flips.exact:  # (after a rounding flip, float32 gradients are left to float64)
        out["loss"].backward()
        compare_grads(prior.gpt, fx32["grads"], gpt_fx["no_grad_params"], "float32")


def test_embedding_gradient(gpt_fx):
    prior = make_prior(gpt_fx).train()
    tokens = prior.stage1.encode_tokens(None)
    inp = prior._with_sos(tokens)
    emb = prior.gpt.tok_emb(inp).detach().requires_grad_(True)
    logits = prior.gpt(inp, token_embeddings=emb)
    torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens.reshape(-1)).backward()
    assert_matches(emb.grad, gpt_fx["embedding_grad"], "d loss / d token embeddings")


def test_token_embedding_trains_only_as_an_option(gpt_fx):
    prior = make_prior(gpt_fx, train_token_embedding=True).train()
    prior.loss(torch.zeros(3, 1, 8, 8))["loss"].backward()
    assert prior.gpt.tok_emb.weight.grad is not None
    assert prior.gpt.tok_emb.weight.grad.abs().sum() > 0


def test_loss_and_gradients_vanilla_independent(vanilla_fx):
    prior = make_prior(vanilla_fx, vanilla=True).train()
    assert prior.code_steps == vanilla_fx["time_steps"] and prior.seq_len == HW
    tokens = prior.stage1.encode_tokens(None)
    step = vanilla_fx["step"]
    one_step = tokens.view(3, HW, -1)[..., step]
    assert torch.equal(one_step, vanilla_fx["loss_target"])
    assert_matches(prior.gpt(prior._with_sos(one_step)), vanilla_fx["loss_logits"], "logits")
    out = prior.token_loss(tokens, step=step)
    assert_matches(out["loss"], vanilla_fx["loss"], "vanilla cross-entropy")
    out["loss"].backward()
    compare_grads(prior.gpt, vanilla_fx["grads"], vanilla_fx["no_grad_params"], "vanilla")
    fx32 = vanilla_fx["float32"]
    p32 = make_prior(vanilla_fx, torch.float32, vanilla=True, state=fx32["state_dict"]).train()
    with original_spikes(p32, fx32["neurons_loss"], "vanilla float32 loss") as flips:
        out32 = p32.token_loss(tokens, step=step)
    assert_matches(out32["loss"], fx32["loss"], f"vanilla float32 cross-entropy ({flips})")
    if flips.exact:  # (after a rounding flip, float32 gradients are left to float64)
        out32["loss"].backward()
        compare_grads(p32.gpt, fx32["grads"], vanilla_fx["no_grad_params"], "vanilla float32")


def test_vanilla_loss_draws_one_step_for_the_batch(vanilla_fx):
    prior = make_prior(vanilla_fx, vanilla=True).train()
    tokens = prior.stage1.encode_tokens(None)
    by_step = [prior.token_loss(tokens, step=t)["loss"].item() for t in range(3)]
    assert len(set(by_step)) == 3
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        seen.add(by_step.index(prior.loss(None)["loss"].item()))
    assert seen == {0, 1, 2}
    prior.eval()  # a deterministic test loss: every step, averaged
    torch.testing.assert_close(prior.loss(None)["loss"].item(), sum(by_step) / 3)


def test_vanilla_joint_mode_is_one_sequence(vanilla_fx):
    prior = VQPrior(prior_cfg(vanilla_mode="joint"), DataInfo(1, 8),
                    stage1=FakeStage1(vanilla_fx["codes"], vanilla=True))
    assert prior.code_steps == 1 and prior.seq_len == 3 * HW
    assert prior.gpt.pos_emb.shape[1] == 3 * HW
    assert prior.generate_tokens(2, torch.Generator().manual_seed(0)).shape == (2, 3 * HW)


# ----------------------------------------------------------------------------- optimiser


def test_weight_decay_groups_are_mingpts(gpt_fx):
    prior = make_prior(gpt_fx)
    decay, no_decay = prior.optimizer_groups()["loss"]
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    names = {id(p): n for n, p in prior.gpt.named_parameters()}
    ours = [sorted(names[id(p)] for p in g["params"]) for g in (decay, no_decay)]
    fx = gpt_fx["optim"]
    for got, original in zip(ours, (fx["decay"], fx["no_decay"]), strict=True):
        assert got == sorted(n for n in map(rename, original) if n is not None)
    assert gpt_fx["optim"]["weight_decay"] == [0.01, 0.0]
    everything = VQPrior(prior_cfg(weight_decay_groups="all"), DataInfo(1, 8),
                         stage1=FakeStage1(gpt_fx["codes"], False)).optimizer_groups()["loss"]
    assert all(isinstance(p, nn.Parameter) for p in everything)


def test_configs_use_the_originals_adamw(gpt_fx):
    fx = gpt_fx["optim"]
    paths = sorted(CONFIGS.glob("vq_prior_*.yaml"))
    assert paths
    for path in paths:
        o = yaml.safe_load(path.read_text())["optim"]
        assert o["name"] == "adamw" and list(o["betas"]) == fx["betas"], path.name
        assert o["weight_decay"] == fx["weight_decay"][0], path.name


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("name", ["t1", "t05_top5", "argmax"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_samples_on_the_same_draws(gpt_fx, name, use_cache):
    s = gpt_fx["samples"][name]
    prior = make_prior(gpt_fx).eval()
    tokens = prior.generate_tokens(
        3, torch.Generator().manual_seed(s["seed"]),
        temperature=0.0 if s["argmax"] else s["temperature"], top_k=s["top_k"],
        use_cache=use_cache,
    )
    assert torch.equal(tokens, s["tokens"])


def test_default_sampling_is_multinomial_at_temperature_1(gpt_fx):
    s = gpt_fx["samples"]["t1"]
    prior = make_prior(gpt_fx).eval()
    assert prior.cfg.temperature == 1.0 and prior.cfg.top_k is None
    tokens = prior.generate_tokens(3, torch.Generator().manual_seed(s["seed"]))
    assert torch.equal(tokens, s["tokens"])


def test_cache_avoids_the_originals_cache_defect(gpt_fx):
    """The original's cached path (``forward_with_past``, used by its sampling scripts) feeds
    time-averaged keys/values of past tokens, so its logits differ from its training forward
    (and its cached samples from its uncached ones); snngen's cache keeps the per-step spikes
    and gives the training forward's logits."""
    prior = make_prior(gpt_fx).eval()
    seq = torch.cat([torch.zeros(3, 1, dtype=torch.long), gpt_fx["samples"]["t1"]["tokens"]], 1)
    seq = seq[:, :-1]
    full = prior.gpt(seq)
    assert_matches(full, gpt_fx["sample_logits"], "logits along the sample")
    cache = prior.gpt.new_cache()
    stepped = torch.cat([prior.gpt(seq[:, i : i + 1], cache) for i in range(HW)], 1)
    assert_matches(stepped, gpt_fx["sample_logits"], "cached logits")
    defect = (gpt_fx["cached_logits"] - gpt_fx["sample_logits"]).abs().amax(-1)
    assert defect[:, 0].max() < 1e-12 and defect[:, 1:].min() > 1e-3
    assert not torch.equal(gpt_fx["samples"]["with_past_t1"]["tokens"],
                           gpt_fx["samples"]["t1"]["tokens"])


@pytest.mark.parametrize("use_cache", [True, False])
def test_vanilla_samples_each_step_independently(vanilla_fx, use_cache):
    s = vanilla_fx["sample"]
    prior = make_prior(vanilla_fx, vanilla=True).eval()
    tokens = prior.generate_tokens(3, torch.Generator().manual_seed(s["seed"]),
                                   use_cache=use_cache)
    assert tokens.shape == (3, HW * 3)
    assert torch.equal(tokens.view(3, HW, 3).permute(2, 0, 1), s["tokens"])


def test_originals_vanilla_wrapper_cannot_build_its_optimiser(vanilla_fx):
    """Recorded fact: NonTE's copy of ``configure_optimizers`` lacks the LIF-parameter branch,
    so it stops on an assertion; snngen gives the vanilla prior the temporal one's groups."""
    assert "were not separated" in vanilla_fx["configure_optimizers_error"]
    assert vanilla_fx["unseparated"] and all(
        n.endswith(("threshold", "alpha")) for n in vanilla_fx["unseparated"]
    )


# ----------------------------------------------------------------------------- key map


def test_import_refuses_a_missing_or_misshaped_key(gpt_fx):
    state = dict(gpt_fx["state_dict"])
    gpt = make_prior(gpt_fx).gpt
    missing = dict(state)
    del missing["transformer.blocks.1.attn.query.0.weight"]
    with pytest.raises(ImportMismatch, match=r"transformer\.blocks\.1\.attn\.query\.0\.weight"):
        load_original(gpt, missing, "tts-prior")
    bad = dict(state)
    bad["transformer.blocks.0.mlp.2.bias"] = torch.zeros(5, dtype=torch.float64)
    with pytest.raises(ImportMismatch, match=r"transformer\.blocks\.0\.mlp\.2\.bias"):
        load_original(gpt, bad, "tts-prior")
    extra = dict(state)
    extra["transformer.blocks.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(ImportMismatch, match="extra"):
        load_original(gpt, extra, "tts-prior")
    threshold = dict(state)
    threshold["transformer.blocks.0.mlp.1.threshold"] = torch.tensor(1.0, dtype=torch.float64)
    with pytest.raises(ImportMismatch, match="threshold"):
        load_original(gpt, threshold, "tts-prior")
    assert state["transformer.pos_emb"].shape[1] > gpt.pos_emb.shape[1]  # cut to the sequence
