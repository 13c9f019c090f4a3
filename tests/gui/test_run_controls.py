"""The training toolbar's widget (RunControls) and the words and fraction of its progress bar (progress_text)."""

from __future__ import annotations

import pytest

from ddpm_studio.gui.presenters import progress_text as text
from ddpm_studio.gui.presenters.progress_text import RunPosition
from ddpm_studio.gui.views.run_controls import BAR_STEPS, RunControls


def test_the_bar_is_the_share_of_steps_or_of_the_time_budget_whichever_ends_first() -> None:
    assert RunPosition(5_000, 20_000).fraction == 0.25
    assert RunPosition(100, 20_000, 540.0, 600.0).fraction == pytest.approx(0.9)  # nine of ten minutes, few steps
    assert RunPosition(15_000, 20_000, 120.0, 600.0).fraction == 0.75  # the steps end first
    assert RunPosition(30, 20, 700.0, 600.0).fraction == 1.0
    assert RunPosition(153, 20_000).where() == "step 153 / 20,000"
    assert RunPosition(153, 20_000, 754.0, 600.0).where() == "10:00 of 10:00 min · step 153"  # never past the budget
    assert RunPosition(153, 20_000, 192.0, 600.0).where() == "3:12 of 10:00 min · step 153"
    assert RunPosition(153, 20_000, 3723.0, 7200.0).where() == "1:02:03 of 2:00:00 · step 153"


def test_the_words_for_each_moment_of_a_run() -> None:
    steps, timed = RunPosition(153, 20_000), RunPosition(153, 20_000, 252.0, 600.0)
    assert text.running_text(steps, 0.03125, 85.0, 200.0) == "step 153 / 20,000  ·  loss 0.0312  ·  85 img/s  ·  ETA 3:20"
    assert text.paused_text(steps) == "Paused at step 153 / 20,000"
    assert text.resumed_text(timed) == "Resumed at 4:12 of 10:00 min · step 153"
    assert text.ended_text(steps, "stopped") == "Stopped at step 153 of 20,000"
    assert text.ended_text(RunPosition(20_000, 20_000), "completed") == "Completed at step 20,000 of 20,000"
    assert text.ended_text(timed, "stopped") == "Stopped at 4:12 of 10:00 min (step 153)"
    assert text.ended_label("stopped") == "Stopped" and text.ended_label("completed") == "Completed"


def test_the_toolbar_shows_what_it_is_told_and_reports_what_is_pressed(qtbot) -> None:
    controls = RunControls()
    qtbot.addWidget(controls)
    pressed: list[str] = []
    budgets: list[float] = []
    controls.requested.connect(pressed.append)
    controls.budgetEdited.connect(budgets.append)

    controls.show_state("Paused", {"resume": True, "stop": True, "preview": True, "checkpoint": True})
    assert controls.action("preview").text() == "Sample now" and controls.action("checkpoint").text() == "Checkpoint now"
    assert controls.action("preview").isEnabled() and not controls.action("pause").isEnabled()
    controls.action("checkpoint").trigger()
    controls.action("preview").trigger()
    assert pressed == ["checkpoint", "preview"]

    controls.show_progress(0.9, "9:00 of 10:00 min · step 153")
    assert controls.progress.value() == 0.9 * BAR_STEPS and controls.progress.format() == "9:00 of 10:00 min · step 153"

    controls.set_budget(10.0, True)  # shown, not edited: no signal
    assert controls.budget.value() == 10.0 and controls.budget.isEnabled() and budgets == []
    controls.budget.setValue(5.0)  # the user edits it
    assert budgets == [5.0]
    controls.set_budget(0.0, False)
    assert controls.budget.text() == "all steps" and not controls.budget.isEnabled()

    assert controls.warning_bar.isHidden()
    controls.show_device_warning("The mps device computes this network wrongly")
    assert not controls.warning_bar.isHidden() and "wrongly" in controls.warning.text()
    controls.use_cpu.click()
    assert pressed[-1] == "use_cpu"
    controls.show_device_warning("")
    assert controls.warning_bar.isHidden()
