"""Power-function EMA (EDM2) and post-hoc EMA: profiles against their closed forms, exact resume, reconstruction."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from ddpm_studio.core.posthoc_ema import (
    MAX_SIGMA_REL,
    ema_beta,
    exponent_to_sigma_rel,
    profile_inner_product,
    reconstruction_error,
    sigma_rel_to_exponent,
    solve_coefficients,
)
from ddpm_studio.core.power_ema import PowerEMA, reconstruct, sources_from_state


class Basis(nn.Module):
    """One float64 parameter vector; set to the k-th unit vector at step k, its EMA *is* the averaging profile."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n, dtype=torch.float64))

    def at_step(self, k: int) -> "Basis":
        with torch.no_grad():
            self.w.zero_()
            self.w[k - 1] = 1.0
        return self


def exact_profile(n: int, gamma: float) -> np.ndarray:
    """Weight of step k in the power-function average after n steps: (k^(γ+1) - (k-1)^(γ+1)) / n^(γ+1)."""
    k = np.arange(1, n + 1, dtype=np.float64)
    return (k ** (gamma + 1) - (k - 1) ** (gamma + 1)) / n ** (gamma + 1)


def run_basis(n: int, **kwargs) -> tuple[PowerEMA, Basis]:
    model = Basis(n)
    ema = PowerEMA(model, **kwargs)
    for k in range(1, n + 1):
        ema.update(model.at_step(k))
    return ema, model


@pytest.mark.parametrize("sigma_rel", [0.03, 0.05, 0.10, 0.20])
def test_exponent_and_length_are_inverse_and_match_the_profiles_spread(sigma_rel):
    gamma = sigma_rel_to_exponent(sigma_rel)
    assert exponent_to_sigma_rel(gamma) == pytest.approx(sigma_rel, rel=1e-12)
    # σ_rel is the standard deviation of τ/t under p(τ) ∝ τ^γ on [0, 1]: check it by quadrature.
    tau = np.linspace(0, 1, 200_001)
    p = tau**gamma
    p /= np.trapezoid(p, tau)
    mean = np.trapezoid(tau * p, tau)
    assert math.sqrt(np.trapezoid((tau - mean) ** 2 * p, tau)) == pytest.approx(sigma_rel, rel=1e-4)


def test_length_out_of_range_is_refused():
    for bad in (0.0, -0.1, MAX_SIGMA_REL, 0.5):
        with pytest.raises(ValueError, match="EMA length"):
            sigma_rel_to_exponent(bad)


def test_inner_product_matches_quadrature():
    ga, gb = sigma_rel_to_exponent(0.05), sigma_rel_to_exponent(0.15)
    ta, tb = 0.6, 1.0
    tau = np.linspace(0, 1, 400_001)
    pa = np.where(tau <= ta, (ga + 1) * tau**ga / ta ** (ga + 1), 0.0)
    pb = (gb + 1) * tau**gb / tb ** (gb + 1)
    expected = np.trapezoid(pa * pb, tau)
    assert float(profile_inner_product(ta, ga, tb, gb)) == pytest.approx(expected, rel=1e-4)
    assert float(profile_inner_product(tb, gb, ta, ga)) == pytest.approx(expected, rel=1e-4)  # symmetric


@pytest.mark.parametrize("sigma_rel", [0.05, 0.10, 0.20])
def test_tracked_average_weights_every_step_as_the_closed_form(sigma_rel):
    n = 300
    ema, _ = run_basis(n, length=sigma_rel, tracked=(sigma_rel,), max_snapshots=0)
    weights = ema.averages[0].w.detach().numpy()
    np.testing.assert_allclose(weights, exact_profile(n, sigma_rel_to_exponent(sigma_rel)), rtol=1e-9, atol=1e-15)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    # The first update copies the weights (β = 0): no warm-up bias towards the initial network.
    assert ema_beta(sigma_rel_to_exponent(sigma_rel), 1) == 0.0


def test_snapshots_stay_evenly_spread_and_bounded():
    ema, _ = run_basis(100, tracked=(0.05, 0.10), max_snapshots=4)
    steps = [s for s, _ in ema.snapshots]
    assert len(steps) <= 4 and steps == sorted(steps)
    assert all(s % ema.snapshot_interval == 0 for s in steps)
    assert steps == list(range(steps[0], steps[-1] + 1, ema.snapshot_interval))
    assert all(w["w"].dtype == torch.float16 for _, pair in ema.snapshots for w in pair)
    assert steps[0] <= 100 / 2 and steps[-1] > 100 / 2  # they cover the run, not just its end


def test_resume_continues_exactly_as_an_uninterrupted_run():
    n, cut = 57, 23
    straight, _ = run_basis(n, max_snapshots=3)

    model = Basis(n)
    first = PowerEMA(model, max_snapshots=3)
    for k in range(1, cut + 1):
        first.update(model.at_step(k))
    state = first.state_dict()
    second = PowerEMA(Basis(n), max_snapshots=3)
    second.load_state_dict(state)
    for k in range(cut + 1, n + 1):
        second.update(model.at_step(k))

    assert second.num_updates == straight.num_updates == n
    for a, b in zip(second.averages, straight.averages, strict=True):
        assert torch.equal(a.w, b.w)
    assert [s for s, _ in second.snapshots] == [s for s, _ in straight.snapshots]
    for (_, pa), (_, pb) in zip(second.snapshots, straight.snapshots, strict=True):
        assert all(torch.equal(x["w"], y["w"]) for x, y in zip(pa, pb, strict=True))
    assert torch.equal(second.average(0.2)["w"], straight.average(0.2)["w"])
    assert torch.equal(second.model.w, straight.model.w)


def test_state_loads_with_weights_only(tmp_path):
    ema, _ = run_basis(20, max_snapshots=2)
    torch.save(ema.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    again = PowerEMA(Basis(20), max_snapshots=2)
    again.load_state_dict(state)
    assert torch.equal(again.average()["w"], ema.average()["w"])


def test_solve_gives_a_stored_profile_back_and_weights_that_sum_to_one():
    times, lengths = [40, 80, 100, 100], [0.05, 0.10, 0.05, 0.10]
    x = solve_coefficients(times, lengths, 100, 0.10)
    np.testing.assert_allclose(x, [0, 0, 0, 1], atol=1e-8)
    assert reconstruction_error(times, lengths, 100, 0.10) < 1e-6
    y = solve_coefficients(times, lengths, 100, 0.07)
    assert y.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("length", [0.05, 0.10])
def test_reconstructing_a_tracked_length_gives_that_average_back(length):
    ema, _ = run_basis(120, tracked=(0.05, 0.10), max_snapshots=4)
    rebuilt = ema.average(length)["w"]
    exact = ema.averages[(0.05, 0.10).index(length)].w.detach()
    torch.testing.assert_close(rebuilt, exact, rtol=0, atol=1e-9)


@pytest.mark.parametrize("length", [0.03, 0.07, 0.15, 0.20])
def test_reconstruction_of_other_lengths_from_a_synthetic_run(length):
    """With θ_k = e_k the rebuilt weights are the rebuilt *profile*: compare it with the exact one of ``length``.

    Its relative L2 error must be what the continuous theory predicts for these stored averages (within the
    discretisation and the half-precision snapshots), and small where stored lengths and snapshots bracket it."""
    n = 400
    ema, _ = run_basis(n, tracked=(0.05, 0.10), max_snapshots=6)
    rebuilt = ema.average(length)["w"].numpy()
    exact = exact_profile(n, sigma_rel_to_exponent(length))
    error = np.linalg.norm(rebuilt - exact) / np.linalg.norm(exact)
    sources = ema.sources()
    predicted = reconstruction_error([s[0] for s in sources], [s[1] for s in sources], n, length)
    assert error == pytest.approx(predicted, abs=0.03)
    assert error < 0.2
    assert rebuilt.sum() == pytest.approx(1.0, abs=1e-3)
    # Without the snapshots a length outside (0.05, 0.10) rebuilds worse: the snapshots pay for themselves.
    two_only = reconstruct([s for s in sources if s[0] == n], n, length)["w"].numpy()
    if not 0.05 <= length <= 0.10:
        assert np.linalg.norm(two_only - exact) > np.linalg.norm(rebuilt - exact)


def test_sources_from_a_saved_state_rebuild_the_same_weights():
    ema, _ = run_basis(50, max_snapshots=3)
    state = ema.state_dict()
    torch.testing.assert_close(reconstruct(sources_from_state(state), 50, 0.13)["w"], ema.average(0.13)["w"])


def test_no_update_yet_gives_the_initial_weights():
    model = Basis(4).at_step(2)
    ema = PowerEMA(model)
    assert torch.equal(ema.average()["w"], model.w.detach())
    assert torch.equal(ema.model.w, model.w.detach())
