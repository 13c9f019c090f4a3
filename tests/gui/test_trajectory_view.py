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


def test_a_preview_without_frames_shows_one_headed_grid_and_says_why_it_cannot_play(qtbot) -> None:
    """main: a reopened run's preview showed its final grid twice, with no heading, and the slider and Play did
    nothing (55-reopened-click-thumb.png)."""
    view = tv.TrajectoryViewer()
    qtbot.addWidget(view)
    view.resize(800, 300)
    view.show()
    final = np.full((20, 30, 3), 128, np.uint8)
    view.add_image(162, final)  # what a reopened run has: each preview's final samples
    assert view.current.step == 162
    assert view.grid_image.image is not None and view.frame_image.image is None  # one grid, not two
    headings = [c.toPlainText() for c in view.captions if c.toPlainText()]
    assert headings == ["Final samples at step 162"]
    for control in (view.slider, view.play):
        assert not control.isEnabled() and "no trajectory frames" in control.toolTip()
    view.add_preview(preview(200))  # a live preview has its frames: scrubbing and Play work again
    assert view.slider.isEnabled() and view.play.isEnabled() and view.frame_image.image is not None
    assert "no trajectory frames" not in view.slider.toolTip()
    view.strip.setCurrentRow(0)
    assert not view.play.isEnabled()


def test_the_placeholder_is_centred_again_on_a_second_run(qtbot) -> None:
    """main: after a first run's previews, clear() showed "Trajectories appear here" at the top-left."""
    view = tv.TrajectoryViewer()
    qtbot.addWidget(view)
    view.resize(800, 300)
    view.show()
    qtbot.waitExposed(view)

    def placeholder_offset() -> tuple[float, float]:
        qtbot.wait(30)
        text = view.empty_text
        assert text.isVisible()
        centre = view.view.mapFromScene(text.mapToScene(text.boundingRect().center()))
        return (centre.x() / view.view.width() - 0.5, centre.y() / view.view.height() - 0.5)

    first = placeholder_offset()
    assert abs(first[0]) < 0.15 and abs(first[1]) < 0.15, first
    view.add_preview(preview(10))
    view.clear()  # the next run starts
    again = placeholder_offset()
    assert abs(again[0]) < 0.15 and abs(again[1]) < 0.15, again
