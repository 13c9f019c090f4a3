"""Names of the modelling choices, importable without torch (the GUI builds its form before torch loads)."""

from ddpm_studio.core.sampler_catalog import SAMPLER_NAMES  # noqa: F401 - the registry is the one source

#: Samplers that map x_T to x_0 deterministically (interpolation needs one; DDIM only with η = 0).
DETERMINISTIC_SAMPLERS = ("ddim", "dpm++2m")
SPACINGS = ("uniform", "quadratic", "trailing")
VARIANCES = ("beta_tilde", "beta")
LOSS_TYPES = ("mse", "l1", "huber")
#: What the network predicts: the noise ε (Ho et al.) or the velocity v = √ᾱ ε - √(1-ᾱ) x_0 (Salimans & Ho 2022).
PREDICTIONS = ("epsilon", "v")
BETA_SCHEDULE_NAMES = ("linear", "cosine")
#: Which noise levels training visits: every t equally often (Ho et al.), or EDM's log-normal σ (Karras et al. 2022).
NOISE_LEVELS = ("uniform", "lognormal")
#: How the loss at each noise level is weighted: equally, Min-SNR-γ (Hang et al. 2023), or EDM's λ(σ).
LOSS_WEIGHTINGS = ("uniform", "min-snr", "edm")
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
PRECISION_CHOICES = ("auto", "off", "bf16", "fp16")
#: The loss is logged per bucket of t: quarters of [0, T), as improved-diffusion logs q0..q3.
TIMESTEP_BUCKETS = 4
