"""The loss axis labels what a user reads off it: numbers in real units at every range, log and linear.

The strings checked are the ones the axis really draws (``generateDrawSpecs``, after pyqtgraph drops
labels that would overlap), on a plot as tall as the window's at 1280x800, for the ranges a run goes
through: ~0.6 early, ~0.05 late, a range inside one decade, and a very wide one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtGui import QImage, QPainter

from ddpm_studio.gui.views.loss_plot import LossPlot
from ddpm_studio.gui.workers import ProgressBatch

RANGES = {  # (first loss, last loss) of a run's curve
    "early, around 0.6": (0.75, 0.55),
    "late, around 0.05": (0.058, 0.043),
    "inside one decade": (0.9, 0.2),
    "narrow, inside one decade": (0.064, 0.061),
    "very wide": (30.0, 2e-4),
}


def drawn_labels(plot: LossPlot) -> tuple[list[str], str]:
    """The left axis's tick labels as drawn now, and its title."""
    axis = plot.plot.getAxis("left")
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        _axis, _ticks, texts = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [text for _rect, _flags, text in texts], axis.labelString()


def shown_range(plot: LossPlot, log_y: bool) -> tuple[float, float]:
    (_x, (y0, y1)) = plot.plot.viewRange()
    return (10**y0, 10**y1) if log_y else (y0, y1)


@pytest.mark.parametrize("log_y", [True, False], ids=["log", "linear"])
@pytest.mark.parametrize("name", list(RANGES))
def test_the_loss_axis_has_readable_numbers_at_every_range(qtbot, name: str, log_y: bool) -> None:
    first, last = RANGES[name]
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(840, 300)  # the loss plot's size in the 1280x800 window
    plot.show()
    qtbot.waitExposed(plot)
    plot.toggles["logy"].setChecked(log_y)
    steps = np.arange(1, 201, dtype=np.float64)
    losses = first * (last / first) ** ((steps - 1) / 199)  # an exponential decay from first to last
    plot.append_batch(ProgressBatch(steps, losses, np.full(200, 1e-4), None))
    plot.redraw()
    plot.autoscale()
    qtbot.wait(50)
    lo, hi = shown_range(plot, log_y)

    labels, title = drawn_labels(plot)

    numbers = [float(label) for label in labels if label]  # every label is a plain number (float() raises otherwise)
    assert len(numbers) >= 3, (name, labels)
    assert len(set(labels)) == len(labels), labels  # no two ticks read the same
    slack = 0.02 * (hi - lo)
    assert all(lo - slack <= v <= hi + slack for v in numbers), (labels, lo, hi)
    assert "x0." not in title and "(x" not in title, title  # no SI-prefix multiplier: the ticks are the loss itself
    if log_y and name == "very wide":  # ticks spread over the range, not bunched in one decade
        assert math.log10(max(numbers) / min(numbers)) >= 3, labels
