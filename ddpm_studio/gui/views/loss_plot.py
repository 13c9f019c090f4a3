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
SMOOTHING = 0.98  # per-step weight of the past in the smoothed loss (a 50-step horizon once the run is long)
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


#: Mantissas tried per decade on a log axis, sparsest first: the first ladder giving enough ticks wins.
LOG_LADDERS = ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0))
MIN_TICKS = 3
TICK_PIXELS = 30  # at most one labelled tick per this many pixels of axis
LABEL_PIXELS = 16  # a tick label's height: pyqtgraph drops a label that does not fit inside the axis


def nice_linear_ticks(lo: float, hi: float, min_ticks: int = MIN_TICKS, max_ticks: int = 8) -> list[float]:
    """Round numbers (1, 2, 2.5 or 5 x 10^k apart) inside [lo, hi]: the widest step giving ``min_ticks``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    exponent = math.floor(math.log10(hi - lo))
    for k in range(exponent, exponent - 4, -1):
        for mantissa in (5.0, 2.5, 2.0, 1.0):
            step = mantissa * 10.0**k
            first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
            if last - first + 1 >= min_ticks:
                return [float(f"{i * step:.12g}") for i in range(first, last + 1)]
    return []


def log_ticks(lo: float, hi: float, max_ticks: int = 8, min_ticks: int = MIN_TICKS) -> list[float]:
    """Tick values (real units) for a log axis showing [lo, hi]: decades when the range is wide (every k-th
    when there are too many), 1-2-5 or finer steps when it spans a decade or two, evenly spaced round
    numbers when it sits inside one decade (where pyqtgraph's own ticks leave no label at all)."""
    if not (0 < lo < hi) or not math.isfinite(hi):
        return []
    max_ticks = max(min_ticks, max_ticks)
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = [d for d in range(d0, d1 + 1) if lo <= 10.0**d <= hi]
    if len(decades) >= min_ticks:
        every = math.ceil(len(decades) / max_ticks)
        return [10.0**d for d in max((decades[i::every] for i in range(every)), key=len)]
    for ladder in LOG_LADDERS:
        values = [float(f"{m * 10.0**d:.12g}") for d in range(d0, d1 + 1) for m in ladder if lo <= m * 10.0**d <= hi]
        if min_ticks <= len(values) <= max_ticks:
            return values
        if len(values) > max_ticks:
            break
    return nice_linear_ticks(lo, hi, min_ticks, max_ticks)


def tick_label(value: float) -> str:
    """A tick value as a user reads it: 0.05, 0.35, 20, 1e-5 (six significant digits at most, no padding)."""
    text = f"{value:.6g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


class LossAxis(pg.AxisItem):
    """The loss in real units, log or linear, with at least three labelled ticks at any range.

    pyqtgraph's log axis labels only whole decades and (here) 1-2-5 minor ticks, so a loss between
    0.55 and 0.75 showed no number at all, and its automatic SI prefix titled the axis "loss (x0.001)".
    The prefix is off; on a log axis the ticks come from :func:`log_ticks`, labelled by :func:`tick_label`.
    """

    def __init__(self, orientation: str, **kwargs: Any) -> None:
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)

    def tickValues(self, minVal: float, maxVal: float, size: float) -> list[tuple[float | None, list[float]]]:
        if not self.logMode:
            return super().tickValues(minVal, maxVal, size)
        lo, hi = sorted((minVal, maxVal))
        inset = (hi - lo) * LABEL_PIXELS / 2 / max(size, 1.0)  # room for half a label at each end
        values = log_ticks(10 ** (lo + inset), 10 ** (hi - inset), max_ticks=int(size // TICK_PIXELS))
        return [(None, [math.log10(v) for v in values])]

    def logTickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        return [tick_label(10**v) for v in values]


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
    """An exponential moving average whose horizon grows with the run, fed incrementally (history never recomputed).

    Why not TensorBoard's debiased EMA: early in a run the loss falls fast, and a debiased EMA with a
    50-step horizon is then close to the mean of *every* point so far, so it sat far above the raw
    curve (0.55 where the loss was 0.32 at step 100). Here the horizon at step s is at most a tenth
    of the steps so far (``HORIZON_FRACTION``), and at most ``1 / (1 - weight)`` steps: the curve follows
    the fast early fall and is as smooth as before once the run is long. The weight is per *step*: a
    point logged every 10 steps decays the past by ``decay**10``, so a reopened run (one point per
    logged line) is smoothed like the live run (one point per step).
    """

    HORIZON_FRACTION = 0.1

    def __init__(self, weight: float = SMOOTHING) -> None:
        self.weight = weight
        self.reset()

    def feed(self, values: np.ndarray, steps: np.ndarray | None = None) -> np.ndarray:
        values = np.asarray(values, np.float64)
        if steps is None:  # one point per step
            steps = self._last_step + np.arange(1, len(values) + 1, dtype=np.float64)
        steps = np.asarray(steps, np.float64)
        out = np.empty(len(values), np.float64)
        v, last, longest = self._value, self._last_step, 1.0 / (1.0 - self.weight)
        for i, (y, step) in enumerate(zip(values.tolist(), steps.tolist(), strict=True)):
            horizon = min(longest, max(1.0, self.HORIZON_FRACTION * step))
            if math.isfinite(v):  # (NaN before the first point: it starts at the first value)
                decay = (1.0 - 1.0 / horizon) ** max(step - last, 1.0)
                v = decay * v + (1.0 - decay) * y
            else:
                v = y
            out[i], last = v, step
        self._value, self._last_step = v, last
        return out

    def reset(self) -> None:
        self._value, self._last_step = float("nan"), 0.0


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
