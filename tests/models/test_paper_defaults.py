"""Every default that a paper or its code states, pinned to the published value.

Each case is named ``<model>_<what>_<value>`` and its source is given in the table; a change of
any of these defaults changes a published number, so it must be deliberate (and change this
table in the same commit). Sources: the papers and their original code as summarised in
``/work/shared/SEED_FACTS.md`` (snnTorch ``tutorial_sae``; FSVAE, Kamata et al. AAAI 2022,
``kamata1729/FullySpikingVAE``; the temporal-codebook spiking VQ-VAE, ``Brain-Cog-Lab/tts_vqvae``
with braincog's ``LIFNode`` defaults; SDDPM, Cao et al. WACV 2024, ``AndyCao1125/SDDPM``; DDPM,
Ho et al. 2020).
"""

from __future__ import annotations

import inspect

import pytest

from snngen.models.diffusion_model import SDDPMConfig
from snngen.models.fsvae import FSVAEConfig, psp, psp_mmd
from snngen.models.prior import PriorConfig
from snngen.models.sae import SAEConfig
from snngen.models.unet import SDDPM_IF, UNetConfig
from snngen.models.vqvae import VQVAEConfig
from snngen.spiking.layers import BRAINCOG_LIF


def _default(fn, name):
    return inspect.signature(fn).parameters[name].default


# (case id naming the value, source, actual default, the paper's value)
PAPER_DEFAULTS = [
    # snnTorch tutorial_sae: Leaky beta 0.5, threshold 1, atan alpha 2, 5 steps, latent 32,
    # read-out threshold 20000
    ("sae_leaky_beta_0.5", "snnTorch tutorial_sae", SAEConfig().beta, 0.5),
    ("sae_threshold_1", "snnTorch tutorial_sae", SAEConfig().v_threshold, 1.0),
    ("sae_atan_alpha_2", "snnTorch tutorial_sae", SAEConfig().surrogate_alpha, 2.0),
    ("sae_atan_surrogate", "snnTorch tutorial_sae", SAEConfig().surrogate, "atan"),
    ("sae_num_steps_5", "snnTorch tutorial_sae", SAEConfig().num_steps, 5),
    ("sae_latent_32", "snnTorch tutorial_sae", SAEConfig().latent_dim, 32),
    ("sae_readout_threshold_20000", "snnTorch tutorial_sae", SAEConfig().output_threshold,
     20000.0),
    # FSVAE: u_t = 0.25 u_{t-1} (1 - o_{t-1}) + x_t, Vth 0.2, rectangular surrogate width 1,
    # tdBN alpha 1 (2 in prior/posterior), read-out 0.8^(T-1-t), PSP tau_s 2, scheduled
    # sampling 0.1 -> 0.3 for t >= 5, T 16, k 20, latent 128, KL weight 1e-4 (mmd: 1)
    ("fsvae_lif_decay_tau_0.25", "FSVAE snn_layers.py", FSVAEConfig().beta, 0.25),
    ("fsvae_threshold_0.2", "FSVAE snn_layers.py", FSVAEConfig().v_threshold, 0.2),
    ("fsvae_surrogate_width_1", "FSVAE snn_layers.py", FSVAEConfig().surrogate_width, 1.0),
    ("fsvae_tdbn_alpha_1", "FSVAE snn_layers.py", FSVAEConfig().bn_alpha, 1.0),
    ("fsvae_prior_tdbn_alpha_2", "FSVAE fsvae_prior/posterior.py", FSVAEConfig().prior_bn_alpha,
     2.0),
    ("fsvae_readout_decay_0.8", "FSVAE fsvae.py", FSVAEConfig().readout_decay, 0.8),
    ("fsvae_psp_tau_s_2", "FSVAE paper Eq. (PSP), fsvae.py", FSVAEConfig().psp_tau, 2.0),
    ("fsvae_psp_function_tau_s_2", "FSVAE", _default(psp, "tau_s"), 2.0),
    ("fsvae_psp_mmd_tau_s_2", "FSVAE", _default(psp_mmd, "tau_s"), 2.0),
    ("fsvae_scheduled_p_0.1_to_0.3", "FSVAE main_fsvae.py", FSVAEConfig().scheduled_p,
     [0.1, 0.3]),
    ("fsvae_scheduled_sampling_from_t_5", "FSVAE fsvae_prior.py", FSVAEConfig().scheduled_start,
     5),
    ("fsvae_num_steps_16", "FSVAE NetworkConfigs", FSVAEConfig().num_steps, 16),
    ("fsvae_k_20", "FSVAE NetworkConfigs", FSVAEConfig().k, 20),
    ("fsvae_latent_128", "FSVAE NetworkConfigs", FSVAEConfig().latent_dim, 128),
    ("fsvae_channels_32_64_128_256", "FSVAE fsvae.py", FSVAEConfig().channels,
     [32, 64, 128, 256]),
    ("fsvae_distance_mmd", "FSVAE NetworkConfigs (loss_func mmd)", FSVAEConfig().distance, "mmd"),
    # tts_vqvae: codebook 1024 x 256, beta 0.25, T 4; braincog LIFNode threshold 0.5, tau 2,
    # hard reset; CelebA stage 1 ch 128, ch_mult [1,1,2,2,4], 2 res blocks, attention at 4,
    # z 256, GroupNorm 32, disc weight 0.8 from step 30001; prior T 2, 24 layers, 16 heads, 1024-d
    ("vqvae_codebook_beta_0.25", "tts_vqvae (taming legacy loss)", VQVAEConfig().beta, 0.25),
    ("vqvae_n_embed_1024", "tts_vqvae CelebA config", VQVAEConfig().n_embed, 1024),
    ("vqvae_embed_dim_256", "tts_vqvae CelebA config", VQVAEConfig().embed_dim, 256),
    ("vqvae_time_steps_4", "tts_vqvae CelebA config", VQVAEConfig().time_steps, 4),
    ("vqvae_ch_mult_1_1_2_2_4", "tts_vqvae CelebA config", VQVAEConfig().ch_mult,
     [1, 1, 2, 2, 4]),
    ("vqvae_attn_resolution_4", "tts_vqvae CelebA config", VQVAEConfig().attn_resolutions, [4]),
    ("vqvae_group_norm_32", "tts_vqvae", VQVAEConfig().num_groups, 32),
    ("vqvae_disc_weight_0.8", "tts_vqvae (taming)", VQVAEConfig().disc_weight, 0.8),
    ("vqvae_disc_start_30001", "tts_vqvae CelebA config", VQVAEConfig().disc_start, 30001),
    ("vqvae_upsample_nearest", "tts_vqvae code (not the README)", VQVAEConfig().upsample,
     "nearest"),
    ("braincog_lif_threshold_0.5", "braincog LIFNode", BRAINCOG_LIF["v_threshold"], 0.5),
    ("braincog_lif_tau_2", "braincog LIFNode", BRAINCOG_LIF["tau"], 2.0),
    ("braincog_lif_hard_reset_0", "braincog LIFNode", BRAINCOG_LIF["v_reset"], 0.0),
    ("prior_time_steps_2", "tts_vqvae SnnGPT", PriorConfig().time_steps, 2),
    ("prior_layers_24_heads_16_dim_1024", "tts_vqvae SnnGPT",
     (PriorConfig().n_layer, PriorConfig().n_head, PriorConfig().n_embd), (24, 16, 1024)),
    ("prior_sos_token_0", "tts_vqvae SnnGPT", PriorConfig().sos_token, 0),
    ("prior_temperature_1", "tts_vqvae sampling", PriorConfig().temperature, 1.0),
    # SDDPM: IF threshold 1 hard reset, ATan (alpha 2), T 4, ch 128, ch_mult [1,2,2,4], 2 res
    # blocks, no attention, read-out 0.8^(T-1-t); DDPM linear betas 1e-4..0.02 over 1000 steps
    ("sddpm_if_threshold_1", "SDDPM SpikingUNet.py", SDDPM_IF["v_threshold"], 1.0),
    ("sddpm_if_hard_reset_0", "SDDPM SpikingUNet.py", SDDPM_IF["v_reset"], 0.0),
    ("sddpm_if_atan_alpha_2", "SDDPM (spikingjelly ATan default)", SDDPM_IF["surrogate"],
     {"name": "atan", "alpha": 2.0}),
    ("sddpm_unet_T_4", "SDDPM", UNetConfig().timesteps, 4),
    ("sddpm_unet_readout_decay_0.8", "SDDPM SpikingUNet.py tail", UNetConfig().readout_decay,
     0.8),
    ("sddpm_unet_ch_128_mult_1_2_2_4", "SDDPM", (UNetConfig().ch, UNetConfig().ch_mult),
     (128, [1, 2, 2, 4])),
    ("sddpm_unet_res_blocks_2_no_attn", "SDDPM",
     (UNetConfig().num_res_blocks, UNetConfig().attn), (2, [])),
    ("sddpm_model_T_4", "SDDPM", SDDPMConfig().timesteps, 4),
    ("ddpm_linear_beta_1_1e-4", "Ho et al. 2020 Sec. 4", SDDPMConfig().beta_1, 1e-4),
    ("ddpm_linear_beta_T_0.02", "Ho et al. 2020 Sec. 4", SDDPMConfig().beta_T, 0.02),
    ("ddpm_1000_steps", "Ho et al. 2020 Sec. 4", SDDPMConfig().diffusion_steps, 1000),
    ("ddpm_linear_schedule", "Ho et al. 2020 / SDDPM", SDDPMConfig().beta_schedule, "linear"),
    ("sddpm_sampler_ddpm_all_steps", "SDDPM diffusion.py",
     (SDDPMConfig().solver, SDDPMConfig().sample_steps), ("ddpm", None)),
]


@pytest.mark.parametrize(("actual", "paper"), [(a, p) for _, _, a, p in PAPER_DEFAULTS],
                         ids=[f"{case}-{src.split()[0]}" for case, src, _, _ in PAPER_DEFAULTS])
def test_default_is_the_published_value(actual, paper):
    """The default equals the paper's / original code's value exactly (no tolerance: these are
    literal constants, and a float like 0.2 must be the same double)."""
    assert actual == paper
    assert type(actual) is type(paper)
