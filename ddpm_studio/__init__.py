"""DDPM Studio: train and sample denoising diffusion models on your own images."""

__version__ = "0.1.0"
