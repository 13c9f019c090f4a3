"""Names of the modelling choices, importable without torch (the GUI builds its form before torch loads)."""

from ddpm_studio.core.sampler_catalog import SAMPLER_NAMES, SPACINGS  # noqa: F401 - the registry is the one source

VARIANCES = ("beta_tilde", "beta")
LOSS_TYPES = ("mse", "l1", "huber")
#: What the network predicts: the noise ε (Ho et al.) or the velocity v = √ᾱ ε - √(1-ᾱ) x_0 (Salimans & Ho 2022).
PREDICTIONS = ("epsilon", "v")
BETA_SCHEDULE_NAMES = ("linear", "cosine")
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
PRECISION_CHOICES = ("auto", "off", "bf16", "fp16")
#: The loss is logged per bucket of t: quarters of [0, T), as improved-diffusion logs q0..q3.
TIMESTEP_BUCKETS = 4
