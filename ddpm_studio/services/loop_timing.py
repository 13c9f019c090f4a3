"""The training loop's sense of time: what counts as training time, how fast training goes, when to preview.

Why apart from the loop: on a slow or shared CPU the loop's side work (previews with their validation loss,
checkpoints) can cost as much as training itself, and wall time includes pauses. Three small pieces keep
that honest, each testable with a fake clock:

- :class:`ActiveClock`: wall time minus the time spent paused, so nothing is "due" because the user paused.
- :class:`Throughput`: images/s and the ETA from training steps only, smoothed over about a minute of
  training (a time constant, not a step count), so a busy CPU or a slow preview does not swing them; the ETA
  then adds the share of the run's time its side work has taken.
- :class:`PreviewCadence`: previews come at their nominal cadence (every N steps, every M minutes of training
  time) but never take more than a set share of the run's time: after a preview that took c seconds the next
  waits at least c·(1-b)/b seconds of active time (b = the budget, 10 % by default); no preview comes in the
  first seconds after a resume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ddpm_studio.services.run_budget import TrainingClock

Clock = Callable[[], float]

#: Time constant of the images/s smoothing, in seconds of training.
THROUGHPUT_TAU_SECONDS = 60.0
#: The ETA's rate is smoothed over this share of the run's training time so far, and at least ETA_MIN_WINDOW seconds.
ETA_WINDOW_SHARE = 0.25
ETA_MIN_WINDOW_SECONDS = 120.0
#: After a resume, no automatic preview for this long (active time): Resume should resume training.
RESUME_GRACE_SECONDS = 30.0
#: The ETA adds the share of time previews and checkpoints take once the run has gone on this long (seconds).
SIDE_WORK_MIN_SECONDS = 30.0


class ActiveClock(TrainingClock):
    """Seconds since it was made, minus the time spent between ``pause_started()`` and ``pause_ended()``: the
    time budget's running clock (:class:`~ddpm_studio.services.run_budget.TrainingClock`) for this session alone,
    read by calling it."""

    def __init__(self, now: Clock = time.perf_counter) -> None:
        super().__init__(clock=now)
        self.start()

    def __call__(self) -> float:
        return self.seconds

    pause_started = TrainingClock.stop
    pause_ended = TrainingClock.start


class Throughput:
    """Training speed from the duration of training steps alone, smoothed over training time.

    Each rate is a ratio of exponentially decayed sums (images / seconds), each step weighted by how recent it is
    in training time, so a burst of slow steps moves it by its share of the window, not by 10 % per step. Images/s
    uses a window of ``tau`` seconds; the ETA one that grows with the run (a quarter of its training time, at least
    two minutes): a run of hours is not re-estimated from its last minute. The run's first step (allocations, lazy
    initialisation) is left out once there is a second.
    """

    def __init__(self, images_per_step: int, tau: float = THROUGHPUT_TAU_SECONDS) -> None:
        self.images_per_step, self.tau = images_per_step, tau
        self._fast = [0.0, 0.0]  # decayed (images, seconds) over ~tau
        self._slow = [0.0, 0.0]  # the same over a quarter of the run
        self._first: float | None = None
        self.steps = 0
        self.train_seconds = 0.0  # all steps, the first included

    def add(self, step_seconds: float) -> None:
        step_seconds = max(step_seconds, 1e-9)
        self.steps += 1
        self.train_seconds += step_seconds
        if self.steps == 1:
            self._first = step_seconds
            return
        eta_window = max(ETA_MIN_WINDOW_SECONDS, ETA_WINDOW_SHARE * self.train_seconds)
        for sums, tau in ((self._fast, self.tau), (self._slow, eta_window)):
            keep = math.exp(-step_seconds / tau)
            sums[0] = sums[0] * keep + self.images_per_step
            sums[1] = sums[1] * keep + step_seconds

    def _seconds_per_step(self, sums: list[float]) -> float:
        if sums[1] > 0:
            return sums[1] / sums[0] * self.images_per_step
        return self._first if self._first is not None else math.nan

    @property
    def seconds_per_step(self) -> float:
        """Smoothed seconds per training step, over the last ~``tau`` seconds (NaN before the first step)."""
        return self._seconds_per_step(self._fast)

    @property
    def images_per_sec(self) -> float:
        spt = self.seconds_per_step
        return self.images_per_step / spt if spt == spt and spt > 0 else 0.0

    def eta(self, remaining_steps: int, overhead_share: float = 0.0) -> float:
        """Seconds to finish: the remaining steps at the run's smoothed rate, plus side work at ``overhead_share``
        of the run's time (previews, validation, checkpoints: 0.1 = a tenth of the time goes to them)."""
        spt = self._seconds_per_step(self._slow)
        if spt != spt:
            return math.inf
        share = min(max(overhead_share, 0.0), 0.9)
        return remaining_steps * spt / (1.0 - share)

    def side_work_share(self, active_seconds: float) -> float:
        """The share of ``active_seconds`` (the run's active time, warm-up left out) not spent in training steps
        (previews, validation, checkpoints, logging), once there is enough of a run to tell: the ``overhead_share``
        of :meth:`eta`, so the ETA includes the side work still to come."""
        if active_seconds < SIDE_WORK_MIN_SECONDS or active_seconds <= 0:
            return 0.0
        return max(0.0, 1.0 - self.train_seconds / active_seconds)


class PreviewCadence:
    """Decides when the automatic previews come; the loop reports every preview (asked for or not) it makes.

    ``every_steps``: at multiples of this step (0 = off); ``every_seconds``: after this much active time since
    the last preview ended (0 = off); ``budget``: the largest share of active time previews (and other budgeted
    work, such as the checkpoints' validation loss) may take. Step-based previews that the budget delays come at
    the next multiple the budget allows, so their steps stay round numbers.
    """

    def __init__(self, every_steps: int, every_seconds: float, budget: float,
                 resume_grace: float = RESUME_GRACE_SECONDS) -> None:
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"The preview budget must be a share in (0, 1] (got {budget})")
        self.every_steps, self.every_seconds, self.budget = every_steps, every_seconds, budget
        self.resume_grace = resume_grace
        self._last_end: float = 0.0  # active time at which the last preview ended (the run's start at first)
        self._not_before: float = 0.0  # active time before which no automatic preview may start
        self.previews = 0
        self.seconds_spent = 0.0

    def due(self, step: int, now: float) -> bool:
        """Whether an automatic preview should run after ``step`` at active time ``now``."""
        if now < self._not_before:
            return False
        by_steps = bool(self.every_steps) and step % self.every_steps == 0
        by_time = bool(self.every_seconds) and now - self._last_end >= self.every_seconds
        return by_steps or by_time

    def spent(self, seconds: float, end: float, *, preview: bool = True) -> None:
        """Budgeted work of ``seconds`` ended at active time ``end``: push the next preview back accordingly.

        After work that took c seconds, c·(1-b)/b seconds of other time must pass, so that work stays at a
        share b of the time. ``preview`` False: budgeted work that is not a preview (e.g. a checkpoint's
        validation loss), which delays the next preview without restarting its time-based interval.
        """
        self.seconds_spent += seconds
        wait = seconds * (1.0 - self.budget) / self.budget
        self._not_before = max(self._not_before, end + wait)
        if preview:
            self.previews += 1
            self._last_end = end

    def resumed(self, now: float) -> None:
        """The run was resumed at active time ``now``: hold automatic previews back for a moment."""
        self._not_before = max(self._not_before, now + self.resume_grace)
