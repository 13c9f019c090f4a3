import numpy as np
import pytest
import torch

from ddpm_studio.core.objectives import min_snr_weights, training_target
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
