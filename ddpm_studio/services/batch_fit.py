"""Out of memory: recognise it, say what to try, and find the largest micro-batch that fits.

A training step that runs out of device memory should end with a message naming a batch size that is
likely to fit, not a stack trace. :func:`smaller_batch` is that suggestion: the micro-batch halved (or
the next smaller divisor) with gradient accumulation raised so the *effective* batch, and so the
training dynamics, stay the same. :func:`fit_batch` applies it repeatedly, calling a probe (one real
forward and backward pass at the given micro-batch) until one fits; :func:`probe_training_step` is
that probe for a run's settings. Qt-free and torch-light: torch is imported only inside the probe.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: The most micro-batches the config allows per step (OptimConfig.grad_accum's maximum).
MAX_GRAD_ACCUM = 256


class BatchFitError(RuntimeError):
    """Not even a micro-batch of one fits; ``str()`` is for the user."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA's OutOfMemoryError, MPS's and CPU allocators' RuntimeErrors, and MemoryError."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "cannot allocate memory" in text)


def smaller_batch(batch_size: int, grad_accum: int = 1) -> tuple[int, int] | None:
    """The next (micro-batch, accumulation) to try after running out of memory, with the same effective batch.

    The largest divisor of the effective batch that is at most half the current micro-batch; None when the
    micro-batch is already 1 or the accumulation would exceed :data:`MAX_GRAD_ACCUM`.
    """
    effective = batch_size * grad_accum
    for micro in range(batch_size // 2, 0, -1):
        if effective % micro == 0:
            accum = effective // micro
            return (micro, accum) if accum <= MAX_GRAD_ACCUM else None
    return None


def oom_advice(batch_size: int, grad_accum: int = 1) -> str:
    """A sentence with the flags to try next, e.g. "try --batch-size 16 --grad-accum 2 (the same 32 images per step)"."""
    nxt = smaller_batch(batch_size, grad_accum)
    if nxt is None:
        return "the batch size is already 1: choose a smaller model preset or image size"
    micro, accum = nxt
    return (f"try --batch-size {micro} --grad-accum {accum} (the same {batch_size * grad_accum} images per step), "
            "or a smaller model preset or image size")


@dataclass(frozen=True)
class BatchFit:
    """What :func:`fit_batch` found: the micro-batch and accumulation that fit, and every size tried."""

    batch_size: int
    grad_accum: int
    tried: tuple[tuple[int, bool], ...]  # (micro-batch, fitted)

    @property
    def effective(self) -> int:
        return self.batch_size * self.grad_accum


def fit_batch(batch_size: int, grad_accum: int, probe: Callable[[int], None]) -> BatchFit:
    """Halve the micro-batch (raising accumulation) until ``probe(micro_batch)`` stops running out of memory.

    ``probe`` raises an out-of-memory error (see :func:`is_out_of_memory`) when a micro-batch does not fit;
    any other exception propagates. Raises :class:`BatchFitError` when not even the smallest fits.
    """
    tried: list[tuple[int, bool]] = []
    micro, accum = batch_size, grad_accum
    while True:
        try:
            probe(micro)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            tried.append((micro, False))
            log.info("A micro-batch of %d does not fit in memory", micro)
            nxt = smaller_batch(micro, accum)
            if nxt is None:
                raise BatchFitError(
                    f"Not even a micro-batch of {micro} fits in memory (tried {', '.join(str(m) for m, _ in tried)}): "
                    "choose a smaller model preset or image size"
                ) from None
            micro, accum = nxt
            continue
        tried.append((micro, True))
        return BatchFit(micro, accum, tuple(tried))


def probe_training_step(cfg: Any, device: Any = None) -> Callable[[int], None]:
    """A probe for :func:`fit_batch`: one forward and backward pass of ``cfg``'s network (AdamW state included)
    on ``device`` at a given micro-batch, with random images; memory is released after each try."""
    import torch

    from ddpm_studio.core.device import choose_device
    from ddpm_studio.core.objectives import per_sample_loss
    from ddpm_studio.services.model_factory import build_model

    choice = device or choose_device(cfg.optim.device, cfg.optim.mixed_precision)
    dev = choice.device

    def probe(micro: int) -> None:
        model = opt = x = t = loss = None
        try:
            model = build_model(cfg).to(dev)
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
            shape = (micro, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
            x = torch.randn(shape, device=dev)
            t = torch.randint(0, cfg.diffusion.timesteps, (micro,), device=dev)
            with choice.autocast():
                eps = model(x, t)
            loss = per_sample_loss(eps.float(), x, cfg.diffusion.loss).mean()
            loss.backward()
            opt.step()  # the optimizer's moments are part of the peak
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
        finally:
            del model, opt, x, t, loss
            if dev.type == "cuda":
                torch.cuda.empty_cache()

    return probe


def fit_config(cfg: Any, probe: Callable[[int], None] | None = None) -> tuple[Any, BatchFit]:
    """``cfg`` with the largest micro-batch that fits (same effective batch), and what was tried."""
    fit = fit_batch(cfg.optim.batch_size, cfg.optim.grad_accum, probe or probe_training_step(cfg))
    optim = dataclasses.replace(cfg.optim, batch_size=fit.batch_size, grad_accum=fit.grad_accum)
    return dataclasses.replace(cfg, optim=optim), fit
