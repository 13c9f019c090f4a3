import math

import numpy as np
import pytest
import torch

from ddpm_studio.core.schedules import NoiseSchedule, cosine_betas, linear_betas


def test_linear_matches_paper_endpoints_and_closed_form():
    s = NoiseSchedule.create("linear", 1000)
    betas = s.betas.double()
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(0.02)
    ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), ac, rtol=1e-5)
    assert s.alphas_cumprod.dtype == torch.float32
    # The paper's choice makes x_T nearly pure noise: ᾱ_T ≈ 4e-5.
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=0.02)


def test_cosine_alpha_bar_matches_closed_form():
    T, s_ = 1000, 0.008
    s = NoiseSchedule.create("cosine", T)
    f = lambda t: math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-4, abs=1e-7)
    assert (cosine_betas(T) <= 0.999).all()


def test_posterior_tables_are_consistent():
    s = NoiseSchedule.create("linear", 100)
    b = linear_betas(100)  # float64 reference
    ac = np.cumprod(1 - b)
    acp = np.append(1.0, ac[:-1])
    np.testing.assert_allclose(s.posterior_variance.numpy(), b * (1 - acp) / (1 - ac), rtol=1e-6)
    np.testing.assert_allclose(s.posterior_mean_coef1.numpy(), b * np.sqrt(acp) / (1 - ac), rtol=1e-6)
    np.testing.assert_allclose(s.posterior_mean_coef2.numpy(), (1 - acp) * np.sqrt(1 - b) / (1 - ac), rtol=1e-6)
    assert s.posterior_variance[0].item() == 0.0
    assert s.alphas_cumprod_prev[0].item() == 1.0
    x0 = torch.randn(4, 3, 8, 8)
    t = torch.full((4,), 50)
    x_t = s.q_sample(x0, t, torch.zeros_like(x0))
    eps = torch.zeros_like(x0)
    torch.testing.assert_close(s.predict_x0_from_eps(x_t, t, eps), x0, rtol=1e-4, atol=1e-4)


def test_x0_eps_round_trip():
    s = NoiseSchedule.create("cosine", 200)
    x0, eps = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    t = torch.randint(0, 200, (8,))
    x_t = s.q_sample(x0, t, eps)
    torch.testing.assert_close(s.predict_x0_from_eps(x_t, t, eps), x0, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(s.predict_eps_from_x0(x_t, t, x0), eps, rtol=1e-3, atol=1e-3)


def test_v_eps_round_trip():
    """ε recovered from (x_t, v) is the ε that made x_t, at every t (so v-models can drive ε samplers)."""
    s = NoiseSchedule.create("linear", 1000)
    x0, eps = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    t = torch.tensor([0, 1, 100, 400, 700, 900, 998, 999])
    x_t = s.q_sample(x0, t, eps)
    torch.testing.assert_close(s.predict_eps_from_v(x_t, t, s.velocity(x0, t, eps)), eps, rtol=1e-4, atol=1e-4)


def test_q_sample_statistics():
    s = NoiseSchedule.create("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.5)
    for t in (0, 300, 999):
        tt = torch.full((20000,), t)
        x_t = s.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
        ac = s.alphas_cumprod[t].item()
        assert x_t.mean().item() == pytest.approx(0.5 * math.sqrt(ac), abs=0.02)
        assert x_t.var().item() == pytest.approx(1 - ac, rel=0.05, abs=1e-4)


def test_schedule_names_are_pinned():
    """Schedules only grow: changing one would silently change old checkpoints."""
    assert float(linear_betas(1000)[500]) == pytest.approx(1e-4 + 500 * (0.02 - 1e-4) / 999)
    assert float(cosine_betas(1000)[500]) == pytest.approx(0.0031556914, rel=1e-6)
    with pytest.raises(ValueError, match="Unknown noise schedule"):
        NoiseSchedule.create("sigmoidish", 10)
