"""Sampler contract tests: every sampler is exercised with a cheap analytic denoiser, no U-Net."""

import math

import pytest
import torch

from ddpm_studio.core.samplers import SAMPLER_NAMES, SPACINGS, SamplerSpec, iter_sampler, timestep_sequence
from ddpm_studio.core.samplers.ddim import ddim_steps
from ddpm_studio.core.samplers.ddpm import ddpm_steps
from ddpm_studio.core.samplers.dpm_solver import dpm_solver_steps
from ddpm_studio.core.schedules import NoiseSchedule

SCHED = NoiseSchedule.create("linear", 100)


def gaussian_denoiser(schedule, mu=0.3, var=0.25):
    """The exact ε for data ~ N(mu, var): lets us check samplers against theory."""

    def denoise(x, t):
        ac = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        # E[x0 | x_t] for Gaussian data, then ε = (x_t - √ᾱ x̂0)/√(1-ᾱ)
        x0 = mu + (ac.sqrt() * var) / (ac * var + 1 - ac) * (x - ac.sqrt() * mu)
        return (x - ac.sqrt() * x0) / (1 - ac).sqrt()

    return denoise


def run(spec, seed=0, n=4, denoise=None):
    x_T = torch.randn((n, 1, 4, 4), generator=torch.Generator().manual_seed(seed))
    return list(iter_sampler(spec, denoise or gaussian_denoiser(SCHED), SCHED, x_T, torch.Generator().manual_seed(seed + 1)))


def test_ddim_eta1_all_steps_equals_ddpm_beta_tilde():
    x_T = torch.randn((6, 2, 4, 4), generator=torch.Generator().manual_seed(3))
    den = gaussian_denoiser(SCHED)
    a = list(ddpm_steps(den, SCHED, x_T, generator=torch.Generator().manual_seed(9), variance="beta_tilde"))
    b = list(ddim_steps(den, SCHED, x_T, num_steps=100, eta=1.0, generator=torch.Generator().manual_seed(9)))
    assert [s.t for s in a] == [s.t for s in b] == list(range(99, -1, -1))
    for sa, sb in zip(a, b, strict=True):
        torch.testing.assert_close(sa.x_t, sb.x_t, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_contract_shapes_determinism_frames(name):
    spec = SamplerSpec(name=name, num_steps=20, eta=0.5)
    a, b, c = run(spec, 0), run(spec, 0), run(spec, 1)
    assert len(a) == spec.steps_for(100)
    assert [s.index for s in a] == list(range(len(a)))
    assert all(s.total == len(a) for s in a)
    assert all(s.x_t.shape == (4, 1, 4, 4) and s.x0_pred.shape == (4, 1, 4, 4) for s in a)
    assert a[-1].t == 0 and [s.t for s in a] == sorted((s.t for s in a), reverse=True)
    torch.testing.assert_close(a[-1].x_t, b[-1].x_t, rtol=0, atol=0)
    assert not torch.allclose(a[-1].x_t, c[-1].x_t)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_last_step_adds_no_noise(name):
    """The final x_0 is a deterministic function of the previous state, even with η = 1."""
    steps = run(SamplerSpec(name=name, num_steps=10, eta=1.0))
    last, prev = steps[-1], steps[-2]
    t0 = torch.zeros(4, dtype=torch.long)
    if name == "ddpm":
        expected, _, _ = SCHED.q_posterior(last.x0_pred, prev.x_t, t0)
    else:  # DDIM: ᾱ_prev = 1 after the last step, so x_0 = x̂_0
        expected = last.x0_pred
    torch.testing.assert_close(last.x_t, expected, rtol=1e-6, atol=1e-6)


def test_samplers_recover_gaussian_data_distribution():
    """With the exact denoiser, DDPM (1000 steps), DDIM (50) and DPM-Solver++ (ODE 20, SDE 50) reach the data's
    mean and variance."""
    sched = NoiseSchedule.create("linear", 1000)
    den = gaussian_denoiser(sched, mu=0.3, var=0.25)
    x_T = torch.randn((2000, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    for spec in (SamplerSpec("ddpm"), SamplerSpec("ddim", num_steps=50), SamplerSpec("dpm++2m", num_steps=20),
                 SamplerSpec("dpm++2m-sde", num_steps=50)):
        out = list(iter_sampler(SamplerSpec(spec.name, spec.num_steps, clip_x0=False), den, sched, x_T,
                                torch.Generator().manual_seed(1)))[-1].x_t
        assert out.mean().item() == pytest.approx(0.3, abs=0.03)
        assert out.var().item() == pytest.approx(0.25, rel=0.1)


def test_timestep_sequences():
    assert timestep_sequence(1000, 10, "trailing") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert timestep_sequence(1000, 10, "uniform") == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    quad = timestep_sequence(1000, 10, "quadratic")
    assert quad[-1] == 0 and len(quad) == 10
    assert timestep_sequence(100, 100, "uniform") == list(range(99, -1, -1))
    with pytest.raises(ValueError, match="between 1 and 100"):
        timestep_sequence(100, 0)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [5, 37, 100])
def test_every_sampler_spacing_and_step_count(name, spacing, steps):
    """5 to T steps with every spacing: one record per model call, descending t, finite output."""
    spec = SamplerSpec(name=name, num_steps=steps, spacing=spacing, eta=0.5)
    out = run(spec, n=2)
    expected = timestep_sequence(100, steps, spacing) if name != "ddpm" else list(range(99, -1, -1))
    assert [s.t for s in out] == expected and len(out) == spec.steps_for(100)
    assert all(torch.isfinite(s.x_t).all() and torch.isfinite(s.x0_pred).all() for s in out)


def test_dpm_solver_plus_plus_first_order_is_ddim_eta0():
    """Lu et al. 2022, §4.1: DPM-Solver++(1) is DDIM (η = 0); the 2M solver's first step is that same step."""
    x_T = torch.randn((3, 2, 4, 4), generator=torch.Generator().manual_seed(4))
    den = gaussian_denoiser(SCHED)
    for spacing in SPACINGS:
        for steps in (5, 20, 100):
            ddim = list(ddim_steps(den, SCHED, x_T, num_steps=steps, spacing=spacing))
            first = list(dpm_solver_steps(den, SCHED, x_T, num_steps=steps, spacing=spacing, order=1))
            two_m = list(dpm_solver_steps(den, SCHED, x_T, num_steps=steps, spacing=spacing))
            for a, b in zip(ddim, first, strict=True):
                torch.testing.assert_close(a.x_t, b.x_t, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(two_m[0].x_t, ddim[0].x_t, rtol=1e-5, atol=1e-6)


def test_sde_dpm_solver_first_order_is_ddim_eta1():
    """SDE-DPM-Solver++(1) is DDIM with η = 1 (the same x_0 and x_t coefficients and noise variance
    (σ_next/σ_t)² (ᾱ_next - ᾱ_t)/ᾱ_next): with the same noise draws the trajectories agree."""
    x_T = torch.randn((3, 2, 4, 4), generator=torch.Generator().manual_seed(4))
    den = gaussian_denoiser(SCHED)
    for spacing in SPACINGS:
        for steps in (5, 20, 100):
            ddim = list(ddim_steps(den, SCHED, x_T, num_steps=steps, spacing=spacing, eta=1.0,
                                   generator=torch.Generator().manual_seed(7)))
            sde = list(dpm_solver_steps(den, SCHED, x_T, num_steps=steps, spacing=spacing, order=1, stochastic=True,
                                        generator=torch.Generator().manual_seed(7)))
            for a, b in zip(ddim, sde, strict=True):
                torch.testing.assert_close(a.x_t, b.x_t, rtol=1e-4, atol=1e-4)


def test_deterministic_samplers_solve_the_probability_flow_ode():
    """For data ~ N(μ, v) the ODE from x_s at the first visited step s is affine (the monotone Gaussian transport):
    x_0 = μ + √v / √(ᾱ_s v + 1 - ᾱ_s) · (x_s - √ᾱ_s μ). DPM-Solver++(2M) beats DDIM at equal steps and converges."""
    sched = NoiseSchedule.create("linear", 1000)
    mu, var = 0.3, 0.25
    den = gaussian_denoiser(sched, mu, var)
    x_T = torch.randn((500, 1, 1, 1), generator=torch.Generator().manual_seed(0))

    def error(name, steps, spacing):
        a_s = float(sched.alphas_cumprod[timestep_sequence(1000, steps, spacing)[0]])
        exact = mu + math.sqrt(var / (a_s * var + 1 - a_s)) * (x_T - math.sqrt(a_s) * mu)
        out = run_spec(SamplerSpec(name, steps, spacing=spacing, clip_x0=False), den, sched, x_T)
        return (out - exact).abs().max().item()

    for spacing in SPACINGS:
        for steps in (10, 20, 50):
            assert error("dpm++2m", steps, spacing) < error("ddim", steps, spacing), (spacing, steps)
        assert error("dpm++2m", 50, spacing) < 0.01
    assert error("dpm++2m", 20, "quadratic") < 0.05


def run_spec(spec, den, sched, x_T):
    return list(iter_sampler(spec, den, sched, x_T))[-1].x_t
