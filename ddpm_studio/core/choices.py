"""Names of the modelling choices, importable without torch (the GUI builds its form before torch loads)."""

from ddpm_studio.core.sampler_catalog import SAMPLER_NAMES, SPACINGS  # noqa: F401 - the registry is the one source

VARIANCES = ("beta_tilde", "beta")
LOSS_TYPES = ("mse", "l1", "huber")
#: What the network predicts: the noise ε (Ho et al.) or the velocity v = √ᾱ ε - √(1-ᾱ) x_0 (Salimans & Ho 2022).
PREDICTIONS = ("epsilon", "v")
BETA_SCHEDULE_NAMES = ("linear", "cosine")
#: How a U-Net downsample pads before its stride-2 conv: one pixel on every side (our models), or only on the
#: right and bottom, as TensorFlow's SAME padding did in the paper's code and so in the google/ddpm-* weights.
DOWNSAMPLE_PADDINGS = ("symmetric", "tf")
#: Which noise levels training visits: every t equally often (Ho et al.), or EDM's log-normal σ (Karras et al. 2022).
NOISE_LEVELS = ("uniform", "lognormal")
#: How the loss at each noise level is weighted: equally, Min-SNR-γ (Hang et al. 2023), or EDM's λ(σ).
LOSS_WEIGHTINGS = ("uniform", "min-snr", "edm")
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
PRECISION_CHOICES = ("auto", "off", "bf16", "fp16")
#: The loss is logged per bucket of t: quarters of [0, T), as improved-diffusion logs q0..q3.
TIMESTEP_BUCKETS = 4
#: How self-attention is computed: PyTorch's fused scaled_dot_product_attention, or plain matmul + softmax
#: (core.unet_blocks.attention); "auto" is SDPA except on Apple's MPS, where a timing at start picks the faster.
ATTENTION_IMPLS = ("sdpa", "math")
ATTENTION_CHOICES = ("auto", *ATTENTION_IMPLS)
#: torch.compile for the training forward and backward: off (eager), inductor's default, or reduce-overhead
#: (the same plus CUDA graphs, which replay a step's kernels with one launch).
COMPILE_CHOICES = ("off", "default", "reduce-overhead")
