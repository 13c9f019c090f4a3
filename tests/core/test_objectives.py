import numpy as np
import pytest
import torch

from ddpm_studio.core.objectives import min_snr_weights
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
