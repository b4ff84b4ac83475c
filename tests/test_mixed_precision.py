"""``trainer.precision=bf16-mixed`` trains every model family (issue 14).

Each family's shipped small config is shrunk as in ``tests/configs/test_every_config.py`` (its
helpers and fixtures are reused) and trained 2 steps on the CPU under Lightning's bfloat16
autocast through ``snngen train``: the loss stays finite, the checkpoint reloads with
:func:`snngen.runs.load_run` holding float32 weights equal to the trained (master) ones, and the
reloaded model samples finite images (stage 1, which samples only through its prior,
reconstructs them). One bf16 stage-1 VQ-VAE run (its discriminator trains from step 1) is shared
by the vqvae and the vq_prior cases, and the bf16 SDDPM run is the SDM/TSM run's ``init_from``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "configs"))

import test_every_config as every  # noqa: E402

import snngen.training  # noqa: E402
from snngen.config import PRECISIONS  # noqa: E402
from snngen.runs import checkpoint_path, load_run, model_weights, read_checkpoint  # noqa: E402
from snngen.spiking.kernels import NeuronSpec, lif_fused, lif_reference  # noqa: E402
from snngen.spiking.surrogate import ATan  # noqa: E402

#: test_every_config's fixtures (module-scoped stand-in data and run folders; quiet loggers)
env = every.env
quiet = every.quiet

BF16 = "trainer.precision=bf16-mixed"
N_SAMPLES = 2


class Trained:
    """A bf16-mixed run: its folder and the Lightning module ``fit`` returned."""

    def __init__(self, run: Path, lit) -> None:
        self.run = run
        self.lit = lit


def train_bf16(name: str, env, monkeypatch, extra: list[str] = ()) -> Trained:
    """``snngen train configs/<name>`` shrunk, in bf16-mixed, without the final evaluation."""
    fitted = []
    real_fit = snngen.training.fit

    def fit(*args, **kwargs):
        lit = real_fit(*args, **kwargs)
        fitted.append(lit)
        return lit

    dtypes: set[torch.dtype] = set()

    def record(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            dtypes.add(output.dtype)

    monkeypatch.setattr(snngen.training, "fit", fit)
    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        run = every.train_config(name, env, [BF16, "--no-eval", *extra], suffix="-bf16")
    finally:
        hook.remove()
        monkeypatch.setattr(snngen.training, "fit", real_fit)
    assert len(fitted) == 1
    assert torch.bfloat16 in dtypes, dtypes  # autocast was on
    return Trained(run, fitted[0])


def check_run(trained: Trained) -> None:
    """Finite loss under bf16 autocast; float32 weights that reload equal; the model samples."""
    lit = trained.lit
    assert lit.trainer.precision == "bf16-mixed"
    assert lit.batches_seen == 2
    loss = lit.trainer.callback_metrics["loss"]
    assert math.isfinite(float(loss)), loss
    trained_state = {k: v.detach().cpu() for k, v in lit.model.state_dict().items()}
    for k, v in trained_state.items():
        if v.is_floating_point():
            assert v.dtype == torch.float32, (k, v.dtype)  # float32 master weights

    ckpt = read_checkpoint(checkpoint_path(trained.run))
    assert model_weights(ckpt["state_dict"], ema=False).keys() == trained_state.keys()
    loaded = load_run(trained.run, ema=False)
    reloaded = loaded.model.state_dict()
    assert reloaded.keys() == trained_state.keys()
    for k, v in trained_state.items():
        assert reloaded[k].dtype == v.dtype, k
        assert torch.equal(reloaded[k], v), k

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if loaded.cfg.model.name == "vqvae":  # stage 1 samples only through its prior
            info = loaded.info
            x = loaded.model.reconstruct(torch.rand(
                N_SAMPLES, info.channels, info.image_size, info.image_size, generator=gen))
        else:
            x = loaded.model.sample(N_SAMPLES, generator=gen)
    assert x.shape[0] == N_SAMPLES or (x.dim() == 5 and x.shape[1] == N_SAMPLES), x.shape
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()


def test_precision_accepted():
    assert "bf16-mixed" in PRECISIONS


@pytest.mark.parametrize("compile", [False, "auto"], ids=["eager", "auto"])
@pytest.mark.parametrize("spec", [NeuronSpec("spikingjelly", 1.0, 0.0, False, True, ATan()),
                                  NeuronSpec("snntorch", 0.5, None, False, True, ATan())],
                         ids=["sj", "snntorch-soft"])
def test_cpu_lif_bf16_has_float32_state(spec, compile):
    """A bf16 CPU input (what autocast hands the neurons) runs with float32 state: spikes equal
    the float32 reference's on the widened input, membranes are its membranes rounded once, the
    input gradient is the float32 one rounded once (within half a bf16 ulp)."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 3, 17, generator=gen) * 0.8 + 0.4).bfloat16()
    # output gradients that bf16 holds exactly (they reach the kernel through bf16 outputs)
    grad_s, grad_h = (torch.randn(x.shape, generator=gen).bfloat16().float() for _ in range(2))
    x1 = x.clone().requires_grad_()
    s1, h1 = lif_fused(x1, 0.5, spec, compile=compile)
    ((s1.float() * grad_s).sum() + (h1.float() * grad_h).sum()).backward()
    x2 = x.float().requires_grad_()
    s2, h2 = lif_reference(x2, 0.5, spec)
    ((s2 * grad_s).sum() + (h2 * grad_h).sum()).backward()
    assert s1.dtype == h1.dtype == x1.grad.dtype == torch.bfloat16
    assert torch.equal(s1.float(), s2)
    assert torch.equal(h1, h2.bfloat16())
    torch.testing.assert_close(x1.grad.float(), x2.grad, rtol=2.0**-8, atol=1e-5)


@pytest.mark.parametrize("name", ["sae_mnist5k.yaml", "fsvae_mnist5k.yaml",
                                  "ann_vae_mnist5k.yaml", "ddpm_mnist5k_small.yaml"])
def test_family_trains_in_bf16(name, env, quiet, monkeypatch):
    check_run(train_bf16(name, env, monkeypatch))


@pytest.fixture(scope="module")
def stage1(env, tmp_path_factory) -> Trained:
    """One tiny bf16-mixed temporal VQ-VAE run (its discriminator on from step 1)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SNNGEN_DATA", str(env.data))
    mp.setenv("SNNGEN_CACHE", str(env.cache))
    try:
        return train_bf16("vqvae_temporal_mnist5k_small.yaml", env, mp)
    finally:
        mp.undo()


def test_vqvae_stage1_bf16(stage1, quiet):
    lit = stage1.lit
    assert len(lit._group_names) == 2, lit._group_names  # generator and discriminator steps
    assert lit.model.discriminator is not None
    check_run(stage1)


def test_vq_prior_bf16(stage1, env, quiet, monkeypatch):
    env.parents["vqvae_temporal_mnist5k_small.yaml"] = stage1.run  # its model.stage1_run
    trained = train_bf16("vq_prior_temporal_mnist5k_small.yaml", env, monkeypatch)
    check_run(trained)


def test_sddpm_and_sdm_tsm_bf16(env, quiet, monkeypatch):
    sddpm = train_bf16("sddpm_mnist5k_small.yaml", env, monkeypatch)
    check_run(sddpm)
    env.parents["sddpm_mnist5k_small.yaml"] = sddpm.run  # its model.init_from
    tsm = train_bf16("sdm_tsm_mnist5k_small.yaml", env, monkeypatch)
    check_run(tsm)
