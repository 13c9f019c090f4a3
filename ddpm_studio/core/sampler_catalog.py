"""What each sampler is, in one table importable without torch (the GUI builds its form before torch loads).

Every fact that used to be a special case somewhere ("DDPM ignores the steps", "interpolation needs a
deterministic sampler", "dpm++2m-sde's ODE form is dpm++2m") is a field here, so the CLI, the form,
the services and the samplers ask the same question of the same place. The step functions themselves
live in :mod:`ddpm_studio.core.samplers`, which maps these names to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddpm_studio.core.registry import lookup


@dataclass(frozen=True)
class SamplerInfo:
    """One sampler's facts.

    ``uses_steps``: False when the sampler always takes T steps (DDPM), whatever ``steps`` says.
    ``deterministic``: x_T alone determines the image (what interpolation between seeds needs); DDIM is
    deterministic only with η = 0, which :func:`is_deterministic` checks.
    ``ode_form``: for a stochastic solver, the deterministic sampler of the same family (interpolation uses it).
    """

    name: str
    label: str
    uses_steps: bool
    deterministic: bool
    ode_form: str | None
    summary: str


SAMPLERS: dict[str, SamplerInfo] = {
    info.name: info
    for info in (
        SamplerInfo("ddpm", "DDPM (1000 steps)", uses_steps=False, deterministic=False, ode_form=None,
                    summary="the paper's ancestral sampler: always T steps, slow, the reference"),
        SamplerInfo("ddim", "DDIM", uses_steps=True, deterministic=True, ode_form=None,
                    summary="deterministic with η = 0, 10-100 steps"),
        SamplerInfo("dpm++2m", "DPM-Solver++ 2M (ODE)", uses_steps=True, deterministic=True, ode_form=None,
                    summary="DPM-Solver++, deterministic, good in 10-25 steps on well-trained models"),
        SamplerInfo("dpm++2m-sde", "DPM-Solver++ 2M SDE", uses_steps=True, deterministic=False, ode_form="dpm++2m",
                    summary="its stochastic form, which corrects more of a small model's errors (20-50 steps)"),
    )
}

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)


def sampler_info(name: str) -> SamplerInfo:
    """The facts of sampler ``name``; ValueError naming the choices when there is no such sampler."""
    return lookup(SAMPLERS, name, "sampler")


def uses_steps(name: str) -> bool:
    """Whether the Steps setting changes what sampler ``name`` does (DDPM always takes T steps)."""
    return sampler_info(name).uses_steps


def is_deterministic(name: str, eta: float = 0.0) -> bool:
    """True when x_T fully determines the sample (DDIM only with η = 0)."""
    return sampler_info(name).deterministic and (name != "ddim" or eta == 0)


def steps_label(name: str, steps: int) -> str:
    """How a sampler and its step count are named in folder names and reports: ``ddpm``, ``dpm++2m-sde20``."""
    return name + (str(steps) if uses_steps(name) else "")
