"""Sampler contract tests: every sampler is exercised with a cheap analytic denoiser, no U-Net."""

import pytest
import torch

from ddpm_studio.core.samplers import SAMPLER_NAMES, SamplerSpec, iter_sampler, timestep_sequence
from ddpm_studio.core.samplers.ddim import ddim_steps
from ddpm_studio.core.samplers.ddpm import ddpm_steps
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
    """With the exact denoiser, DDPM (1000 steps) and DDIM (50) produce samples with the data's mean and variance."""
    sched = NoiseSchedule.create("linear", 1000)
    den = gaussian_denoiser(sched, mu=0.3, var=0.25)
    x_T = torch.randn((2000, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    for spec in (SamplerSpec("ddpm"), SamplerSpec("ddim", num_steps=50)):
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
