"""Sampler contract tests: every sampler is exercised with a cheap analytic denoiser, no U-Net.

The analytic denoiser is the exact ε of a Gaussian data set, for which the probability-flow ODE has a closed-form
solution: that checks the solvers against the maths (agreement where theory says two samplers are the same step,
and the measured order of accuracy as the steps shrink).
"""

import math

import numpy as np
import pytest
import torch

from ddpm_studio.core import sampler_catalog as catalog
from ddpm_studio.core.samplers import (
    SAMPLER_NAMES,
    SPACINGS,
    STEP_FUNCTIONS,
    SamplerSpec,
    iter_sampler,
    timestep_sequence,
)
from ddpm_studio.core.samplers import dpm_solver as dpm_module
from ddpm_studio.core.samplers.base import SIGMA_MAX, noise_level_sequence
from ddpm_studio.core.samplers.ddim import ddim_steps
from ddpm_studio.core.samplers.ddpm import ddpm_steps
from ddpm_studio.core.samplers.dpm_solver import dpm_solver_steps
from ddpm_studio.core.samplers.ipndm import ipndm_steps
from ddpm_studio.core.samplers.unipc import unipc_steps
from ddpm_studio.core.schedules import NoiseSchedule

SCHED = NoiseSchedule.create("linear", 100)
FEW_STEP = [name for name in SAMPLER_NAMES if catalog.uses_steps(name)]
MU, VAR = 0.3, 0.25


def gaussian_denoiser(schedule, mu=MU, var=VAR):
    """The exact ε for data ~ N(mu, var): lets us check samplers against theory."""

    def denoise(x, t):
        ac = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        # E[x0 | x_t] for Gaussian data, then ε = (x_t - √ᾱ x̂0)/√(1-ᾱ)
        x0 = mu + (ac.sqrt() * var) / (ac * var + 1 - ac) * (x - ac.sqrt() * mu)
        return (x - ac.sqrt() * x0) / (1 - ac).sqrt()

    return denoise


def exact_ode(schedule, x_start, t_start, t_end, mu=MU, var=VAR):
    """The probability-flow ODE for Gaussian data is the monotone transport between the marginals
    N(√ᾱ μ, ᾱ v + 1 - ᾱ): (x - √ᾱ μ)/√(ᾱ v + 1 - ᾱ) stays constant along a trajectory."""
    a_s, a_e = (float(schedule.alphas_cumprod[t].double()) for t in (t_start, t_end))
    z = (x_start - math.sqrt(a_s) * mu) / math.sqrt(a_s * var + 1 - a_s)
    return math.sqrt(a_e) * mu + math.sqrt(a_e * var + 1 - a_e) * z


def run(spec, seed=0, n=4, denoise=None, sched=SCHED):
    x_T = torch.randn((n, 1, 4, 4), generator=torch.Generator().manual_seed(seed))
    return list(iter_sampler(spec, denoise or gaussian_denoiser(sched), sched, x_T, torch.Generator().manual_seed(seed + 1)))


# -- the registry ---------------------------------------------------------------------------------------------
def test_every_catalog_sampler_has_a_step_function_and_its_facts_hold():
    assert set(STEP_FUNCTIONS) == set(SAMPLER_NAMES) == set(catalog.SAMPLERS)
    for name, info in catalog.SAMPLERS.items():
        assert SamplerSpec(name).deterministic == info.deterministic
        if info.ode_form:  # a stochastic solver's ODE form is a deterministic sampler of the catalog
            assert not info.deterministic and catalog.is_deterministic(info.ode_form)
        if info.deterministic and not info.uses_eta:  # same noise, other generator seed: same images
            a, b = run(SamplerSpec(name, 10), seed=0), run(SamplerSpec(name, 10), seed=0)
            torch.testing.assert_close(a[-1].x_next, b[-1].x_next, rtol=0, atol=0)
    assert not SamplerSpec("ddim", eta=0.5).deterministic and SamplerSpec("ddim", eta=0.0).deterministic
    with pytest.raises(ValueError, match="Unknown sampler 'nope'"):
        iter_sampler(SamplerSpec("nope"), gaussian_denoiser(SCHED), SCHED, torch.zeros(1, 1, 2, 2))


def test_catalog_help_texts_name_every_sampler_and_spacing():
    assert all(f"{name}:" in catalog.sampler_help() for name in SAMPLER_NAMES)
    assert all(f"{name}:" in catalog.spacing_help() for name in SPACINGS)
    assert catalog.steps_label("ddpm", 20) == "ddpm" and catalog.steps_label("unipc", 10) == "unipc10"


# -- the contract every sampler keeps -------------------------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_contract_shapes_determinism_frames(name, spacing):
    spec = SamplerSpec(name=name, num_steps=20, eta=0.5, spacing=spacing)
    a, b, c = run(spec, 0), run(spec, 0), run(spec, 1)
    assert len(a) == spec.steps_for(100) == len(spec.timesteps(SCHED))
    assert [s.t for s in a] == spec.timesteps(SCHED)
    assert [s.index for s in a] == list(range(len(a)))
    assert all(s.total == len(a) for s in a)
    assert all(s.x_next.shape == (4, 1, 4, 4) and s.x0_pred.shape == (4, 1, 4, 4) for s in a)
    assert [s.t for s in a] == sorted({s.t for s in a}, reverse=True)
    torch.testing.assert_close(a[-1].x_next, b[-1].x_next, rtol=0, atol=0)  # same seeds, same images
    assert not torch.allclose(a[-1].x_next, c[-1].x_next)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_closing_early_stops_the_model_calls(name):
    calls = []
    den = gaussian_denoiser(SCHED)

    def counting(x, t):
        calls.append(int(t[0]))
        return den(x, t)

    gen = iter_sampler(SamplerSpec(name, 20, spacing="karras"), counting, SCHED, torch.randn(2, 1, 4, 4))
    first = [next(gen) for _ in range(3)]
    gen.close()
    assert len(calls) == 3 and [s.t for s in first] == calls
    with pytest.raises(StopIteration):
        next(gen)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_last_step_adds_no_noise(name):
    """The final x_0 is a deterministic function of the previous state, even with η = 1."""
    steps = run(SamplerSpec(name=name, num_steps=10, eta=1.0))
    last, prev = steps[-1], steps[-2]
    t0 = torch.zeros(4, dtype=torch.long)
    if name == "ddpm":
        expected, _, _ = SCHED.q_posterior(last.x0_pred, prev.x_next, t0)
    else:  # every few-step sampler ends with the step to σ = 0: x_0 = x̂_0
        expected = last.x0_pred
    torch.testing.assert_close(last.x_next, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 5, 37, 100])
def test_every_sampler_spacing_and_step_count(name, spacing, steps):
    """1 to T steps with every spacing: one record per model call, descending t, finite output."""
    spec = SamplerSpec(name=name, num_steps=steps, spacing=spacing, eta=0.5)
    out = run(spec, n=2)
    expected = (timestep_sequence(100, steps, spacing, SCHED.alphas_cumprod) if name != "ddpm"
                else list(range(99, -1, -1)))
    assert [s.t for s in out] == expected and len(out) == spec.steps_for(100)
    assert all(torch.isfinite(s.x_next).all() and torch.isfinite(s.x0_pred).all() for s in out)


def test_samplers_recover_gaussian_data_distribution():
    """With the exact denoiser every sampler reaches the data's mean and variance (DDPM in its 1000 steps, the
    higher-order ODE solvers at 20 steps of uniform or log-SNR spacing, DDIM, the SDE solvers and Karras spacing
    (few steps where this data's x̂_0 changes, at σ̃ ≈ 0.5) at 50)."""
    sched = NoiseSchedule.create("linear", 1000)
    den = gaussian_denoiser(sched)
    x_T = torch.randn((2000, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    for name in SAMPLER_NAMES:
        for spacing in ("uniform", "karras", "logsnr") if catalog.uses_steps(name) else ("uniform",):
            few = catalog.is_deterministic(name) and name != "ddim" and spacing != "karras"
            spec = SamplerSpec(name, 20 if few else 50, spacing=spacing, clip_x0=False)
            out = list(iter_sampler(spec, den, sched, x_T, torch.Generator().manual_seed(1)))[-1].x_next
            assert out.mean().item() == pytest.approx(MU, abs=0.03), (name, spacing)
            assert out.var().item() == pytest.approx(VAR, rel=0.1), (name, spacing)


# -- timestep spacings ----------------------------------------------------------------------------------------
def test_timestep_sequences():
    assert timestep_sequence(1000, 10, "trailing") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert timestep_sequence(1000, 10, "uniform") == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    quad = timestep_sequence(1000, 10, "quadratic")
    assert quad[-1] == 0 and len(quad) == 10
    assert timestep_sequence(100, 100, "uniform") == list(range(99, -1, -1))
    with pytest.raises(ValueError, match="between 1 and 100"):
        timestep_sequence(100, 0)
    with pytest.raises(ValueError, match="needs the noise schedule"):
        timestep_sequence(100, 10, "karras")
    with pytest.raises(ValueError, match="Unknown timestep spacing"):
        timestep_sequence(100, 10, "cubic")


def _sigma(schedule, t):
    a = schedule.alphas_cumprod.double()[t]
    return ((1 - a) / a).sqrt().numpy()


def nearest_timesteps(schedule, targets_log_sigma):
    """The trained timestep nearest in λ = -log σ̃ to each target, by brute force."""
    log_sigma = np.log(_sigma(schedule, torch.arange(schedule.num_timesteps)))
    return [int(np.abs(log_sigma - target).argmin()) for target in targets_log_sigma]


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_noise_level_spacings_follow_their_formula_on_trained_timesteps(schedule_name):
    """Karras ρ = 7 (eq. 5) and uniform log-SNR, from the noisiest t with σ̃ ≤ 80 down to t = 0: each level is the
    trained t nearest to the formula's, until levels crowd closer than the trained timesteps near t = 0, where
    they are pushed apart into exactly N distinct descending timesteps."""
    sched = NoiseSchedule.create(schedule_name, 1000)
    sigma_all = _sigma(sched, torch.arange(1000))
    start = int(np.nonzero(sigma_all <= SIGMA_MAX)[0].max())
    assert start < 999  # both schedules go beyond σ̃ = 80 (linear: 157, cosine: 20,000) at t = 999
    s_max, s_min = sigma_all[start], sigma_all[0]
    for n in (5, 10, 20, 50):
        frac = np.linspace(0, 1, n)
        formulas = {
            "karras": 7 * np.log(s_max ** (1 / 7) + frac * (s_min ** (1 / 7) - s_max ** (1 / 7))),
            "logsnr": np.log(s_max) + frac * (np.log(s_min) - np.log(s_max)),
        }
        for spacing, log_sigma in formulas.items():
            seq = noise_level_sequence(sched.alphas_cumprod, n, spacing)
            assert len(seq) == n and seq[0] == start and seq[-1] == 0 and seq == sorted(set(seq), reverse=True)
            nearest = nearest_timesteps(sched, log_sigma)
            moved = [i for i in range(n) if seq[i] != nearest[i]]
            assert all(i >= 0.75 * n for i in moved), (spacing, n, moved)  # only the last few are pushed …
            assert all(0 < seq[i] - nearest[i] <= n - 1 - i for i in moved), (spacing, n)  # … up, by little


def test_noise_level_spacing_covers_every_timestep_when_steps_equal_t():
    assert noise_level_sequence(SCHED.alphas_cumprod, 100, "karras") == list(range(99, -1, -1))
    start = noise_level_sequence(SCHED.alphas_cumprod, 2, "logsnr")[0]
    assert noise_level_sequence(SCHED.alphas_cumprod, 1, "logsnr") == [start] and 80 < start < 99


# -- agreement where the maths says two samplers take the same step -------------------------------------------
def test_ddim_eta1_all_steps_equals_ddpm_beta_tilde():
    x_T = torch.randn((6, 2, 4, 4), generator=torch.Generator().manual_seed(3))
    den = gaussian_denoiser(SCHED)
    a = list(ddpm_steps(den, SCHED, x_T, generator=torch.Generator().manual_seed(9), variance="beta_tilde"))
    b = list(ddim_steps(den, SCHED, x_T, list(range(99, -1, -1)), eta=1.0, generator=torch.Generator().manual_seed(9)))
    assert [s.t for s in a] == [s.t for s in b] == list(range(99, -1, -1))
    for sa, sb in zip(a, b, strict=True):
        torch.testing.assert_close(sa.x_next, sb.x_next, rtol=1e-4, atol=1e-4)


def _sequences():
    for spacing in SPACINGS:
        for steps in (5, 20, 100):
            yield timestep_sequence(100, steps, spacing, SCHED.alphas_cumprod)


def test_first_order_forms_are_ddim_eta0():
    """DPM-Solver++(1) (Lu et al. 2022, §4.1), UniP-1 without its corrector and iPNDM's Euler step in σ̃ are all
    DDIM with η = 0; the multistep solvers' first step is that same step."""
    x_T = torch.randn((3, 2, 4, 4), generator=torch.Generator().manual_seed(4))
    den = gaussian_denoiser(SCHED)
    for seq in _sequences():
        ddim = list(ddim_steps(den, SCHED, x_T, seq, clip_x0=False))
        for first in (dpm_solver_steps(den, SCHED, x_T, seq, order=1, clip_x0=False),
                      unipc_steps(den, SCHED, x_T, seq, order=1, corrector=False, clip_x0=False),
                      ipndm_steps(den, SCHED, x_T, seq, order=1, clip_x0=False)):
            for a, b in zip(ddim, first, strict=True):
                torch.testing.assert_close(a.x_next, b.x_next, rtol=1e-4, atol=1e-5)
        for higher in (dpm_solver_steps(den, SCHED, x_T, seq, order=3, clip_x0=False),
                       unipc_steps(den, SCHED, x_T, seq, clip_x0=False), ipndm_steps(den, SCHED, x_T, seq, clip_x0=False)):
            torch.testing.assert_close(next(higher).x_next, ddim[0].x_next, rtol=1e-5, atol=1e-6)


def test_sde_dpm_solver_first_order_is_ddim_eta1():
    """SDE-DPM-Solver++(1) is DDIM with η = 1 (the same x_0 and x_t coefficients and noise variance
    (σ_next/σ_t)² (ᾱ_next - ᾱ_t)/ᾱ_next): with the same noise draws the trajectories agree."""
    x_T = torch.randn((3, 2, 4, 4), generator=torch.Generator().manual_seed(4))
    den = gaussian_denoiser(SCHED)
    for seq in _sequences():
        ddim = list(ddim_steps(den, SCHED, x_T, seq, eta=1.0, generator=torch.Generator().manual_seed(7)))
        sde = list(dpm_solver_steps(den, SCHED, x_T, seq, order=1, stochastic=True,
                                    generator=torch.Generator().manual_seed(7)))
        for a, b in zip(ddim, sde, strict=True):
            torch.testing.assert_close(a.x_next, b.x_next, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stochastic", [False, True])
def test_3m_warms_up_through_the_2m_steps(stochastic):
    """3M takes 2M's first two steps (first order, then the 2M midpoint step) before it has three predictions."""
    x_T = torch.randn((3, 2, 4, 4), generator=torch.Generator().manual_seed(4))
    seq = timestep_sequence(100, 20, "logsnr", SCHED.alphas_cumprod)
    den = gaussian_denoiser(SCHED)
    runs = [list(dpm_solver_steps(den, SCHED, x_T, seq, order=k, stochastic=stochastic,
                                  generator=torch.Generator().manual_seed(2))) for k in (2, 3)]
    for k in (0, 1):
        torch.testing.assert_close(runs[0][k].x_next, runs[1][k].x_next, rtol=0, atol=0)
    assert not torch.allclose(runs[0][2].x_next, runs[1][2].x_next)


def test_unipc_corrector_changes_the_path_but_not_the_model_call_count():
    x_T = torch.randn((3, 2, 4, 4), generator=torch.Generator().manual_seed(4))
    seq = timestep_sequence(100, 10, "logsnr", SCHED.alphas_cumprod)
    den = gaussian_denoiser(SCHED)
    with_c = list(unipc_steps(den, SCHED, x_T, seq))
    without = list(unipc_steps(den, SCHED, x_T, seq, corrector=False))
    assert len(with_c) == len(without) == 10
    torch.testing.assert_close(with_c[0].x_next, without[0].x_next)  # nothing to correct before the 2nd call
    assert not torch.allclose(with_c[2].x_next, without[2].x_next)


# -- order of accuracy on the exact ODE -----------------------------------------------------------------------
def log_snr_linear_schedule(timesteps=4000, lam_max=5.0, lam_min=-5.0):
    """A schedule whose λ falls linearly in t, so every spacing maps onto evenly resolved trained timesteps (the
    DDPM schedules resolve λ coarsely near t = 0, which would put a floor under the errors of fine spacings)."""
    lam = np.linspace(lam_max, lam_min, timesteps)
    alpha_bar = 1.0 / (1.0 + np.exp(-2.0 * lam))
    betas = 1.0 - alpha_bar / np.append(1.0, alpha_bar[:-1])
    return NoiseSchedule.from_betas("log-snr-linear", betas)


ORDER_SCHED = log_snr_linear_schedule()
ORDER_STEPS = (16, 32, 64, 128)


def ode_errors(make_steps, spacing="logsnr"):
    """Max error at the last visited timestep (before the final jump to σ = 0) against the exact ODE solution, for
    N = 16..128 steps (at 8 steps of h ≈ 1.3 in λ the errors are not yet in their asymptotic regime); float64
    samples so round-off does not hide the convergence."""
    den = gaussian_denoiser(ORDER_SCHED)
    x_T = torch.linspace(-2.5, 2.5, 64, dtype=torch.float64).view(64, 1, 1, 1)
    errors = []
    for n in ORDER_STEPS:
        seq = timestep_sequence(ORDER_SCHED.num_timesteps, n, spacing, ORDER_SCHED.alphas_cumprod)
        steps = list(make_steps(den, x_T, seq))
        exact = exact_ode(ORDER_SCHED, x_T, seq[0], seq[-1])
        errors.append((steps[-2].x_next - exact).abs().max().item())
    return errors


def observed_order(errors):
    """Least-squares slope of log error against log N."""
    return -float(np.polyfit(np.log(ORDER_STEPS), np.log(errors), 1)[0])


SOLVERS = {
    "ddim": (lambda den, x, seq: ddim_steps(den, ORDER_SCHED, x, seq, clip_x0=False), 1.0),
    "dpm++2m": (lambda den, x, seq: dpm_solver_steps(den, ORDER_SCHED, x, seq, order=2, clip_x0=False), 2.0),
    "dpm++3m": (lambda den, x, seq: dpm_solver_steps(den, ORDER_SCHED, x, seq, order=3, clip_x0=False), 3.0),
    "unipc": (lambda den, x, seq: unipc_steps(den, ORDER_SCHED, x, seq, order=3, clip_x0=False), 3.0),
    # Fixed Adams-Bashforth weights on unequal steps: second order whatever the history (ipndm.py, step 2).
    "ipndm": (lambda den, x, seq: ipndm_steps(den, ORDER_SCHED, x, seq, order=4, clip_x0=False), 2.0),
}


@pytest.mark.parametrize("name", SOLVERS)
def test_ode_solvers_converge_at_their_order(name):
    """The measured order of accuracy (error ∝ N^-p) reaches the method's order, within 0.3."""
    make_steps, order = SOLVERS[name]
    errors = ode_errors(make_steps)
    assert errors == sorted(errors, reverse=True)
    assert observed_order(errors) > order - 0.3, (name, errors)
    assert errors[-1] < (3e-2 if order == 1 else 1e-3)


def test_ode_solvers_rank_by_order_at_equal_steps():
    """At 16 and more steps the higher-order solvers are closer to the exact ODE than DDIM and 2M."""
    errs = {name: ode_errors(make)[1:] for name, (make, _) in SOLVERS.items() if name != "ipndm"}
    for k in range(3):
        assert errs["dpm++3m"][k] < errs["dpm++2m"][k] < errs["ddim"][k]
        assert errs["unipc"][k] < errs["dpm++2m"][k]


def test_3m_with_the_halved_second_derivative_term_is_only_second_order(monkeypatch):
    """The order test tells a correct third-order step from the reference code's coefficient (module docstring of
    dpm_solver.py): halving c2 drops the measured order to 2."""
    phi = dpm_module._phi
    monkeypatch.setattr(dpm_module, "_phi", lambda h, kappa: (*phi(h, kappa)[:2], phi(h, kappa)[2] / 2))
    halved = observed_order(ode_errors(SOLVERS["dpm++3m"][0]))
    assert 1.7 < halved < 2.5


def test_ode_solvers_converge_with_every_spacing():
    """Karras and trailing spacings too: the 3M and UniPC errors at 64 steps are small."""
    for spacing in ("karras", "trailing"):
        for name in ("dpm++3m", "unipc", "ipndm"):
            assert ode_errors(SOLVERS[name][0], spacing)[-1] < 2e-3, (name, spacing)


def test_deterministic_samplers_solve_the_probability_flow_ode():
    """x_0 against the exact transport from the first visited step (the last step to σ = 0 included):
    DPM-Solver++(2M) beats DDIM at equal steps and converges, with the old spacings as with the new."""
    sched = NoiseSchedule.create("linear", 1000)
    den = gaussian_denoiser(sched)
    x_T = torch.randn((500, 1, 1, 1), generator=torch.Generator().manual_seed(0))

    def error(name, steps, spacing):
        spec = SamplerSpec(name, steps, spacing=spacing, clip_x0=False)
        a_s = float(sched.alphas_cumprod[spec.timesteps(sched)[0]])
        exact = MU + math.sqrt(VAR / (a_s * VAR + 1 - a_s)) * (x_T - math.sqrt(a_s) * MU)
        out = list(iter_sampler(spec, den, sched, x_T))[-1].x_next
        return (out - exact).abs().max().item()

    for spacing in SPACINGS:
        for steps in (10, 20, 50):
            assert error("dpm++2m", steps, spacing) < error("ddim", steps, spacing), (spacing, steps)
        assert error("dpm++2m", 50, spacing) < 0.015
    assert error("dpm++2m", 20, "quadratic") < 0.05
    # 3M gains where the steps in λ are even; spacings uniform in t end with steps that grow fast in λ, where its
    # extrapolation through three predictions loses that edge.
    for spacing in ("quadratic", "karras", "logsnr"):
        assert error("dpm++3m", 50, spacing) < error("dpm++2m", 50, spacing), spacing



@pytest.mark.parametrize("kappa", [1.0, 2.0])
@pytest.mark.parametrize("h", [1e-3, 0.1, 0.7, 3.0])
def test_dpm_solver_coefficients_are_the_integrals_of_the_polynomial(kappa, h):
    """c_k = ∫_0^h κ e^{-κ(h-u)} (u/h)^k du (dpm_solver.py's docstring), by quadrature: the ODE's (κ = 1) are also
    checked by the order tests; the SDE's (κ = 2) only here, since for Gaussian data the SDE's mean path has a
    constant x̂_0 and no order test can see its c1, c2."""
    u = np.linspace(0.0, h, 200_001)
    for k, c in enumerate(dpm_module._phi(h, kappa)):
        quad = np.trapezoid(kappa * np.exp(-kappa * (h - u)) * (u / h) ** k, u)
        assert c == pytest.approx(quad, rel=1e-6, abs=1e-12), (k, c, quad)
