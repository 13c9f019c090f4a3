"""The trajectory viewer: grid layout, x_t / x0 modes, scrubbing, play, and the bounded history."""

from __future__ import annotations

import numpy as np

from ddpm_studio.gui.views import trajectory_viewer as tv
from ddpm_studio.services.events import PreviewReady


def preview(step: int, frames: int = 5, samples: int = 3, channels: int = 3) -> PreviewReady:
    rng = np.random.default_rng(step)
    x_t = rng.integers(0, 255, (frames, samples, 8, 8, channels), dtype=np.uint8)
    x0 = rng.integers(0, 255, (frames, samples, 8, 8, channels), dtype=np.uint8)
    return PreviewReady(step, tuple(range(frames * 10, 0, -10)), x_t, x0, np.zeros((10, 10, channels), np.uint8), "p.png")


def test_grid_rows_are_samples_and_columns_timesteps() -> None:
    frames = np.zeros((4, 3, 8, 8, 1), np.uint8)
    frames[2, 1] = 200  # frame 2 (a column) of sample 1 (a row)
    grid = tv.trajectory_grid(frames)
    assert grid.shape == (3 * 10 + 2, 4 * 10 + 2, 3)  # grayscale is shown as RGB
    y, x = 2 + 1 * 10, 2 + 2 * 10
    assert (grid[y : y + 8, x : x + 8] == 200).all() and grid[2:10, 2:10].max() == 0


def test_modes_slider_play_and_history(qtbot) -> None:
    view = tv.TrajectoryViewer()
    qtbot.addWidget(view)
    view.resize(800, 300)
    view.show()
    view.add_preview(preview(10))
    assert view.current.step == 10 and view.slider.maximum() == 4 and view.slider.value() == 4  # ends at t≈0
    assert view.captions[0].toPlainText() == "x_t" and view.captions[1].toPlainText() == "predicted x₀"
    side_by_side = view.grid_image.width()
    view.mode.setCurrentIndex(1)  # predicted x0 only
    assert view.grid_image.width() < side_by_side
    view.slider.setValue(1)
    assert "t = 40" in view.t_label.text()
    view.play.setChecked(True)
    qtbot.waitUntil(lambda: not view.play.isChecked(), timeout=5000)  # plays to the end, then stops
    assert view.slider.value() == view.slider.maximum()
    view.add_preview(preview(20))  # was looking at the newest: follows
    assert view.current.step == 20
    view.strip.setCurrentRow(0)
    view.add_preview(preview(25))  # looking at an older one: stays there
    assert view.current.step == 10 and view.preview_count == 3
    view.strip.setCurrentRow(2)
    for step in range(30, 30 + 10 * (tv.MAX_FULL_HISTORY + 5), 10):
        view.add_preview(preview(step))
    assert view.current.step == view.history[-1].step  # followed the newest
    assert sum(e.x_t is not None for e in view.history) <= tv.MAX_FULL_HISTORY  # memory stays bounded
    view.strip.setCurrentRow(0)  # an old preview keeps its final grid
    assert "final samples" in view.t_label.text()
    view.clear()
    assert view.preview_count == 0 and view.strip.isHidden()
