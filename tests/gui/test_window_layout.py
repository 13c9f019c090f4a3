"""The window at 1280x800 as a new user sees it: nothing cut at an edge, nothing jumping under the mouse."""

from __future__ import annotations

from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QWidget

from ddpm_studio.gui.views.elided_label import ELLIPSIS
from ddpm_studio.services import config as c

WAIT = 60_000
LONG_PROBLEM = "image size 250 must be divisible by 4"


def right_edge_in(widget: QWidget, window: QWidget) -> int:
    return widget.mapTo(window, QPoint(widget.width(), 0)).x()


def assert_whole_words_that_fit(label, full: str) -> None:
    """The label shows ``full``, or whole words of it and "…", inside the window; hovering shows it all."""
    shown = label.text()
    assert label.fontMetrics().horizontalAdvance(shown) <= label.contentsRect().width(), shown
    if shown != full:
        kept = shown.removesuffix(ELLIPSIS)
        assert shown.endswith(ELLIPSIS) and full.startswith(kept), (shown, full)
        assert full[len(kept)] in " ,;:·", f"cut mid-word: {shown!r} of {full!r}"
        assert LONG_PROBLEM in label.toolTip()


def test_a_long_reason_in_the_toolbar_is_shortened_at_a_word_and_shown_whole_on_hover(app_handle, qtbot) -> None:
    """main: "…image size 250 must be divi" cut by the window's right edge (69-unet-invalid.png)."""
    w = app_handle.window
    w.resize(1280, 800)
    app_handle.studio.settings.set_config(c.from_dict({"data": {"image_size": 250}}))
    reason = w.run_controls.reason
    qtbot.waitUntil(lambda: LONG_PROBLEM in reason.toolTip(), timeout=WAIT)
    qtbot.wait(50)
    full = "Cannot start: " + reason.toolTip()
    assert full.startswith("Cannot start: Invalid U-Net configuration")
    assert reason.isVisible() and right_edge_in(reason, w) <= w.width()
    assert_whole_words_that_fit(reason, full)
    w.resize(900, 800)  # narrower still: fewer words, never a cut one
    qtbot.wait(50)
    assert right_edge_in(reason, w) <= w.width()
    assert_whole_words_that_fit(reason, full)


def test_settings_fields_stay_put_when_problems_come_and_go(app_handle, qtbot) -> None:
    """main: the error box above the form pushed every field down, so a click landed in the wrong one (61-lr-abc.png)."""
    w = app_handle.window
    w.resize(1280, 800)
    w.docks["settings"].raise_()
    panel = w.settings_panel
    start = w.run_controls.action("start")
    qtbot.waitUntil(lambda: start.isEnabled() and "M parameters" in panel.estimate_label.toolTip() + panel.estimate_label.text(),
                   timeout=WAIT)
    fields = [panel.field_editor("optim", name) for name in ("warmup_steps", "lr_schedule", "batch_size")]
    fields.append(panel.field_editor("schedule", "keep_last"))

    def where() -> list[tuple[int, int, int, int]]:
        qtbot.wait(30)
        return [(*f.mapTo(w, QPoint(0, 0)).toTuple(), f.width(), f.height()) for f in fields]

    for scroll in (panel.scroll.verticalScrollBar().minimum(), 260, panel.scroll.verticalScrollBar().maximum()):
        panel.scroll.verticalScrollBar().setValue(scroll)
        before = where()
        warmup = fields[0]
        warmup.selectAll()
        qtbot.keyClicks(warmup, "abc")  # a problem appears
        assert not start.isEnabled() and "Warm-up steps" in panel.error_label.text()
        assert where() == before
        warmup.selectAll()
        qtbot.keyClicks(warmup, "100")  # and goes
        qtbot.waitUntil(start.isEnabled, timeout=WAIT)
        assert where() == before

    app_handle.studio.settings.set_config(c.from_dict({"data": {"image_size": 250}}))  # a long problem, a new estimate
    qtbot.waitUntil(lambda: "Model size unknown" in panel.estimate_label.toolTip() + panel.estimate_label.text(), timeout=WAIT)
    assert LONG_PROBLEM in panel.error_label.text()
    assert where() == before


RUN_NAME = "run-20261201-012752"


def test_runs_table_shows_whole_run_names_or_elides_them_in_the_middle(app_handle, qtbot) -> None:
    """main: the Runs table showed "run-20261…" (the part that tells runs apart was cut)."""
    from PySide6.QtCore import Qt

    from ddpm_studio.gui.views.protocols import RunRow

    w = app_handle.window
    w.resize(1280, 800)
    w.docks["runs"].raise_()
    table = w.runs_panel.table
    rows = [RunRow(f"/runs/{RUN_NAME[:-1]}{i}", RUN_NAME[:-1] + str(i), state, 12_345, 20_000, 12_000, 1.8e9)
            for i, state in enumerate(("stopped", "interrupted", "completed"))]
    w.runs_panel.set_runs("/runs", rows)
    qtbot.wait(50)
    assert table.textElideMode() == Qt.TextElideMode.ElideMiddle  # if ever too narrow, the end (the time) shows
    name_width = max(table.fontMetrics().horizontalAdvance(r.name) for r in rows)
    assert table.columnWidth(0) >= name_width + 8, (table.columnWidth(0), name_width)
    assert table.horizontalHeader().length() <= table.viewport().width()  # every column inside the panel
    assert RUN_NAME[:-1] + "0" in table.item(0, 0).toolTip()


def test_the_generate_model_choice_shows_the_step(app_handle, qtbot) -> None:
    """main: "run-20261201-012752 · step" (the step cut off) in 25-generate-tab.png."""
    from PySide6.QtWidgets import QStyle, QStyleOptionComboBox

    w = app_handle.window
    w.resize(1280, 800)
    w.show_generate()
    label = f"{RUN_NAME} · step 12,000"
    w.generate_panel.set_sources([(label, f"/runs/{RUN_NAME}/checkpoints/step_00012000.pt")])
    qtbot.wait(50)
    combo = w.generate_panel.source
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    field = combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                         QStyle.SubControl.SC_ComboBoxEditField, combo)
    assert field.width() >= combo.fontMetrics().horizontalAdvance(label), (field.width(), label)
    assert right_edge_in(combo, w) <= w.width()
