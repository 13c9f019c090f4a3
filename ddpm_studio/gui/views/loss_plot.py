"""Live loss plot (LossPlotView): raw and smoothed loss, loss per range of t, validation loss, learning rate.

Why it stays smooth at a million points: samples go into capacity-doubling numpy buffers (amortised
O(1) appends, no Python lists), the curves are redrawn by a timer at most ``REDRAW_MS`` apart and
only when new data arrived, and pyqtgraph draws only the visible range (``clipToView``) reduced to
about two points per pixel column (``autoDownsample`` with the peak method, which keeps spikes).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from ddpm_studio.core.choices import TIMESTEP_BUCKETS

REDRAW_MS = 100
SMOOTHING = 0.98  # weight of the past in the debiased exponential moving average
BUCKET_COLOURS = ("#1565c0", "#2e7d32", "#ef6c00", "#c62828", "#6a1b9a", "#00838f", "#5d4037", "#ad1457")


def bucket_label(i: int, n: int = TIMESTEP_BUCKETS) -> str:
    """The range of t that bucket ``i`` of ``n`` covers, e.g. ``t∈[T/4, T/2)``."""

    def at(k: int) -> str:
        f = Fraction(k, n)
        return "0" if f == 0 else "T" if f == 1 else f"{'' if f.numerator == 1 else f.numerator}T/{f.denominator}"

    return f"t∈[{at(i)}, {at(i + 1)})"


class ScientificAxis(pg.AxisItem):
    """Tick labels like 2e-04: learning rates are unreadable as 0.0002 or with an SI multiplier."""

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        out = []
        for v in values:
            mantissa, exponent = f"{v * scale:.1e}".split("e")
            out.append(f"{mantissa.removesuffix('.0')}e{exponent}" if v else "0")
        return out


class LossAxis(pg.AxisItem):
    """On a log axis, label only 1, 2 and 5 of each decade: every minor tick crowds a short plot."""

    def logTickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        out = []
        for v in values:
            x = 10 ** (v * scale)
            mantissa = x / 10 ** math.floor(math.log10(x) + 1e-9)
            out.append(f"{x:g}" if round(mantissa, 6) in (1.0, 2.0, 5.0) else "")
        return out


class GrowingBuffer:
    """Parallel x / y float64 arrays that double their capacity when full (pyqtgraph scrolling-plot recipe)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._x = np.empty(max(1, capacity), np.float64)
        self._y = np.empty(max(1, capacity), np.float64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        return len(self._x)

    @property
    def x(self) -> np.ndarray:
        return self._x[: self._n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self._n]

    def append(self, x: np.ndarray | float, y: np.ndarray | float) -> None:
        xs, ys = np.atleast_1d(np.asarray(x, np.float64)), np.atleast_1d(np.asarray(y, np.float64))
        if xs.shape != ys.shape:
            raise ValueError(f"x and y differ in length ({xs.shape} vs {ys.shape})")
        need = self._n + len(xs)
        if need > len(self._x):
            capacity = len(self._x)
            while capacity < need:
                capacity *= 2
            for name in ("_x", "_y"):
                grown = np.empty(capacity, np.float64)
                grown[: self._n] = getattr(self, name)[: self._n]
                setattr(self, name, grown)
        self._x[self._n : need] = xs
        self._y[self._n : need] = ys
        self._n = need

    def truncate_after(self, x: float) -> None:
        """Drop points with x > ``x`` (a resumed run re-trains those steps)."""
        self._n = int(np.searchsorted(self._x[: self._n], x, side="right"))

    def clear(self) -> None:
        self._n = 0


class Smoother:
    """Debiased EMA (as TensorBoard's smoothing) fed incrementally, so history never needs recomputing.

    The weight is per *step*: a point logged every 10 steps decays the past by ``weight**10``, so a
    reopened run (one point per logged line) is smoothed like the live run (one point per step).
    """

    def __init__(self, weight: float = SMOOTHING) -> None:
        self.weight = weight
        self.reset()

    def feed(self, values: np.ndarray, steps: np.ndarray | None = None) -> np.ndarray:
        values = np.asarray(values, np.float64)
        if steps is None:
            gaps = np.ones(len(values))
        else:
            steps = np.asarray(steps, np.float64)
            gaps = steps - np.concatenate([[self._last_step], steps[:-1]])  # NaN for the very first point
            if len(steps):
                self._last_step = float(steps[-1])
        out = np.empty(len(values), np.float64)
        v, norm, w = self._value, self._norm, self.weight
        for i, (y, gap) in enumerate(zip(values.tolist(), gaps.tolist(), strict=True)):
            decay = w**gap if gap > 0 else w  # (NaN > 0 is False)
            v = decay * v + (1 - decay) * y
            norm = decay * norm + (1 - decay)  # debiasing: the first point is not pulled towards 0
            out[i] = v / norm
        self._value, self._norm = v, norm
        return out

    def reset(self) -> None:
        self._value, self._norm, self._last_step = 0.0, 0.0, float("nan")


class LossPlot(QWidget):
    """The plot and its toggles; ``append_batch`` is cheap, drawing happens on the timer."""

    diverged = Signal(int)  # step of the first non-finite loss

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=False)
        self.raw = GrowingBuffer()
        self.smooth = GrowingBuffer()
        self.lr = GrowingBuffer()
        self.val = GrowingBuffer(64)
        self.quartiles = [GrowingBuffer(256) for _ in range(TIMESTEP_BUCKETS)]
        self._smoother = Smoother()
        self._dirty = False
        self._diverged_reported = False
        self.redraws = 0

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        self.toggles: dict[str, QCheckBox] = {}
        for key, text, on, tip in (
            ("raw", "Raw", True, "Loss of every optimisation step"),
            ("smooth", "Smoothed", True, "Exponential moving average of the raw loss"),
            ("quartiles", "By t", False, f"Loss by range of the timestep: {bucket_label(0)} … "
             f"{bucket_label(TIMESTEP_BUCKETS - 1)} (logged every few steps)"),
            ("val", "Validation", True, "Loss on fixed held-out images, noise and timesteps, at each preview"),
            ("lr", "LR", True, "The learning rate schedule (lower plot)"),
            ("logy", "Log y", True, "Logarithmic loss axis"),
        ):
            box = QCheckBox(text)
            box.setChecked(on)
            box.setToolTip(tip)
            box.toggled.connect(self._apply_toggles)
            self.toggles[key] = box
            bar.addWidget(box)
        bar.addStretch(1)
        fit = QPushButton("Fit")
        fit.setToolTip("Zoom to show all data (drag to pan, wheel to zoom, right-click for more)")
        fit.clicked.connect(self.autoscale)
        bar.addWidget(fit)
        layout.addLayout(bar)

        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("w")
        layout.addWidget(self.view, 1)
        self.plot = self.view.addPlot(row=0, col=0, axisItems={"left": LossAxis("left")})
        self.plot.setLabel("left", "loss")
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.legend = self.plot.addLegend(offset=(-10, 10), labelTextColor="#333", brush=pg.mkBrush(255, 255, 255, 200))
        self.plot.setClipToView(True)
        self.plot.setDownsampling(auto=True, mode="peak")
        self.lr_plot = self.view.addPlot(row=1, col=0, axisItems={"left": ScientificAxis("left")})
        self.lr_plot.setLabel("left", "lr")
        self.lr_plot.setLabel("bottom", "step")
        self.lr_plot.setXLink(self.plot)
        self.lr_plot.setMaximumHeight(90)
        self.plot.setMinimumHeight(140)
        self.lr_plot.getAxis("left").enableAutoSIPrefix(False)
        # Fewer tick levels with text: a short log axis otherwise labels every minor tick on top of each other.
        self.lr_plot.getAxis("left").setStyle(textFillLimits=[(0, 0.6), (2, 0.3)])
        self.view.ci.layout.setRowStretchFactor(0, 4)
        self.view.ci.layout.setRowStretchFactor(1, 1)
        self.lr_plot.showGrid(x=True, y=True, alpha=0.25)
        self.lr_plot.setClipToView(True)
        self.lr_plot.setDownsampling(auto=True, mode="peak")
        self.lr_plot.getAxis("left").setWidth(55)
        self.plot.getAxis("left").setWidth(55)

        kw: dict[str, Any] = {"autoDownsample": True, "downsampleMethod": "peak", "clipToView": True, "skipFiniteCheck": True}
        self.curves = {
            "raw": self.plot.plot(pen=pg.mkPen("#90a4ae", width=1), **kw),
            "smooth": self.plot.plot(pen=pg.mkPen("#0d47a1", width=2), **kw),
            "val": self.plot.plot(pen=pg.mkPen("#d81b60", width=2), symbol="o", symbolSize=5, symbolBrush="#d81b60", **kw),
            "lr": self.lr_plot.plot(pen=pg.mkPen("#6a1b9a", width=1.5), **kw),
        }
        for q in range(TIMESTEP_BUCKETS):
            colour = BUCKET_COLOURS[q % len(BUCKET_COLOURS)]
            self.curves[f"q{q}"] = self.plot.plot(pen=pg.mkPen(colour, width=1.5), **kw)
        self.empty_text = pg.TextItem("The loss appears here once training starts", color="#777", anchor=(0.5, 0.5))
        self.plot.addItem(self.empty_text, ignoreBounds=True)
        self._apply_toggles()

        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()

    # -- data in ------------------------------------------------------------------------------------
    def append_batch(self, batch: Any) -> None:
        """Add a ProgressBatch: per-step losses and lrs, plus logged records (quartiles, validation)."""
        steps = np.asarray(batch.steps, np.float64)
        losses = np.asarray(batch.losses, np.float64)
        if len(steps):
            finite = np.isfinite(losses)
            if not finite.all() and not self._diverged_reported:
                self._diverged_reported = True
                self.diverged.emit(int(steps[~finite][0]))
            self.raw.append(steps[finite], losses[finite])
            self.smooth.append(steps[finite], self._smoother.feed(losses[finite], steps[finite]))
            self.lr.append(steps, np.asarray(batch.lrs, np.float64))
        self.add_records(batch.records)
        self._dirty = True

    def add_records(self, records: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> None:
        for record in records:
            step = record.get("step")
            if not isinstance(step, int | float):
                continue
            val = record.get("val_loss")
            if _finite(val):
                self.val.append(step, val)
            for q in range(TIMESTEP_BUCKETS):
                value = record.get(f"loss_q{q}")
                if _finite(value):
                    self.quartiles[q].append(step, value)
        self._dirty = True

    def load_history(self, records: list[dict[str, Any]]) -> None:
        """Plot an earlier run from its metrics log (windowed losses: one point per logged line)."""
        self.clear()
        rows = [r for r in records if isinstance(r.get("step"), int | float) and _finite(r.get("loss"))]
        if rows:
            steps = np.array([r["step"] for r in rows], np.float64)
            losses = np.array([r["loss"] for r in rows], np.float64)
            self.raw.append(steps, losses)
            self.smooth.append(steps, self._smoother.feed(losses, steps))
            lr_rows = [r for r in rows if _finite(r.get("lr"))]
            self.lr.append(np.array([r["step"] for r in lr_rows], np.float64), np.array([r["lr"] for r in lr_rows], np.float64))
        self.add_records(records)
        self.redraw()
        self.autoscale()

    def truncate_after(self, step: int) -> None:
        for buf in (self.raw, self.smooth, self.lr, self.val, *self.quartiles):
            buf.truncate_after(step)
        self._dirty = True

    def clear(self) -> None:
        for buf in (self.raw, self.smooth, self.lr, self.val, *self.quartiles):
            buf.clear()
        self._smoother.reset()
        self._diverged_reported = False
        self._dirty = True

    # -- drawing ------------------------------------------------------------------------------------
    def redraw(self) -> None:
        """setData once per curve, only when something arrived since the last redraw."""
        if not self._dirty:
            return
        self._dirty = False
        self.redraws += 1
        self._show_empty_state(len(self.raw) == 0)
        log_y = self.toggles["logy"].isChecked()
        for key, buf in (("raw", self.raw), ("smooth", self.smooth), ("val", self.val), ("lr", self.lr),
                         *((f"q{q}", self.quartiles[q]) for q in range(TIMESTEP_BUCKETS))):
            x, y = buf.x, buf.y
            if log_y and key != "lr":
                keep = y > 0
                if not keep.all():
                    x, y = x[keep], y[keep]
            self.curves[key].setData(x, y)

    def _show_empty_state(self, empty: bool) -> None:
        """A hint instead of meaningless default ticks before the first point."""
        was_empty = self.empty_text.isVisible()
        self.empty_text.setVisible(empty)
        if empty:
            log_y = self.toggles["logy"].isChecked()
            if log_y:
                self.plot.setYRange(-1.5, 0.3, padding=0)
            else:
                self.plot.setYRange(0, 1.2, padding=0)
            self.plot.setXRange(0, 1000, padding=0)
            self.lr_plot.setYRange(0, 2e-4, padding=0)
            self.empty_text.setPos(500, -0.6 if log_y else 0.6)
        elif was_empty:
            self.autoscale()  # the first data: follow it again

    def _apply_toggles(self) -> None:
        t = {k: box.isChecked() for k, box in self.toggles.items()}
        self.curves["raw"].setVisible(t["raw"])
        self.curves["smooth"].setVisible(t["smooth"])
        self.curves["val"].setVisible(t["val"])
        for q in range(TIMESTEP_BUCKETS):
            self.curves[f"q{q}"].setVisible(t["quartiles"])
        self.lr_plot.setVisible(t["lr"])
        # The plots share x: label it once, under the lower one.
        self.plot.getAxis("bottom").setStyle(showValues=not t["lr"])
        self.plot.setLabel("bottom", "" if t["lr"] else "step")
        self.legend.clear()  # list only the curves that are shown
        names = {"raw": "loss", "smooth": "smoothed", "val": "validation"}
        for key, name in names.items():
            if t[key]:
                self.legend.addItem(self.curves[key], name)
        if t["quartiles"]:
            for q in range(TIMESTEP_BUCKETS):
                self.legend.addItem(self.curves[f"q{q}"], bucket_label(q))
        self.plot.setLogMode(y=t["logy"])
        self._dirty = True
        self.redraw()
        if len(self.raw) == 0:
            self._show_empty_state(True)

    def autoscale(self) -> None:
        self.plot.enableAutoRange()
        self.lr_plot.enableAutoRange()

    @property
    def points(self) -> int:
        """Number of raw loss points held (tests and the status line use it)."""
        return len(self.raw)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
