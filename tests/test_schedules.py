"""EMA warm-up, learning-rate schedules and no-decay parameter groups, pinned against closed
forms, and resumed exactly."""

import math

import pytest
import torch
from torch import nn

from snngen.config import build_run_config
from snngen.errors import ConfigError, SnngenError
from snngen.preflight import check_optimiser_layout
from snngen.runs import read_checkpoint
from snngen.training import (
    EMA,
    LitGenerative,
    fit,
    lr_factor,
    make_optimizer,
    no_decay_groups,
)

# ----------------------------------------------------------------------------- EMA warm-up


def _run_ema(ema: EMA, model: nn.Linear, thetas: list[torch.Tensor]) -> None:
    """Set ``model``'s weight to each of ``thetas`` in turn and update ``ema`` after each."""
    for theta in thetas:
        with torch.no_grad():
            model.weight.copy_(theta)
        ema.update(model)


def test_ema_warmup_with_power_one_is_the_running_mean():
    # diffusers' EMAModel docstring: inv_gamma = 1, power = 1 "implements a simple average":
    # d_k = 1 - 1 / k, so after n updates the EMA is the mean of the n weights it saw (the
    # initial weights get factor d_1 = 0). The cap (0.9999) never binds for k <= 10.
    gen = torch.Generator().manual_seed(0)
    model = nn.Linear(4, 3, bias=False)
    ema = EMA(model, 0.9999, warmup=True, inv_gamma=1.0, power=1.0)
    thetas = [torch.randn(3, 4, generator=gen) for _ in range(10)]
    _run_ema(ema, model, thetas)
    want = torch.stack([t.double() for t in thetas]).mean(0)
    # 10 float32 lerps of O(1) numbers: rounding ~ 10 * 2^-24 relative; 1e-6 is 15x that and
    # 3 orders below what an off-by-one in the step count moves (d_k = k / (k + 1): ~1e-1)
    torch.testing.assert_close(ema.model.weight.double(), want, rtol=0, atol=1e-6)
    assert int(ema.num_updates) == 10


def test_ema_warmup_weights_match_the_sum_formula():
    # ema_n = (prod_k d_k) theta_0 + sum_k (1 - d_k) (prod_{j > k} d_j) theta_k in float64,
    # d_k = min(cap, 1 - (1 + (k - 1) / inv_gamma) ** -power) for k >= 2, d_1 = 0 (diffusers'
    # get_decay with step = k - 1); cap 0.7 binds from k = 9 on (1 - 5 ** -0.75 = 0.7009)
    gen = torch.Generator().manual_seed(1)
    model = nn.Linear(5, 2, bias=False)
    theta0 = model.weight.detach().double().clone()
    cap, inv_gamma, power, n = 0.7, 2.0, 0.75, 12
    ema = EMA(model, cap, warmup=True, inv_gamma=inv_gamma, power=power)
    thetas = [torch.randn(2, 5, generator=gen) for _ in range(n)]
    _run_ema(ema, model, thetas)

    def d(k: int) -> float:
        return 0.0 if k == 1 else min(cap, 1 - (1 + (k - 1) / inv_gamma) ** -power)

    assert d(2) == pytest.approx(1 - 1.5 ** -0.75)  # 0.26190..., by hand
    assert d(9) == cap and d(8) < cap  # the cap binds from update 9
    want = math.prod(d(k) for k in range(1, n + 1)) * theta0
    for k, theta in enumerate(thetas, 1):
        want = want + (1 - d(k)) * math.prod(d(j) for j in range(k + 1, n + 1)) * theta.double()
    # 12 float32 lerps of O(1) numbers: rounding well under 1e-6; an off-by-one step, the cap
    # ignored or the warm-up ignored each move the weights by more than 1e-2
    torch.testing.assert_close(ema.model.weight.double(), want, rtol=0, atol=1e-6)
    # without warm-up, today's EMA: ema_decay from the first update
    plain = EMA(nn.Linear(5, 2, bias=False), 0.7)
    assert [plain.decay_at(k) for k in (1, 2, 50)] == [0.7, 0.7, 0.7]


# ----------------------------------------------------------------------------- lr schedule


def test_lr_factor_at_chosen_steps():
    # warm-up 4 steps, cosine over a horizon of 20 steps to a floor of 0.1 (values by hand)
    f = lambda s: lr_factor(s, schedule="cosine", warmup=4, horizon=20, floor=0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.25)  # (s + 1) / warmup: the first step is not wasted at 0
    assert f(2) == pytest.approx(0.75)
    assert f(3) == pytest.approx(1.0)  # the warm-up's last step reaches lr
    assert f(4) == pytest.approx(1.0)  # cosine phase 0
    # phase p = (8 - 4) / 16 = 1/4: 0.1 + 0.9 * (1 + cos(pi / 4)) / 2 = 0.868198...
    assert f(8) == pytest.approx(0.1 + 0.45 * (1 + 0.7071067811865476))
    assert f(12) == pytest.approx(0.55)  # phase 1/2: halfway between lr and the floor
    assert f(19) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 15 / 16)))
    assert f(20) == pytest.approx(0.1) and f(35) == pytest.approx(0.1)  # the floor, held
    g = lambda s: lr_factor(s, schedule="constant", warmup=3, horizon=20, floor=0.0)  # noqa: E731
    assert [g(s) for s in (0, 1, 2, 3, 100)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])
    assert lr_factor(0, schedule="cosine", warmup=0, horizon=10, floor=0.0) == 1.0


# ----------------------------------------------------------------------------- no-decay groups


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.lin = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.conv = nn.Conv2d(1, 2, 3)
        self.tau = nn.Parameter(torch.tensor(2.0))  # a learnable neuron constant, 0-d


def _names(module: nn.Module, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in module.named_parameters() if id(p) in ids}


def test_no_decay_groups_on_a_small_module():
    m = _Small()
    groups = no_decay_groups(list(m.parameters()), m)
    assert len(groups) == 2 and "weight_decay" not in groups[0]
    assert _names(m, groups[0]["params"]) == {"lin.weight", "conv.weight"}
    assert groups[1]["weight_decay"] == 0.0
    assert _names(m, groups[1]["params"]) == {
        "emb.weight", "lin.bias", "norm.weight", "norm.bias", "conv.bias", "tau"}
    # groups a model already gives (the prior's minGPT groups) are split inside, keys kept
    given = [{"params": [m.lin.weight, m.lin.bias], "lr": 0.5},
             {"params": [m.emb.weight], "weight_decay": 0.0}]
    split = no_decay_groups(given, m)
    assert [(_names(m, g["params"]), g.get("weight_decay"), g.get("lr")) for g in split] == [
        ({"lin.weight"}, None, 0.5), ({"lin.bias"}, 0.0, 0.5), ({"emb.weight"}, 0.0, None)]


def test_adamw_decays_only_the_decay_group():
    # AdamW with zero gradients moves a parameter only by decoupled decay: p <- p (1 - lr wd)
    m = _Small()
    cfg = build_run_config({"model": {"name": "tiny"}, "optim": {
        "name": "adamw", "lr": 0.5, "weight_decay": 0.2, "no_decay_bias_norm": True}})
    opt = make_optimizer(cfg, no_decay_groups(list(m.parameters()), m), {}, 1)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in m.named_parameters():
        factor = 0.9 if n in ("lin.weight", "conv.weight") else 1.0  # 1 - 0.5 * 0.2
        torch.testing.assert_close(p.detach(), before[n] * factor, rtol=0, atol=0, msg=n)


# ----------------------------------------------------------------------------- exact resume


def _cfg(steps: int = 12, **optim):
    return build_run_config({
        "model": {"name": "tiny"},
        "data": {"batch_size": 8},
        "optim": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.05, "schedule": "cosine",
                  "warmup_steps": 3, "min_lr": 1e-3, "no_decay_bias_norm": True, **optim},
        "trainer": {"max_steps": steps, "ckpt_every_n_steps": 3, "accelerator": "cpu",
                    "progress_bar": False, "seed": 1, "ema_decay": 0.99, "ema_warmup": True},
    })


def _state(lit):
    return {k: v.clone() for k, v in lit.state_dict().items()}


def test_schedule_and_ema_warmup_resume_exactly(tmp_path, tiny_data, monkeypatch):
    ds, info = tiny_data
    straight = fit(_cfg(), tmp_path / "a", ds, info)
    # the same run stopped after its checkpoint at step 6 (as an interrupted run), then resumed
    with monkeypatch.context() as m:
        m.setattr(LitGenerative, "finished", property(lambda self: self.batches_seen >= 6))
        first = fit(_cfg(), tmp_path / "b", ds, info)
    assert first.batches_seen == 6
    # its checkpoint holds the schedule's state and the lr of step 6 (cosine phase 3/9), and
    # the EMA's count
    ckpt = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 6
    lr6 = 1e-3 + 0.5 * 9e-3 * (1 + math.cos(math.pi / 3))  # 7.75e-3
    assert [g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"]] == pytest.approx(
        [lr6, lr6], rel=1e-12)
    assert int(ckpt["state_dict"]["ema.num_updates"]) == 6
    resumed = fit(_cfg(), tmp_path / "b", ds, info, resume=True)
    assert resumed.batches_seen == straight.batches_seen == 12
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys() and int(b["ema.num_updates"]) == 12
    for k in a:  # model weights, EMA weights and the EMA's step count, bit for bit
        assert torch.equal(a[k], b[k]), k
    for lit in (straight, resumed):
        opt = lit.trainer.optimizers[0]
        assert len(opt.param_groups) == 2  # decay, no-decay
        # the lr the next step (s = 12) would use, by the closed form: cosine phase 9/9
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(1e-3, rel=1e-12), "floor reached at the horizon"
    assert [g["lr"] for g in straight.trainer.optimizers[0].param_groups] == [
        g["lr"] for g in resumed.trainer.optimizers[0].param_groups]
    # and the stopped run is really behind (the test can fail)
    assert not torch.equal(_state(first)["ema.model.dec.weight"], a["ema.model.dec.weight"])


def test_lr_of_each_step_follows_the_closed_form(tmp_path, tiny_data, monkeypatch):
    ds, info = tiny_data
    seen: list[float] = []
    step = LitGenerative.training_step

    def spy(self, batch, batch_idx):
        seen.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return step(self, batch, batch_idx)

    monkeypatch.setattr(LitGenerative, "training_step", spy)
    fit(_cfg(8, warmup_steps=2, min_lr=0.0), tmp_path / "r", ds, info)
    # warm-up 1e-2 * (s + 1) / 2, then cosine over the 6 steps 2..7 to 0
    want = [5e-3, 1e-2] + [0.5e-2 * (1 + math.cos(math.pi * (s - 2) / 6)) for s in range(2, 8)]
    assert seen == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_trainer_ema_is_the_running_mean_of_its_steps(tmp_path, tiny_data, monkeypatch):
    # power 1, inv_gamma 1: the trainer's EMA after n steps is the mean of the weights after
    # steps 1..n (update k = optimiser step k; the initial weights get factor d_1 = 0)
    ds, info = tiny_data
    after: list[torch.Tensor] = []
    step = LitGenerative.training_step

    def spy(self, batch, batch_idx):
        out = step(self, batch, batch_idx)
        after.append(self.model.dec.weight.detach().double().clone())
        return out

    monkeypatch.setattr(LitGenerative, "training_step", spy)
    cfg = _cfg(7, schedule="constant", warmup_steps=0)
    cfg.trainer.ema_decay, cfg.trainer.ema_power = 0.9999, 1.0
    lit = fit(cfg, tmp_path / "r", ds, info)
    assert len(after) == 7 and int(lit.ema.num_updates) == 7
    # 7 float32 lerps: rounding ~1e-7 on weights of size ~0.3; a step off by one moves ~5e-3
    torch.testing.assert_close(lit.ema.model.dec.weight.double(), torch.stack(after).mean(0),
                               rtol=0, atol=1e-6)


def test_resume_refuses_another_optimiser_layout(tmp_path, tiny_data):
    ds, info = tiny_data
    lit = fit(_cfg(3), tmp_path / "r", ds, info)
    ckpt = read_checkpoint(tmp_path / "r" / "checkpoints" / "last.ckpt")
    check_optimiser_layout(tmp_path / "r", ckpt, _cfg(3), lit.model)  # the same: accepted
    for changed in ({"no_decay_bias_norm": False}, {"schedule": "constant", "warmup_steps": 0}):
        with pytest.raises(SnngenError, match="keep optim.no_decay_bias_norm"):
            check_optimiser_layout(tmp_path / "r", ckpt, _cfg(3, **changed), lit.model)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("section, values, message", [
    ("trainer", {"max_epochs": None, "max_cpu_minutes": 5.0}, "optim.schedule: cosine"),
    ("trainer", {"ema_warmup": True}, "trainer.ema_warmup: needs trainer.ema_decay"),
    ("trainer", {"ema_decay": 0.9, "ema_power": 0.0}, "trainer.ema_power: must be a number > 0"),
    ("optim", {"min_lr": 0.5}, "optim.min_lr: must be <= lr"),
    ("optim", {"warmup_steps": -1}, "optim.warmup_steps: must be a number >= 0"),
])
def test_config_refuses(section, values, message):
    raw = {"model": {"name": "tiny"}, "optim": {"schedule": "cosine"}}
    raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises(ConfigError, match=message):
        build_run_config(raw)
