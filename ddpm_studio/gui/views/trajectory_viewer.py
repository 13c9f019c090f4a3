"""Denoising trajectory viewer (TrajectoryView): rows = samples, columns = timesteps, x_t and predicted x0.

Every preview samples the *same* noise, so the film strip of previews by training step shows the
model improving rather than the noise changing. The slider scrubs t (the enlarged panel shows all
samples at that t), Play animates it, and the mode shows x_t, the predicted x0, or both side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from ddpm_studio.gui.views.images import rgb, to_qimage

PAD = 2
MAX_FULL_HISTORY = 40  # previews whose full trajectory arrays are kept; older ones keep their final grid only
MODES = ("x_t (noisy sample)", "predicted x₀", "side by side")
NO_FRAMES = "this preview has no trajectory frames; a reopened run keeps only each preview's final samples"


@dataclass
class PreviewEntry:
    step: int
    timesteps: tuple[int, ...]
    x_t: np.ndarray | None  # (frames, samples, H, W, C) uint8
    x0: np.ndarray | None
    final: np.ndarray  # (H, W, C) grid


def trajectory_grid(frames: np.ndarray, pad: int = PAD) -> np.ndarray:
    """(F, S, H, W, C) → one RGB image: row = sample, column = frame."""
    from ddpm_studio.services.imaging import make_grid  # (PIL: not needed to paint the window)

    f, s, h, w, c = frames.shape
    return rgb(make_grid(frames.swapaxes(0, 1).reshape(s * f, h, w, c), ncols=f, padding=pad))


def samples_grid(images: np.ndarray, pad: int = PAD) -> np.ndarray:
    """(S, H, W, C) → a near-square RGB grid."""
    from ddpm_studio.services.imaging import make_grid

    return rgb(make_grid(images, padding=pad))


def hstack(a: np.ndarray, b: np.ndarray, gap: int = 8) -> np.ndarray:
    h = max(a.shape[0], b.shape[0])
    out = np.full((h, a.shape[1] + gap + b.shape[1], 3), 255, np.uint8)
    out[: a.shape[0], : a.shape[1]] = a
    out[: b.shape[0], a.shape[1] + gap :] = b
    return out


class TrajectoryViewer(QWidget):
    """Shows one preview at a time; keeps a history of previews by step."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history: list[PreviewEntry] = []
        self.current: PreviewEntry | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)

        bar = QHBoxLayout()
        self.mode = QComboBox()
        self.mode.addItems(list(MODES))
        self.mode.setCurrentIndex(2)
        self.mode.setToolTip("x_t: the sample as it is denoised; predicted x₀: the model's guess of the clean image at that t")
        self.mode.currentIndexChanged.connect(lambda _i: (self._render(), self._fit()))
        self.play = QPushButton(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPlay), "Play")
        self.play.setCheckable(True)
        self.play.toggled.connect(self._on_play)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.valueChanged.connect(self._render)
        self.t_label = QLabel("No preview yet")
        self.t_label.setMinimumWidth(150)
        bar.addWidget(QLabel("Show"))
        bar.addWidget(self.mode)
        bar.addWidget(self.play)
        bar.addWidget(self.slider, 1)
        bar.addWidget(self.t_label)
        layout.addLayout(bar)

        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("w")
        self.grid_box = self.view.addViewBox(row=0, col=0)
        self.frame_box = self.view.addViewBox(row=0, col=1)
        self.view.ci.layout.setColumnStretchFactor(0, 3)
        self.view.ci.layout.setColumnStretchFactor(1, 2)
        for box in (self.grid_box, self.frame_box):
            box.setAspectLocked(True)
            box.invertY(True)
            box.setMenuEnabled(False)
        self.grid_image = pg.ImageItem(axisOrder="row-major")
        self.frame_image = pg.ImageItem(axisOrder="row-major")
        self.grid_box.addItem(self.grid_image)
        self.frame_box.addItem(self.frame_image)
        self.highlights = []
        for _ in range(2):  # the chosen t, in the x_t grid and (side by side) in the x0 grid
            rect = pg.QtWidgets.QGraphicsRectItem()
            rect.setPen(pg.mkPen("#e53935", width=2, cosmetic=True))
            self.grid_box.addItem(rect)
            self.highlights.append(rect)
        self.captions = [pg.TextItem("", color="#444", anchor=(0.5, 1.0)) for _ in range(4)]
        for i, caption in enumerate(self.captions):
            (self.grid_box if i < 2 else self.frame_box).addItem(caption)
        self.empty_text = pg.TextItem("Trajectories appear here at each preview", color="#777", anchor=(0.5, 0.5))
        self.grid_box.addItem(self.empty_text)
        layout.addWidget(self.view, 1)
        self._show_frame_box(False)
        self._centre_placeholder()

        self.strip = QListWidget()
        self.strip.setObjectName("preview_history")
        self.strip.setFlow(QListWidget.Flow.LeftToRight)
        self.strip.setViewMode(QListWidget.ViewMode.IconMode)
        self.strip.setWrapping(False)
        self.strip.setIconSize(QSize(40, 40))
        self.strip.setFixedHeight(72)
        self.strip.setToolTip("Earlier previews by training step (same starting noise each time)")
        self.strip.currentRowChanged.connect(self._on_history)
        self.strip.hide()  # shown with the first preview
        layout.addWidget(self.strip)

        self.timer = QTimer(self)
        self.timer.setInterval(250)
        self.timer.timeout.connect(self._advance)
        self._set_playable(False, "no preview yet")

    # -- data -------------------------------------------------------------------------------------
    def add_preview(self, preview: object) -> None:
        """Add a PreviewReady; show it if the user is looking at the newest one (or nothing yet)."""
        entry = PreviewEntry(
            step=int(preview.step),  # type: ignore[attr-defined]
            timesteps=tuple(int(t) for t in preview.timesteps),  # type: ignore[attr-defined]
            x_t=preview.x_t, x0=preview.x0_pred, final=preview.image,  # type: ignore[attr-defined]
        )
        follow = self.strip.currentRow() in (-1, len(self.history) - 1)
        self._append(entry)
        if follow:
            self.strip.setCurrentRow(len(self.history) - 1)

    def add_image(self, step: int, image: np.ndarray) -> None:
        """A preview known only by its final grid (H, W, C) uint8 (a reopened run's previews/ folder); the newest
        is shown."""
        follow = self.strip.currentRow() in (-1, len(self.history) - 1)
        self._append(PreviewEntry(step, (), None, None, image))
        if follow:
            self.strip.setCurrentRow(len(self.history) - 1)

    def _append(self, entry: PreviewEntry) -> None:
        self.history.append(entry)
        full = [e for e in self.history if e.x_t is not None]
        if len(full) > MAX_FULL_HISTORY:  # bound memory on long runs: keep the final grid of old previews
            full[0].x_t = full[0].x0 = None
        item = QListWidgetItem(QIcon(QPixmap.fromImage(to_qimage(entry.final))), f"{entry.step:,}")
        item.setToolTip(f"Preview at step {entry.step:,}")
        self.strip.addItem(item)
        self.strip.scrollToItem(item)
        self.strip.show()

    def clear(self) -> None:
        self.play.setChecked(False)
        self.history.clear()
        self.current = None
        self.strip.clear()
        self.strip.hide()
        self.grid_image.clear()
        self.frame_image.clear()
        self._clear_marks()
        self._set_playable(False, "no preview yet")
        self.slider.setRange(0, 0)
        self._show_frame_box(False)
        self.empty_text.show()
        self._centre_placeholder()
        self.t_label.setText("No preview yet")

    def _centre_placeholder(self) -> None:
        """The placeholder at the middle of the (empty) view, wherever the last run's images left the range."""
        self.grid_box.setRange(xRange=(-1, 1), yRange=(-1, 1), padding=0)
        self.empty_text.setPos(0, 0)

    def _show_frame_box(self, shown: bool) -> None:
        """The enlarged panel beside the grid, only for a preview with frames (else the grid takes the width)."""
        self.frame_box.setVisible(shown)
        self.frame_box.setMaximumWidth(1e6 if shown else 0)
        self.view.ci.layout.setColumnStretchFactor(1, 2 if shown else 0)

    def _set_playable(self, playable: bool, why: str = NO_FRAMES) -> None:
        """Scrubbing and Play need trajectory frames; a reopened run's previews have only their final samples."""
        tip = "" if playable else f" (unavailable: {why})"
        if not playable:
            self.play.setChecked(False)
        self.slider.setEnabled(playable)
        self.play.setEnabled(playable)
        self.slider.setToolTip("Scrub the timestep t" + tip)
        self.play.setToolTip("Animate the denoising from t = T to 0" + tip)

    # -- display ----------------------------------------------------------------------------------
    def _on_history(self, row: int) -> None:
        if not 0 <= row < len(self.history):
            return
        self.current = self.history[row]
        frames = len(self.current.timesteps)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, frames - 1))
        self.slider.setValue(max(0, frames - 1))
        self.slider.blockSignals(False)
        self.empty_text.hide()
        self._render()
        self._fit()

    def _fit(self) -> None:
        """Show the whole images, with room above them for the captions."""
        for box, item in ((self.grid_box, self.grid_image), (self.frame_box, self.frame_image)):
            w, h = item.width() or 1, item.height() or 1
            top = 14 * h / max(1, box.height()) * 1.2 + 4  # ~14 px of caption text, in image units
            box.setRange(xRange=(0, w), yRange=(-top, h), padding=0.02)

    def _render(self) -> None:
        entry = self.current
        if entry is None:
            return
        if entry.x_t is None or entry.x0 is None:  # one grid, headed; nothing to scrub
            self._set_playable(False)
            self._show_frame_box(False)
            self.grid_image.setImage(entry.final, autoLevels=False, levels=(0, 255))
            self.frame_image.clear()
            self._clear_marks()
            self.captions[0].setText(f"Final samples at step {entry.step:,}")
            self.captions[0].setPos(entry.final.shape[1] / 2, 0)
            self.t_label.setText(f"step {entry.step:,}: final samples")
            self.t_label.setToolTip("This preview was saved as its final samples only (no trajectory frames)")
            return
        self._set_playable(True)
        self._show_frame_box(True)
        mode, k = self.mode.currentIndex(), self.slider.value()
        if mode == 0:
            grid, frame = trajectory_grid(entry.x_t), samples_grid(entry.x_t[k])
        elif mode == 1:
            grid, frame = trajectory_grid(entry.x0), samples_grid(entry.x0[k])
        else:
            grid = hstack(trajectory_grid(entry.x_t), trajectory_grid(entry.x0))
            frame = hstack(samples_grid(entry.x_t[k]), samples_grid(entry.x0[k]))
        self.grid_image.setImage(grid, autoLevels=False, levels=(0, 255))
        self.frame_image.setImage(frame, autoLevels=False, levels=(0, 255))
        f, s, h, w, _ = entry.x_t.shape
        grid_w = f * (w + PAD) + PAD
        frame_w = samples_grid(entry.x_t[k]).shape[1]
        x = k * (w + PAD) + PAD / 2
        self.highlights[0].setRect(x, PAD / 2, w + PAD, s * (h + PAD))
        self.highlights[1].setRect(x + grid_w + 8, PAD / 2, w + PAD, s * (h + PAD)) if mode == 2 else \
            self.highlights[1].setRect(0, 0, 0, 0)
        names = ("x_t", "predicted x₀")
        texts = (names[0], names[1]) if mode == 2 else (names[mode], "")
        for caption, text, cx in ((self.captions[0], texts[0], grid_w / 2), (self.captions[1], texts[1], grid_w * 1.5 + 8),
                                  (self.captions[2], texts[0], frame_w / 2), (self.captions[3], texts[1], frame_w * 1.5 + 8)):
            caption.setText(text)
            caption.setPos(cx, 0)
        t = entry.timesteps[k]
        self.t_label.setText(f"step {entry.step:,} · t = {t} ({k + 1}/{len(entry.timesteps)})")
        self.t_label.setToolTip("Left: rows are samples, columns go from pure noise (t = T) to the image (t = 0); "
                                "the red box marks the t shown enlarged on the right"
                                + (" (x_t on the left of each pair, the predicted x₀ on the right)" if mode == 2 else ""))

    def _clear_marks(self) -> None:
        for rect in self.highlights:
            rect.setRect(0, 0, 0, 0)
        for caption in self.captions:
            caption.setText("")

    def _on_play(self, playing: bool) -> None:
        self.play.setText("Pause" if playing else "Play")
        icon = QStyle.StandardPixmap.SP_MediaPause if playing else QStyle.StandardPixmap.SP_MediaPlay
        self.play.setIcon(self.style().standardIcon(icon))
        if playing:
            if self.slider.value() >= self.slider.maximum():
                self.slider.setValue(0)
            self.timer.start()
        else:
            self.timer.stop()

    def _advance(self) -> None:
        if self.slider.value() >= self.slider.maximum():
            self.play.setChecked(False)
            return
        self.slider.setValue(self.slider.value() + 1)

    @property
    def preview_count(self) -> int:
        return len(self.history)
