import numpy as np
import pytest
import torch

from ddpm_studio.core.objectives import (
    EDM_SIGMA_DATA,
    edm_weights,
    lognormal_timestep_probs,
    loss_weights,
    min_snr_weights,
    noise_sigmas,
    sample_timesteps,
    timestep_probs,
    training_target,
)
from ddpm_studio.core.schedules import NoiseSchedule


def test_min_snr_weights_match_closed_form():
    sched = NoiseSchedule.create("linear", 1000)
    ac = sched.alphas_cumprod.double().numpy()
    snr = ac / (1 - ac)
    w = min_snr_weights(sched.alphas_cumprod, 5.0)
    np.testing.assert_allclose(w.numpy(), np.minimum(snr, 5.0) / snr, rtol=1e-6)
    # Nearly clean steps are weighted down hard; from SNR <= γ on, the paper's uniform weight remains.
    assert w[0].item() == pytest.approx(5.0 / snr[0], rel=1e-5) and w[0].item() < 1e-3
    assert torch.all(w[snr <= 5.0] == 1.0) and (snr <= 5.0).sum() > 800
    assert torch.all(w[1:] >= w[:-1])  # SNR falls with t, so the weight never does


def test_min_snr_off_is_uniform():
    sched = NoiseSchedule.create("cosine", 100)
    assert torch.equal(min_snr_weights(sched.alphas_cumprod, 0.0), torch.ones(100))


def test_min_snr_weights_for_v_give_the_same_x0_weight():
    """ε-MSE = SNR·x0-MSE and v-MSE = (SNR+1)·x0-MSE, so both forms must weight the x0 error by min(SNR, γ)."""
    sched = NoiseSchedule.create("linear", 1000)
    ac = sched.alphas_cumprod.double().numpy()
    snr = ac / (1 - ac)
    w_eps = min_snr_weights(sched.alphas_cumprod, 5.0, "epsilon").double().numpy()
    w_v = min_snr_weights(sched.alphas_cumprod, 5.0, "v").double().numpy()
    np.testing.assert_allclose(w_v, np.minimum(snr, 5.0) / (snr + 1), rtol=1e-6)
    np.testing.assert_allclose(w_eps * snr, w_v * (snr + 1), rtol=1e-5)


def test_training_target_is_noise_or_velocity():
    sched = NoiseSchedule.create("cosine", 100)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 3, 4, 4, generator=g), torch.randn(6, 3, 4, 4, generator=g)
    t = torch.tensor([0, 10, 40, 70, 90, 99])
    assert training_target(sched, "epsilon", x0, t, noise) is noise
    v = training_target(sched, "v", x0, t, noise)
    a = sched.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
    s = sched.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(v, a * noise - s * x0)
    # At the last step the image is nearly gone and v is nearly -x0: the network predicts the image there.
    assert torch.allclose(v[-1], -x0[-1], atol=0.01)
    with pytest.raises(ValueError, match="prediction"):
        training_target(sched, "x0", x0, t, noise)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lognormal_noise_levels_follow_the_normal_cdf_of_ln_sigma(schedule):
    """P(t ≤ k) is Φ((b_k - μ)/s) at the ln σ midpoint b_k between steps k and k+1: EDM's ln σ ~ N(μ, s²) binned."""
    from statistics import NormalDist

    sched = NoiseSchedule.create(schedule, 1000)
    mean, std = -1.2, 1.2
    probs = lognormal_timestep_probs(sched.alphas_cumprod, mean, std)
    assert probs.shape == (1000,) and probs.dtype == torch.float64
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-12) and bool((probs >= 0).all())
    log_sigma = noise_sigmas(sched.alphas_cumprod).log().numpy()
    cdf = np.cumsum(probs.numpy())
    normal = NormalDist(mean, std)
    for k in (100, 300, 500, 700):
        assert cdf[k] == pytest.approx(normal.cdf((log_sigma[k] + log_sigma[k + 1]) / 2), abs=1e-9)
    # Half of the draws lie below σ = e^μ, to within one step's probability.
    below = probs[torch.from_numpy(log_sigma) < mean].sum()
    assert float(below) == pytest.approx(0.5, abs=float(probs.max()))


def test_uniform_noise_levels_keep_the_old_draws_and_lognormal_draws_follow_probs():
    sched = NoiseSchedule.create("cosine", 1000)
    assert timestep_probs(sched.alphas_cumprod, "uniform") is None
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(sample_timesteps(64, 1000, g1, torch.device("cpu")),
                       torch.randint(0, 1000, (64,), generator=g2))  # unchanged random stream for old runs
    probs = timestep_probs(sched.alphas_cumprod, "lognormal")
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(200_000, 1000, g, torch.device("cpu"), probs)
    counts = torch.bincount(t, minlength=1000).double() / len(t)
    # Coarse bins (tenths of [0, T)) against the probabilities: within a few standard errors.
    got, want = counts.view(10, 100).sum(1), probs.view(10, 100).sum(1)
    assert torch.allclose(got, want, atol=4 * float((want * (1 - want) / len(t)).sqrt().max()) + 1e-6)
    again = sample_timesteps(1000, 1000, torch.Generator().manual_seed(0), torch.device("cpu"), probs)
    assert torch.equal(again, t[:1000])  # deterministic given the generator (resume is exact)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_edm_weights_match_lambda_of_sigma_on_the_x0_error(prediction):
    """λ(σ) = (σ² + σ_d²)/(σ σ_d)² weights the x̂_0 error; x̂_0 error² = σ²·ε error² = σ²/(1+σ²)·v error²."""
    sched = NoiseSchedule.create("cosine", 1000)
    sigma2 = noise_sigmas(sched.alphas_cumprod).numpy() ** 2
    lam = (sigma2 + EDM_SIGMA_DATA**2) / (sigma2 * EDM_SIGMA_DATA**2)
    x0_error_per_target_error = sigma2 if prediction == "epsilon" else sigma2 / (1 + sigma2)
    w = edm_weights(sched.alphas_cumprod.double(), prediction).numpy()
    np.testing.assert_allclose(w, lam * x0_error_per_target_error, rtol=1e-10)
    if prediction == "v":
        assert w.min() >= 1 - 1e-9 and w.max() <= 1 / EDM_SIGMA_DATA**2 + 1e-9


def test_edm_loss_weights_average_one_under_the_sampling_distribution():
    sched = NoiseSchedule.create("cosine", 1000)
    probs = timestep_probs(sched.alphas_cumprod, "lognormal")
    w = loss_weights(sched.alphas_cumprod, "edm", "v", probs=probs)
    assert float((w.double() * probs).sum()) == pytest.approx(1.0, rel=1e-5)
    ratio = w / edm_weights(sched.alphas_cumprod, "v")
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)  # a constant rescaling of λ only
    assert loss_weights(sched.alphas_cumprod, "uniform", "v") is None
    assert torch.equal(loss_weights(sched.alphas_cumprod, "min-snr", "v", gamma=5.0),
                       min_snr_weights(sched.alphas_cumprod, 5.0, "v"))
