"""Speed measures of a training run that leave what it computes alone: the data set kept on the GPU, and
what to tell the user when torch.compile fails on their machine.

(The others live where they act: results read in batches and bad steps refused on the device in
:mod:`ddpm_studio.services.step_results`; channels_last, compile and the fused optimizer in the session's setup.)
"""

from __future__ import annotations

import torch

#: A data set is kept on the GPU when it takes at most this share of the GPU's free memory (the rest is for
#: the model, its optimizer state, activations and the allocator's slack).
RESIDENT_SHARE = 0.25


def resident_images(images: torch.Tensor, device: torch.device) -> torch.Tensor | bool:
    """``images`` (uint8, N x C x H x W) copied once to a CUDA ``device`` when they fit; False otherwise (CPU, MPS,
    too large), and the batches are then gathered on the host and copied each step, as on a CPU."""
    if device.type != "cuda":
        return False
    free, _total = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() > RESIDENT_SHARE * free:
        return False
    return images.to(device)


def compile_failure(exc: BaseException) -> str | None:
    """A message for an error raised by torch.compile (dynamo or inductor), or None for any other error."""
    dynamo_exc = getattr(getattr(torch, "_dynamo", None), "exc", None)
    base = getattr(dynamo_exc, "TorchDynamoException", None)
    if base is None or not isinstance(exc, base):
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"torch.compile failed on this machine ({type(exc).__name__}: {first}). Set Compile to off "
            "(--compile off) and resume from the last checkpoint; it trains the same model, only slower.")
