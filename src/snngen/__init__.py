"""snngen: spiking-neural-network generative models under one API and one CLI."""

__version__ = "0.1.0"
