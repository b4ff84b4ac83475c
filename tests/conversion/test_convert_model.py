"""convert_model: a whole ANN diffusion model becomes a spiking one that samples like any model."""

import pytest
import torch

from snngen.conversion import ConvertedUNet, convert_model, convert_unet, noisy_inputs
from snngen.errors import SnngenError
from snngen.models import DataInfo, build_model
from snngen.models.diffusion_model import DDPMConfig, SDDPMConfig


def tiny(cfg_cls, **kw):
    torch.manual_seed(0)
    cfg = cfg_cls(ch=4, ch_mult=[1, 2], num_res_blocks=1, diffusion_steps=20, beta_1=1e-3,
                  beta_T=0.2, gamma_images=4, **kw)
    return build_model(cfg, DataInfo(channels=1, image_size=8)).eval()


def test_converted_model_samples_with_the_converted_unet_and_leaves_the_ann_alone():
    ann = tiny(DDPMConfig)
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    snn = convert_model(ann, images, timesteps=4, batch_size=8, seed=3)
    assert isinstance(snn.unet, ConvertedUNet) and snn.unet.timesteps == 4
    assert not isinstance(ann.unet, ConvertedUNet)
    for k, v in ann.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the same thresholds as converting the U-Net by hand on the same noisy inputs
    by_hand = convert_unet(ann.unet, noisy_inputs(ann, images, 8, 3), timesteps=4)
    assert snn.unet.thresholds == by_hand.thresholds
    # and it samples through the converted network: the same x_T gives by_hand's trajectory
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    from snngen.diffusion import sample as run_sampler

    want = run_sampler("ddim", by_hand, ann.schedule, noise, 5)
    got = snn.sample(2, solver="ddim", steps=5, noise=noise)
    torch.testing.assert_close(got, ((want.clamp(-1, 1) + 1) / 2).float())
    assert not torch.allclose(got, ann.sample(2, solver="ddim", steps=5, noise=noise))


def test_noisy_inputs_match_the_forward_process_in_closed_form():
    """noisy_inputs against x_t = sqrt(abar_t) (2 x - 1) + sqrt(1 - abar_t) eps, with t and eps
    re-drawn from the seed in the documented order (per batch: t, then eps) and abar from the
    schedule's betas by hand: a dropped ``* 2 - 1``, another generator or batch split shows."""
    model = tiny(DDPMConfig)
    steps = 20  # tiny's diffusion_steps
    x01 = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    got = noisy_inputs(model, x01, 4, 7)
    assert [(x.shape[0], t.shape[0]) for x, t in got] == [(4, 4), (4, 4), (2, 2)]
    betas = model.schedule.betas.double()
    assert betas.numel() == steps
    alphabar = torch.cumprod(1 - betas, dim=0)
    gen = torch.Generator().manual_seed(7)
    x = x01.double() * 2 - 1
    start = 0
    for xt, t in got:
        b = t.shape[0]
        t_want = torch.randint(0, steps, (b,), generator=gen)
        eps = torch.randn((b, 1, 8, 8), generator=gen).double()  # q_sample's randn_like
        ab = alphabar[t_want].view(-1, 1, 1, 1)
        want = ab.sqrt() * x[start:start + b] + (1 - ab).sqrt() * eps
        assert torch.equal(t, t_want)
        assert xt.dtype == torch.float32 and xt.shape == (b, 1, 8, 8)
        torch.testing.assert_close(xt.double(), want, rtol=0, atol=1e-6)
        start += b
    assert start == 10
    again = noisy_inputs(model, x01, 4, 7)  # the seed alone fixes the inputs
    for (x1, t1), (x2, t2) in zip(got, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(t1, t2)
    other = noisy_inputs(model, x01, 4, 8)
    assert not torch.equal(torch.cat([t for _, t in got]), torch.cat([t for _, t in other]))


def test_conversion_refuses_a_spiking_model():
    with pytest.raises(SnngenError, match="needs an ANN diffusion model"):
        convert_model(tiny(SDDPMConfig, timesteps=2), torch.rand(4, 1, 8, 8), timesteps=4)
