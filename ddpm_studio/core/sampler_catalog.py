"""What each sampler and timestep spacing is, in one table importable without torch (the GUI builds its form
before torch loads).

Every fact that used to be a special case somewhere ("DDPM ignores the steps", "interpolation needs a
deterministic sampler", "dpm++2m-sde's ODE form is dpm++2m") is a field here, so the CLI, the form,
the services and the samplers ask the same question of the same place. The step functions themselves
live in :mod:`ddpm_studio.core.samplers`, which maps these names to them. The summaries become the help
texts of the sampler and spacing settings, so they say when to use each.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddpm_studio.core.registry import lookup


@dataclass(frozen=True)
class SamplerInfo:
    """One sampler's facts.

    ``uses_steps``: False when the sampler always takes T steps (DDPM), whatever ``steps`` says.
    ``deterministic``: x_T alone determines the image (what interpolation between seeds needs).
    ``uses_eta``: the DDIM η setting applies (then the sampler is deterministic only with η = 0).
    ``ode_form``: for a stochastic solver, the deterministic sampler of the same family (interpolation uses it).
    """

    name: str
    label: str
    uses_steps: bool
    deterministic: bool
    ode_form: str | None
    summary: str
    uses_eta: bool = False


SAMPLERS: dict[str, SamplerInfo] = {
    info.name: info
    for info in (
        SamplerInfo("ddpm", "DDPM (1000 steps)", uses_steps=False, deterministic=False, ode_form=None,
                    summary="the paper's ancestral sampler: always T steps, slow, the reference"),
        SamplerInfo("ddim", "DDIM", uses_steps=True, deterministic=True, ode_form=None, uses_eta=True,
                    summary="deterministic with η = 0, 10-100 steps; the simplest few-step sampler"),
        SamplerInfo("dpm++2m", "DPM-Solver++ 2M (ODE)", uses_steps=True, deterministic=True, ode_form=None,
                    summary="DPM-Solver++, deterministic, good in 10-25 steps on well-trained models"),
        SamplerInfo("dpm++2m-sde", "DPM-Solver++ 2M SDE", uses_steps=True, deterministic=False, ode_form="dpm++2m",
                    summary="its stochastic form, which corrects more of a small model's errors (10-50 steps)"),
        SamplerInfo("dpm++3m", "DPM-Solver++ 3M (ODE)", uses_steps=True, deterministic=True, ode_form=None,
                    summary="third-order DPM-Solver++, deterministic: closer to the exact ODE than 2M at 10-20 steps "
                            "on well-trained models"),
        SamplerInfo("dpm++3m-sde", "DPM-Solver++ 3M SDE", uses_steps=True, deterministic=False, ode_form="dpm++3m",
                    summary="its stochastic form: like dpm++2m-sde, for small or young models; under 20 steps only "
                            "with trailing spacing (karras and logsnr give off colours there)"),
        SamplerInfo("unipc", "UniPC-3", uses_steps=True, deterministic=True, ode_form=None,
                    summary="UniPC (bh2, order 3 with its corrector), deterministic: among the best ODE solvers at "
                            "5-10 steps on well-trained models"),
        SamplerInfo("ipndm", "iPNDM-4", uses_steps=True, deterministic=True, ode_form=None,
                    summary="improved PNDM (4th-order Adams-Bashforth on ε), deterministic: strong at 5-10 steps with "
                            "karras spacing on well-trained models"),
    )
}

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)

#: Which timesteps a sampler visits, and when each is the right choice.
SPACING_SUMMARIES: dict[str, str] = {
    "uniform": "every T/N-th timestep from 0 (DDIM's 'leading'); starts below T-1, weak under 20 steps",
    "quadratic": "DDIM's quadratic spacing, denser near the data",
    "trailing": "every T/N-th timestep ending at T-1 (Lin et al. 2023); the default: at 5-20 steps the best of "
                "the three on the default v-prediction model, and safe at any step count",
    "karras": "noise levels spaced as Karras et al. 2022 (ρ = 7): short steps near the data; for 20 steps and more",
    "logsnr": "uniform in log-SNR (DPM-Solver's choice); the best at 10 steps on an ε-prediction model, behind "
              "trailing on the default v-prediction model; for 10 steps and more",
}
SPACINGS: tuple[str, ...] = tuple(SPACING_SUMMARIES)
#: Spacings defined on the noise level σ, not on t: they need the schedule to pick timesteps.
NOISE_LEVEL_SPACINGS: tuple[str, ...] = ("karras", "logsnr")


def sampler_info(name: str) -> SamplerInfo:
    """The facts of sampler ``name``; ValueError naming the choices when there is no such sampler."""
    return lookup(SAMPLERS, name, "sampler")


def uses_steps(name: str) -> bool:
    """Whether the Steps setting changes what sampler ``name`` does (DDPM always takes T steps)."""
    return sampler_info(name).uses_steps


def is_deterministic(name: str, eta: float = 0.0) -> bool:
    """True when x_T fully determines the sample (DDIM only with η = 0)."""
    info = sampler_info(name)
    return info.deterministic and (not info.uses_eta or eta == 0)


def deterministic_samplers() -> tuple[str, ...]:
    """The samplers interpolation can use as they are (DDIM with η = 0)."""
    return tuple(info.name for info in SAMPLERS.values() if info.deterministic)


def steps_label(name: str, steps: int) -> str:
    """How a sampler and its step count are named in folder names and reports: ``ddpm``, ``dpm++2m-sde20``."""
    return name + (str(steps) if uses_steps(name) else "")


def sampler_help() -> str:
    """The Sampler setting's help text: one clause per sampler, from the summaries above."""
    return "; ".join(f"{info.name}: {info.summary}" for info in SAMPLERS.values()) + "."


def spacing_help() -> str:
    """The Timestep spacing setting's help text."""
    return ("Which timesteps a few-step sampler visits (DDPM always visits all T). "
            + "; ".join(f"{name}: {text}" for name, text in SPACING_SUMMARIES.items()) + ".")
