"""Spiking transformer prior over the codes of a trained spiking VQ-VAE (stage 2; the SnnGPT of
Brain-Cog-Lab/tts_vqvae).

A GPT over the code indices of a frozen stage-1 model (:class:`snngen.models.vqvae.VQVAE`, loaded
from its run folder), in raster order, after a start token (``sos_token``, 0 as in the
original, shared with code 0). The network runs ``T`` SNN steps: the token + position
embeddings are presented at every step (direct coding), and the logits are the mean over the
steps. Inside, everything is per token except the attention:

* attention: ``k, q, v = LIF(Linear(LN(x)))`` (spikes), ``A = q k^T / sqrt(d_head)`` with the
  causal mask filled with 0 and **no softmax**, ``y = A v``, output projection, residual;
* MLP: ``Linear(C, 4C) -> LIF -> Linear(4C, C)`` (LIF replaces GELU), residual;
* LayerNorm kept; final LayerNorm and a bias-free head to the vocabulary.

The LIF neurons integrate over the SNN steps, separately for every token and channel, so a
token's state never depends on later tokens: the network is causal, and a key/value cache is
exact. The cache keeps, for every layer and SNN step, the spike keys and values of the tokens
already generated (``[T, B, heads, length, d_head]``); a new token is run through its ``T`` steps
alone and attends to the cache. Cached and uncached sampling give the same tokens (the original
averaged its cache over time, which made the two differ).

Trained with cross-entropy on the frozen stage-1 codes; AdamW betas (0.9, 0.95), weight decay
0.01 in the paper configs, on minGPT's groups (``weight_decay_groups: mingpt``): only the
weights of Linear layers decay, not biases, LayerNorms, embeddings or the position embedding.
As in the original, the token-embedding table is not trained (``train_token_embedding:
false``): the original repeats the embeddings over time under ``torch.no_grad``, so the table
keeps its initial values.

Vanilla (per-step) codebooks: with ``vanilla_mode: independent`` (the original's
``Net2NetTransformerNonTE``, the default) the GPT models one step's ``h*w`` codes; each training
batch uses one step drawn at random, and sampling draws the ``T`` steps as ``T`` independent
sequences - which is what makes the baseline's event samples temporally inconsistent. With
``vanilla_mode: joint`` the GPT models all ``h*w*T`` codes of a sample as one sequence (position
by position, the ``T`` steps of a position in time order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snngen.errors import SnngenError
from snngen.models.base import DataInfo, GenerativeModel, RunPart
from snngen.spiking.coding import direct_encode
from snngen.spiking.layers import BRAINCOG_LIF, neuron_from_config

__all__ = [
    "KVCache",
    "PriorConfig",
    "SpikingCausalSelfAttention",
    "SpikingGPT",
    "VQPrior",
    "sample_logits",
]


@dataclass
class PriorConfig:
    """Hyper-parameters of the spiking transformer prior (defaults: the paper's CelebA one)."""

    name: str = "vq_prior"
    stage1_run: str | None = None  # run folder of a trained vqvae (required)
    stage1_ema: bool = True  # use the stage-1 EMA weights when the run has them
    n_layer: int = 24
    n_head: int = 16
    n_embd: int = 1024
    time_steps: int = 2
    neuron: dict[str, Any] | str = field(default_factory=lambda: dict(BRAINCOG_LIF))
    embd_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    sos_token: int = 0
    temperature: float = 1.0  # sampling defaults (sample() arguments override them)
    top_k: int | None = None
    # the original never trains the token-embedding table (its no-grad time repeat)
    train_token_embedding: bool = False
    # "mingpt": decay Linear weights only (the original); "all": every parameter
    weight_decay_groups: Literal["mingpt", "all"] = "mingpt"
    # vanilla codebooks: "independent" (one step's h*w codes per sequence, steps sampled
    # independently: the original's baseline) or "joint" (all h*w*T codes in one sequence)
    vanilla_mode: Literal["independent", "joint"] = "independent"

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.time_steps < 1 or self.n_layer < 1:
            raise ValueError("time_steps and n_layer must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or null, got {self.top_k}")
        if self.weight_decay_groups not in ("mingpt", "all"):
            raise ValueError(
                f"weight_decay_groups must be 'mingpt' or 'all', got {self.weight_decay_groups!r}"
            )
        if self.vanilla_mode not in ("independent", "joint"):
            raise ValueError(
                f"vanilla_mode must be 'independent' or 'joint', got {self.vanilla_mode!r}"
            )


# ----------------------------------------------------------------------------- network


class KVCache:
    """Per-layer spike keys and values of the tokens seen so far, ``[T, B, heads, L, d_head]``."""

    def __init__(self, n_layer: int) -> None:
        self.keys: list[Tensor | None] = [None] * n_layer
        self.values: list[Tensor | None] = [None] * n_layer

    @property
    def length(self) -> int:
        """Number of cached tokens (of the last layer: complete after every forward)."""
        return self.layer_length(len(self.keys) - 1)

    def layer_length(self, layer: int) -> int:
        """Number of tokens cached for ``layer``."""
        k = self.keys[layer]
        return 0 if k is None else k.shape[-2]

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append new keys/values of ``layer`` along the token axis; return the full ones."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=-2)
            v = torch.cat([self.values[layer], v], dim=-2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class SpikingCausalSelfAttention(nn.Module):
    """Multi-head causal attention with spiking k, q, v and no softmax.

    Input ``[T, B, L, C]`` (SNN step, batch, token, channel); output the same. With a cache, the
    ``L`` input tokens follow the ``P`` cached ones and attend to all ``P + L`` (causally).
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        block_size: int,
        neuron: Any,
        attn_pdrop: float = 0.0,
        resid_pdrop: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_head = n_head
        self.key = nn.Linear(n_embd, n_embd)
        self.query = nn.Linear(n_embd, n_embd)
        self.value = nn.Linear(n_embd, n_embd)
        self.k_neuron = neuron_from_config(neuron)
        self.q_neuron = neuron_from_config(neuron)
        self.v_neuron = neuron_from_config(neuron)
        self.proj = nn.Linear(n_embd, n_embd)
        self.attn_drop = nn.Dropout(attn_pdrop)
        self.resid_drop = nn.Dropout(resid_pdrop)
        mask = torch.tril(torch.ones(block_size, block_size, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)

    def _heads(self, x: Tensor) -> Tensor:
        t, b, n, c = x.shape  # [T, B, L, C] -> [T, B, heads, L, d_head]
        return x.view(t, b, n, self.n_head, c // self.n_head).transpose(2, 3)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """Return the attention output ``[T, B, L, C]`` of ``x`` ``[T, B, L, C]``."""
        t, b, n, c = x.shape
        past = 0 if cache is None else cache.layer_length(layer)
        k = self._heads(_spikes(self.k_neuron(self.key(x))))
        q = self._heads(_spikes(self.q_neuron(self.query(x))))
        v = self._heads(_spikes(self.v_neuron(self.value(x))))
        if cache is not None:
            k, v = cache.append(layer, k, v)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))  # [T,B,h,L,P+L]
        att = att.masked_fill(~self.mask[past : past + n, : past + n], 0.0)  # no softmax
        y = self.attn_drop(att) @ v  # [T, B, h, L, d_head]
        y = y.transpose(2, 3).reshape(t, b, n, c)
        return self.resid_drop(self.proj(y))


def _spikes(out: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    return out[0] if isinstance(out, tuple) else out


class SpikingBlock(nn.Module):
    """Transformer block ``x + attn(LN(x))``, then ``x + MLP(LN(x))``; ``[T, B, L, C]``."""

    def __init__(self, cfg: PriorConfig, block_size: int) -> None:
        super().__init__()
        c = cfg.n_embd
        self.ln1 = nn.LayerNorm(c)
        self.ln2 = nn.LayerNorm(c)
        self.attn = SpikingCausalSelfAttention(
            c, cfg.n_head, block_size, cfg.neuron, cfg.attn_pdrop, cfg.resid_pdrop
        )
        self.fc = nn.Linear(c, 4 * c)
        self.act = neuron_from_config(cfg.neuron)
        self.fc_out = nn.Linear(4 * c, c)
        self.drop = nn.Dropout(cfg.resid_pdrop)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """Return the block output ``[T, B, L, C]``."""
        x = x + self.attn(self.ln1(x), cache, layer)
        h = _spikes(self.act(self.fc(self.ln2(x))))
        return x + self.drop(self.fc_out(h))


class SpikingGPT(nn.Module):
    """Token ids ``[B, L]`` -> logits ``[B, L, vocab]`` (mean over ``time_steps`` SNN steps).

    ``forward(idx, cache)``: with a :class:`KVCache`, ``idx`` are the tokens that follow the
    cached ones (positions ``P .. P+L-1``) and the cache is extended in place. The token
    embedding table is frozen unless ``cfg.train_token_embedding`` (the original's is).
    """

    def __init__(self, cfg: PriorConfig, vocab_size: int, block_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, cfg.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, block_size, cfg.n_embd))
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.blocks = nn.ModuleList(SpikingBlock(cfg, block_size) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        self.apply(_init_weights)
        self.tok_emb.weight.requires_grad_(cfg.train_token_embedding)

    def new_cache(self) -> KVCache:
        """An empty key/value cache for this network."""
        return KVCache(len(self.blocks))

    def forward(
        self, idx: Tensor, cache: KVCache | None = None, token_embeddings: Tensor | None = None
    ) -> Tensor:
        """Return logits ``[B, L, vocab]`` of tokens ``idx`` ``[B, L]``.

        ``token_embeddings`` ``[B, L, C]``, when given, replace ``tok_emb(idx)`` (gradients
        flow into them).
        """
        past = 0 if cache is None else cache.length
        n = idx.shape[1]
        if past + n > self.block_size:
            raise ValueError(f"sequence of {past + n} tokens exceeds block_size {self.block_size}")
        tok = self.tok_emb(idx) if token_embeddings is None else token_embeddings
        x = tok + self.pos_emb[:, past : past + n]
        x = self.drop(direct_encode(x, self.cfg.time_steps))  # [T, B, L, C], a mask per step
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        return self.head(self.ln_f(x)).mean(0)

    def param_groups(self) -> list[dict[str, Any]]:
        """minGPT's AdamW groups: the weights of Linear layers (decayed with the optimiser's
        ``weight_decay``), then everything else - biases, LayerNorms, embeddings, the position
        embedding - with ``weight_decay`` 0."""
        decay = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        params = list(self.parameters())
        return [
            {"params": [p for p in params if id(p) in decay]},
            {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
        ]


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def sample_logits(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row of ``logits`` ``[B, V]``: ``softmax(logits / temperature)``
    restricted to the ``top_k`` largest; ``temperature=0`` takes the argmax. Returns ``[B]``."""
    if temperature == 0:
        return logits.argmax(-1)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    device = probs.device if generator is None else generator.device
    draw = torch.multinomial(probs.to(device), 1, generator=generator)
    return draw.squeeze(-1).to(logits.device)


# ----------------------------------------------------------------------------- the model


class VQPrior(GenerativeModel):
    """Spiking GPT over the codes of a frozen stage-1 VQ-VAE; samples images (or event frames).

    The stage-1 model is loaded from ``cfg.stage1_run`` when the prior is built (or given as
    ``stage1``) and kept, frozen and in eval mode, as the submodule ``stage1`` (its weights are
    saved in the prior's checkpoints too). ``reconstruct`` is stage 1's reconstruction.

    ``seq_len`` is the length of one GPT sequence: ``h*w`` (temporal codebook, or vanilla with
    ``vanilla_mode: independent``, then ``code_steps = T`` sequences per sample) or ``h*w*T``
    (vanilla, ``joint``).
    """

    name = "vq_prior"

    #: the trained VQ-VAE of ``model.stage1_run``, loaded by the run layer (``stage1_from_run``)
    run_parts = (RunPart("stage1_from_run", "stage1_run", "model", ema_field="stage1_ema"),)

    def __init__(
        self,
        cfg: PriorConfig,
        info: DataInfo,
        stage1: nn.Module | None = None,
        *,
        stage1_from_run: nn.Module | None = None,
    ) -> None:
        """``stage1``: a stage-1 network used as it is (tests, custom code);
        ``stage1_from_run``: the VQ-VAE of ``cfg.stage1_run`` as
        :func:`snngen.runs.load_model_parts` loads it, checked against ``info`` and frozen."""
        super().__init__()
        self.cfg, self.info = cfg, info
        self.stage1 = (_check_stage1(stage1_from_run, cfg, info) if stage1 is None
                       else stage1.eval())
        self.vocab_size = self.stage1.vocab_size
        vanilla = self.stage1.cfg.codebook == "vanilla"
        self.code_steps = (
            self.stage1.cfg.time_steps if vanilla and cfg.vanilla_mode == "independent" else 1
        )
        self.seq_len = self.stage1.tokens_per_sample // self.code_steps
        if not 0 <= cfg.sos_token < self.vocab_size:
            raise ValueError(f"sos_token {cfg.sos_token} is not in [0, {self.vocab_size})")
        self.gpt = SpikingGPT(cfg, self.vocab_size, self.seq_len)

    def train(self, mode: bool = True) -> VQPrior:
        super().train(mode)
        self.stage1.eval()  # frozen: never in training mode
        return self

    def optimizer_groups(self) -> dict[str, list]:
        """One AdamW over the GPT: minGPT's decay / no-decay groups (``weight_decay_groups:
        mingpt``, the original) or all parameters decayed (``all``)."""
        if self.cfg.weight_decay_groups == "mingpt":
            return {"loss": self.gpt.param_groups()}
        return {"loss": list(self.gpt.parameters())}

    def _with_sos(self, tokens: Tensor) -> Tensor:
        """``[sos, t_0, ..., t_{L-2}]``: the GPT input whose outputs predict ``tokens``."""
        sos = torch.full_like(tokens[:, :1], self.cfg.sos_token)
        return torch.cat([sos, tokens[:, :-1]], dim=1)

    def token_loss(self, tokens: Tensor, step: int | None = None) -> dict[str, Tensor]:
        """Cross-entropy of the GPT on stage-1 ``tokens`` ``[B, tokens_per_sample]``.

        With ``code_steps > 1`` (vanilla, independent) the GPT sees one step's codes: ``step``,
        or in training mode one drawn uniformly from the global RNG for the whole batch (as the
        original); in eval mode (``step=None``) every step's sequence, averaged (a
        deterministic test loss with the same expectation).
        """
        if self.code_steps > 1:
            per_step = tokens.view(tokens.shape[0], self.seq_len, self.code_steps)
            if step is None and self.training:
                step = int(torch.randint(self.code_steps, ()).item())
            if step is None:
                tokens = per_step.permute(2, 0, 1).reshape(-1, self.seq_len)  # [S*B, L]
            else:
                tokens = per_step[..., step]
        logits = self.gpt(self._with_sos(tokens))
        ce = F.cross_entropy(logits.reshape(-1, self.vocab_size), tokens.reshape(-1))
        return {"loss": ce, "bits_per_token": ce.detach() / math.log(2)}

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        return self.token_loss(self.stage1.encode_tokens(batch))  # stage-1 codes, no grad

    @torch.no_grad()
    def generate_tokens(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Sample ``n`` token sequences ``[n, tokens_per_sample]`` one token at a time.

        ``use_cache=True`` runs each new token alone against the key/value cache;
        ``use_cache=False`` re-runs the whole prefix every step (same tokens, slower). With
        ``code_steps > 1`` the steps are ``code_steps`` independent sequences, drawn one after
        the other (step 0's first), interleaved into stage 1's token layout.
        """
        temperature = self.cfg.temperature if temperature is None else temperature
        top_k = self.cfg.top_k if top_k is None else top_k
        steps = [
            self._generate_sequence(n, generator, temperature, top_k, use_cache)
            for _ in range(self.code_steps)
        ]
        return torch.stack(steps, dim=-1).flatten(1)  # [n, seq_len * code_steps]

    def _generate_sequence(
        self,
        n: int,
        generator: torch.Generator | None,
        temperature: float,
        top_k: int | None,
        use_cache: bool,
    ) -> Tensor:
        """``n`` sequences ``[n, seq_len]`` from the start token."""
        device = self.gpt.head.weight.device
        seq = torch.full((n, 1), self.cfg.sos_token, dtype=torch.long, device=device)
        cache = self.gpt.new_cache() if use_cache else None
        for _ in range(self.seq_len):
            inp = seq[:, -1:] if use_cache else seq
            logits = self.gpt(inp, cache)[:, -1]
            nxt = sample_logits(logits, temperature, top_k, generator)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
        return seq[:, 1:]

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
    ) -> Tensor:
        """``n`` samples: images ``[n, C, H, W]`` in [0, 1] (events ``[T, n, 2, H, W]``)."""
        tokens = self.generate_tokens(n, generator, temperature, top_k)
        return self.stage1.decode_tokens(tokens)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.stage1.reconstruct(x)


def _check_stage1(stage1: nn.Module | None, cfg: PriorConfig, info: DataInfo) -> nn.Module:
    """Check and freeze the stage-1 VQ-VAE that the run layer loaded from ``cfg.stage1_run``."""
    from snngen.models.vqvae import VQVAE

    if stage1 is None:
        raise SnngenError(
            "model.stage1_run is not set: give the run folder of a trained vqvae "
            "(e.g. model.stage1_run=runs/vqvae_temporal_mnist5k_small)"
        )
    if not isinstance(stage1, VQVAE):
        raise SnngenError(
            f"model.stage1_run {cfg.stage1_run} holds a {stage1.name!r} model, not a vqvae"
        )
    if (stage1.info.channels, stage1.info.image_size, stage1.info.events) != (
        info.channels,
        info.image_size,
        info.events,
    ):
        raise SnngenError(
            f"the prior's data ({info}) does not match stage 1's ({stage1.info}); train the prior "
            f"on the dataset of {cfg.stage1_run}"
        )
    stage1.drop_training_modules()
    stage1.requires_grad_(False)
    return stage1.eval()
