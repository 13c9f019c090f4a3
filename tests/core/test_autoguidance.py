"""Autoguidance's pieces: the earlier weights a run keeps, the guide picked from them, and the guided network."""

import pytest
import torch
from torch import nn

from ddpm_studio.core.autoguidance import GUIDE_FRACTION, Autoguided, EarlyWeights, guide_network, pick_guide
from ddpm_studio.core.ema import thin_evenly


class Affine(nn.Module):
    """out = a x + b t + c y: simple enough to check the guided combination by hand."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.config = "cfg"

    def forward(self, x, t, y=None):
        return self.a * x + t.view(-1, 1) + (0 if y is None else y.view(-1, 1))


def run(early: EarlyWeights, steps: range, model: nn.Module) -> None:
    for step in steps:
        with torch.no_grad():
            model.a.fill_(float(step))  # the weights remember the step they were taken at
        early.update(step, model)


def test_thin_evenly_halves_the_rate_and_keeps_the_spread():
    assert thin_evenly([1, 2, 3, 4], 1, 4) == (1, [1, 2, 3, 4])
    assert thin_evenly([1, 2, 3, 4, 5], 1, 4) == (2, [2, 4])
    assert thin_evenly([4, 8, 12, 16, 20], 4, 2) == (8, [8, 16])
    assert thin_evenly([4, 8, 12, 16, 20, 24], 4, 1) == (16, [16])


def test_early_weights_stay_few_evenly_spread_and_half_precision():
    early, model = EarlyWeights(max_count=4), Affine(0.0)
    run(early, range(1, 1001), model)
    steps = sorted(early.kept)
    assert len(steps) <= 4 and steps == [early.interval * k for k in range(1, len(steps) + 1)]
    assert all(w["a"].dtype == torch.float16 and w["a"].device.type == "cpu" for w in early.kept.values())
    assert all(float(early.kept[s]["a"]) == pytest.approx(s, rel=1e-3) for s in steps)


@pytest.mark.parametrize("max_count", [4, 6])
def test_the_guide_lies_between_a_third_and_two_thirds_of_the_run(max_count):
    early, model = EarlyWeights(max_count), Affine(0.0)
    for step in range(1, 3000):
        run(early, range(step, step + 1), model)
        picked = early.guide_for(step)
        if step == 1:
            assert picked is None  # nothing before the first step
        elif step >= 12:
            assert picked is not None and 1 / 3 <= picked[0] / step <= 2 / 3, step
            assert float(picked[1]["a"]) == pytest.approx(picked[0], rel=1e-3)
        if step == 1024:
            assert picked[0] == 1024 * GUIDE_FRACTION


def test_state_round_trip_continues_exactly_and_thins_to_a_smaller_limit():
    straight, model = EarlyWeights(), Affine(0.0)
    run(straight, range(1, 301), model)
    first = EarlyWeights()
    run(first, range(1, 151), model)
    resumed = EarlyWeights()
    resumed.load_state_dict(first.state_dict())
    run(resumed, range(151, 301), model)
    assert resumed.interval == straight.interval and sorted(resumed.kept) == sorted(straight.kept)
    fewer = EarlyWeights(max_count=2)
    fewer.load_state_dict(straight.state_dict())
    assert len(fewer.kept) <= 2 and set(fewer.kept) <= set(straight.kept)


def test_pick_guide_ignores_what_is_not_a_kept_state():
    assert pick_guide(None, 10) is None and pick_guide({"kept": "junk"}, 10) is None
    assert pick_guide({"kept": [{"step": 10, "weights": {}}]}, 10) is None  # not earlier than the checkpoint
    assert pick_guide({"kept": [{"step": "5"}, {"step": 4, "weights": {}}]}, 10) == (4, {})


def test_autoguided_is_the_model_plus_w_times_its_lead_over_the_guide():
    good, bad = Affine(2.0), Affine(1.5)
    x, t, y = torch.randn(3, 4), torch.arange(3.0), torch.ones(3)
    torch.testing.assert_close(Autoguided(good, bad, 0.0)(x, t, y), good(x, t, y))
    torch.testing.assert_close(Autoguided(good, bad, 1.0)(x, t, y), 2 * good(x, t, y) - bad(x, t, y))
    torch.testing.assert_close(Autoguided(good, bad, 2.0)(x, t), 3 * good(x, t) - 2 * bad(x, t))
    assert Autoguided(good, bad, 1.0).config == "cfg"
    with pytest.raises(ValueError, match="0 or more"):
        Autoguided(good, bad, -1.0)


def test_guide_network_is_a_frozen_copy_in_the_templates_precision():
    template = Affine(3.0)
    guide = guide_network(template, {"a": torch.tensor(1.0, dtype=torch.float16)})
    assert float(guide.a) == 1.0 and guide.a.dtype == torch.float32 and not guide.a.requires_grad
    assert float(template.a.detach()) == 3.0 and not guide.training


def test_a_copy_is_due_only_at_multiples_of_the_interval():
    early = EarlyWeights(max_count=2)
    run(early, range(1, 9), Affine(0.0))
    assert early.interval == 4 and [s for s in range(9, 17) if early.due(s)] == [12, 16]


def test_a_damaged_or_misfitting_store_is_refused_on_load():
    good = EarlyWeights()
    run(good, range(1, 5), Affine(0.0))
    state = good.state_dict()
    for bad in ({**state, "interval": 0}, {**state, "kept": "junk"}, {**state, "kept": [{"step": "2", "weights": {}}]}):
        with pytest.raises(ValueError, match="damaged"):
            EarlyWeights().load_state_dict(bad)
    with pytest.raises(ValueError, match="do not fit"):
        EarlyWeights().load_state_dict(state, {"a": (2,)})
    EarlyWeights().load_state_dict(state, {"a": ()})  # the shapes it has


def test_a_copy_from_just_before_the_checkpoint_is_no_guide():
    near = {"kept": [{"step": 95, "weights": {}}]}  # e.g. a run resumed at step 90 from a checkpoint that kept none
    assert pick_guide(near, 100) is None
    assert pick_guide({"kept": [{"step": 20, "weights": {}}, {"step": 95, "weights": {}}]}, 100) is None
    assert pick_guide({"kept": [{"step": 35, "weights": {}}, {"step": 95, "weights": {}}]}, 100)[0] == 35
