"""A small spiking VAE for snngen, installed as a plug-in (see ``docs/extending.md``)."""

from spiking_vae_example.model import TinySpikingVAE, TinySpikingVAEConfig

__all__ = ["TinySpikingVAE", "TinySpikingVAEConfig"]
