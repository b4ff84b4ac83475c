"""A small ReLU U-Net trained for a few dozen steps on synthetic bar images (in seconds)."""

from __future__ import annotations

import pytest
import torch

from snngen.diffusion import NoiseSchedule
from snngen.models.unet import SpikingUNet, UNetConfig

SIZE = 8  # image side


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only slow these tests down (by 100x on a loaded CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SNNGEN_COMPILE", "0")
        yield
    torch.set_num_threads(n)


def bars(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` images ``[n, 1, 8, 8]`` in [-1, 1]: one bright horizontal or vertical bar each."""
    x = -torch.ones(n, 1, SIZE, SIZE)
    pos = torch.randint(0, SIZE, (n,), generator=generator)
    horizontal = torch.rand(n, generator=generator) < 0.5
    for i in range(n):
        if horizontal[i]:
            x[i, 0, pos[i], :] = 1.0
        else:
            x[i, 0, :, pos[i]] = 1.0
    return x


def ann_config(**kw) -> UNetConfig:
    base = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, timesteps=1, neuron="relu", in_channels=1)
    return UNetConfig(**{**base, **kw})


@pytest.fixture(scope="session")
def schedule() -> NoiseSchedule:
    return NoiseSchedule.linear(100, 1e-3, 0.2)


@pytest.fixture(scope="session")
def trained_ann(schedule: NoiseSchedule) -> SpikingUNet:
    """The ANN twin of the spiking U-Net (ReLU, one step) after 60 Adam steps of DDPM's loss
    (the loss falls from ~1 to ~0.5; batch-norm running statistics are those of the data)."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = SpikingUNet(ann_config())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = schedule.eps_loss(net, bars(16, gen), generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(n_threads)
    return net.eval()


def noisy_batches(schedule: NoiseSchedule, k: int, seed: int, batch: int = 8) -> list:
    """``k`` network inputs ``(x_t [batch, 1, 8, 8], t [batch])`` at random diffusion times."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        x0 = bars(batch, gen)
        t = torch.randint(0, schedule.num_steps, (batch,), generator=gen)
        out.append((schedule.q_sample(x0, t, generator=gen), t))
    return out
