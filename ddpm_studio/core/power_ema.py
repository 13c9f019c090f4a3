"""Power-function EMA of the weights, with the snapshots that let any EMA length be rebuilt after training.

Why: a fixed decay (0.999) averages about the last 1,000 steps whatever the run's length: most of a
1,600-step laptop run, a sliver of an 800k-step GPU run. A power-function EMA (EDM2; the math is in
:mod:`ddpm_studio.core.posthoc_ema`) averages a fixed *fraction* of the run so far, its length σ_rel, so one
setting suits every budget; its update depends on the step count only, so pause, stop and resume (which
restore the step) continue it exactly.

No single length is best for every run (EDM2 Fig. 5), so two averages of different lengths are tracked and,
every so often, a half-precision snapshot of both is kept (at most ``max_snapshots``, evenly spread over the
run: when the list is full every other one is dropped and snapshots become half as frequent). A checkpoint
holds all of them; :func:`reconstruct` combines them into the average of any other length (post-hoc EMA).
The reconstruction at the run's own ``length`` is what previews and samples use (:attr:`PowerEMA.model`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ddpm_studio.core.ema import lerp_towards, thin_evenly
from ddpm_studio.core.posthoc_ema import ema_beta, sigma_rel_to_exponent, solve_coefficients

#: The lengths of the two averages a run tracks (EDM2's choice). Between them a rebuilt average is within a few
#: per cent of the exact profile from the two alone; the snapshots extend that to ~0.02-0.25 (docs/quality_per_compute.md).
TRACKED_LENGTHS = (0.05, 0.10)
SNAPSHOT_DTYPE = torch.float16

#: One stored average: (step it was taken at, its length σ_rel, its weights by name).
Source = tuple[int, float, dict[str, Tensor]]


class PowerEMA:
    """Power-function EMAs of ``model`` at the lengths ``tracked``, their snapshots, and the average at ``length``."""

    def __init__(self, model: nn.Module, length: float = 0.10, tracked: Sequence[float] | None = None,
                 max_snapshots: int = 4) -> None:
        tracked = TRACKED_LENGTHS if tracked is None else tracked
        if len(set(tracked)) != len(tracked) or not tracked:
            raise ValueError(f"need one or more different tracked lengths (got {tuple(tracked)})")
        if max_snapshots < 0:
            raise ValueError(f"max_snapshots must be 0 or more (got {max_snapshots})")
        sigma_rel_to_exponent(length)  # raises ValueError for a length out of range
        self.tracked = tuple(float(s) for s in tracked)
        self.exponents = tuple(sigma_rel_to_exponent(s) for s in self.tracked)
        self.length = float(length)
        self.max_snapshots = max_snapshots
        self.num_updates = 0
        self.snapshot_interval = 1
        self.snapshots: list[tuple[int, list[dict[str, Tensor]]]] = []
        self.averages = [copy.deepcopy(model).eval().requires_grad_(False) for _ in self.tracked]
        self._model = copy.deepcopy(model).eval().requires_grad_(False)
        self._model_step = -1  # the step self._model was rebuilt at

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def update(self, model: nn.Module, gate: Tensor | None = None) -> None:
        """Fold ``model``'s current weights into every tracked average (buffers are copied), then maybe snapshot.

        ``gate``: as for :meth:`EMA.update` (1 = apply, 0 = keep the averages; decided on the device)."""
        self.num_updates += 1
        params = [p.detach() for p in model.parameters()]
        for average, gamma in zip(self.averages, self.exponents, strict=True):
            beta = ema_beta(gamma, self.num_updates)
            lerp_towards(list(average.parameters()), params, 1.0 - beta, gate)
            for b_avg, b in zip(average.buffers(), model.buffers(), strict=True):
                b_avg.copy_(b)
        if self.max_snapshots and self.num_updates % self.snapshot_interval == 0:
            self._snapshot()

    def discard_updates(self, count: int) -> None:
        """Forget the last ``count`` updates, which were gated off (refused on the device): the averages are as
        they were before them, but the step count (which sets each update's β and the rebuilt average's
        coefficients) and the snapshots taken at those steps went on; both are wound back."""
        self.num_updates -= min(count, self.num_updates)
        self.snapshots = [s for s in self.snapshots if s[0] <= self.num_updates]
        self._model_step = -1

    def _snapshot(self) -> None:
        self.snapshots.append((self.num_updates, [_weights(a, SNAPSHOT_DTYPE, "cpu") for a in self.averages]))
        self._thin()

    def _thin(self) -> None:
        """Keep at most ``max_snapshots``: every other one dropped while too many, evenly spread, half as often from now."""
        self.snapshot_interval, steps = thin_evenly([s[0] for s in self.snapshots], self.snapshot_interval,
                                                    self.max_snapshots)
        self.snapshots = [s for s in self.snapshots if s[0] in steps]

    # ------------------------------------------------------------------ averages
    def sources(self) -> list[Source]:
        """Every stored average: the tracked ones now (exact) and the snapshots taken before this step."""
        out: list[Source] = [(self.num_updates, s, _weights(a)) for s, a in zip(self.tracked, self.averages, strict=True)]
        for step, weights in self.snapshots:
            if step < self.num_updates:
                out += [(step, s, w) for s, w in zip(self.tracked, weights, strict=True)]
        return out

    def average(self, length: float | None = None) -> dict[str, Tensor]:
        """The weights (float, on the model's device) of the average of ``length`` (default: the run's) at this step."""
        if self.num_updates == 0:
            return _weights(self.averages[0], clone=True)
        return reconstruct(self.sources(), self.num_updates, self.length if length is None else length)

    @property
    def model(self) -> nn.Module:
        """A network holding the average at the run's length now (rebuilt when the step has changed)."""
        if self._model_step != self.num_updates:
            self._model.load_state_dict(self.average())
            self._model_step = self.num_updates
        return self._model

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, numbers and lists only (a checkpoint must load with ``weights_only=True``)."""
        return {
            "kind": "power", "tracked": list(self.tracked), "length": self.length, "num_updates": self.num_updates,
            "averages": [a.state_dict() for a in self.averages],
            "snapshots": [{"step": step, "averages": weights} for step, weights in self.snapshots],
            "snapshot_interval": self.snapshot_interval, "max_snapshots": self.max_snapshots,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` exactly (the run's ``length`` and snapshot limit stay as constructed)."""
        if [float(s) for s in state["tracked"]] != list(self.tracked):
            raise ValueError(f"the checkpoint tracks EMA lengths {state['tracked']}, this run {list(self.tracked)}")
        for average, weights in zip(self.averages, state["averages"], strict=True):
            average.load_state_dict(weights)
        self.num_updates = int(state["num_updates"])
        self.snapshot_interval = int(state["snapshot_interval"])
        self.snapshots = [(int(s["step"]), [dict(w) for w in s["averages"]]) for s in state["snapshots"]]
        if not self.max_snapshots:
            self.snapshots = []
        self._thin()  # fewer snapshots asked for on resume: thin as usual
        self._model_step = -1


def sources_from_state(state: dict[str, Any]) -> list[Source]:
    """The stored averages of a checkpoint's power-EMA ``state`` (see :meth:`PowerEMA.state_dict`)."""
    step, tracked = int(state["num_updates"]), [float(s) for s in state["tracked"]]
    out: list[Source] = [(step, s, w) for s, w in zip(tracked, state["averages"], strict=True)]
    for snap in state["snapshots"]:
        if int(snap["step"]) < step:
            out += [(int(snap["step"]), s, w) for s, w in zip(tracked, snap["averages"], strict=True)]
    return out


def reconstruct(sources: Sequence[Source], step: int, length: float) -> dict[str, Tensor]:
    """Σ x_i θ̄_i: the weights of the power-function average of ``length`` at ``step`` (EDM2's post-hoc EMA).

    The coefficients x come from :func:`ddpm_studio.core.posthoc_ema.solve_coefficients`; the sum is taken in
    (at least) float32 on the device of the first source, whatever the precision of the snapshots. Tensors that are not floating
    point (none in our U-Net) are taken from the first source.
    """
    if not sources:
        raise ValueError("no stored averages to rebuild an EMA from")
    coefficients = solve_coefficients([s[0] for s in sources], [s[1] for s in sources], step, length)
    first = sources[0][2]
    out: dict[str, Tensor] = {}
    for name, value in first.items():
        if not value.is_floating_point():
            out[name] = value.clone()
            continue
        dtype = torch.promote_types(value.dtype, torch.float32)  # float32 at least, float64 for float64 weights
        total = torch.zeros(value.shape, dtype=dtype, device=value.device)
        for (_, _, weights), x in zip(sources, coefficients, strict=True):
            total.add_(weights[name].to(device=value.device, dtype=dtype), alpha=float(x))
        out[name] = total.to(value.dtype)
    return out


def _weights(module: nn.Module, dtype: torch.dtype | None = None, device: str | None = None,
             clone: bool = False) -> dict[str, Tensor]:
    """``module``'s state as detached tensors: views, or copies (converted to ``dtype`` / ``device``) when asked."""
    copy_ = clone or dtype is not None or device is not None
    out = {}
    for name, value in module.state_dict().items():
        if copy_:
            value = value.to(device=device or value.device, copy=True,
                             dtype=dtype if dtype is not None and value.is_floating_point() else value.dtype)
        out[name] = value
    return out
