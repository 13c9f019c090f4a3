"""What the app says about a sampler, from the sampler catalog: when Steps applies, and what a job really runs."""

from __future__ import annotations

from ddpm_studio.core.sampler_catalog import sampler_info
from ddpm_studio.services.formatting import format_duration


def steps_reason(sampler: str) -> str:
    """Why a Steps field does not apply to ``sampler`` ("" when it does): the tooltip of the disabled field."""
    info = sampler_info(sampler)
    if info.uses_steps:
        return ""
    return f"{info.label} always takes all T steps of the model's schedule, so Steps does not apply ({info.summary})."


def sampling_progress(sampler: str, done: int, total: int, batch: int, batches: int, eta: float) -> str:
    """The progress line of a sampling job, naming the steps that really run (all T of them for DDPM)."""
    per_batch = total // max(1, batches)
    return (f"{sampler}, {per_batch:,} steps · step {done:,} / {total:,} · batch {batch}/{batches} · "
            f"ETA {format_duration(eta)}")
