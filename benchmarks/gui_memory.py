"""How much memory does the desktop app hold, idle and around a training run's previews? Fails above its bounds.

Usage (from the repository root)::

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/gui_memory.py [--json PATH] [--no-run]

In a fresh process (resident memory, Linux ``/proc``):

1. **idle**: the window painted, PyTorch warmed up, the first scans and size estimates done;
2. **exercised**: after what made memory climb in the new-user walkthrough with no training running: image
   sizes typed in Settings (valid and not: 2, 25, 250, 2500, abc, …), every Image size in the Dataset panel
   (demo thumbnails), a file dialog opened and closed; measured once the app is idle again;
3. **during previews**: the peak while the laptop preset (the app's defaults, on the CPU, demo shapes) trains two
   steps with a preview at step 0 and step 2 (sampling, validation loss, the trajectory shown);
4. **after the run**: idle again after that run.

Bounds (the check: exit status 1 when one is exceeded): idle ≤ 1,000 MB (measured
~850 MB: PyTorch alone is ~510 MB, its compiler stack ~155 MB more); exercising the idle window adds ≤ 120 MB; the
peak during the laptop preset's previews ≤ 1,600 MB (~1,100-1,400 MB measured, float32); after the run, ≤ 300 MB
above idle (main kept ~550 MB there: freed memory glibc's malloc never gave back).
Writes ``benchmarks/results/gui_memory.json`` (or ``--json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BOUNDS_MB = {"idle": 1000.0, "exercised_growth": 120.0, "preview_peak": 1600.0, "after_run_growth": 300.0}
SIZES_TYPED = ("2", "25", "250", "2500", "abc", "1", "12", "128", "64", "32")


class PeakMeter:
    """The highest resident memory seen, sampled every 10 ms on its own thread."""

    def __init__(self) -> None:
        from ddpm_studio.services.memory import process_memory_mb

        self._read, self.peak, self._stop = process_memory_mb, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            time.sleep(0.01)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def measure(run: bool = True) -> dict[str, float]:
    from PySide6.QtWidgets import QApplication, QFileDialog

    from ddpm_studio.gui.app import create_app
    from ddpm_studio.services import config as config_mod
    from ddpm_studio.services.memory import process_memory_mb
    from ddpm_studio.services.run_presets import default_config

    handle = create_app(exec_app=False, settings_path=os.environ["DDPM_STUDIO_SETTINGS"], offer_interrupted=False)
    studio, app, window = handle.studio, handle.app, handle.window

    def pump(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)

    def settle(timeout: float = 300.0) -> float:
        """Wait until no background job runs, then for the app's memory timer (it hands back freed memory)."""
        end = time.perf_counter() + timeout
        while (studio.tasks.running() or studio.training.is_running()) and time.perf_counter() < end:
            pump(0.05)
        pump(4.5)  # two ticks of the 2-second memory timer
        return process_memory_mb()

    end = time.perf_counter() + 300
    while not studio.torch_ready and time.perf_counter() < end:
        pump(0.05)
    out = {"idle": settle()}

    form = window.settings_panel.field_editor("data", "image_size")
    for text in SIZES_TYPED:  # typed into Settings: each edit is a size estimate and a dataset-panel update
        form.setText(text)
        form.textEdited.emit(text)
        pump(0.3)
    sizes = window.dataset_panel.size
    for i in range(sizes.count()):  # every size the Dataset panel offers: demo thumbnails each time
        sizes.setCurrentIndex(i)
        pump(0.3)
    dialog = QFileDialog(window, "Choose a folder of images", str(Path.home()))
    dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
    dialog.show()
    pump(1.0)
    dialog.close()
    dialog.deleteLater()
    studio.settings.set_config(default_config())
    out["exercised"] = settle()

    if run:
        cfg = config_mod.from_dict({
            "optim": {"total_steps": 2, "device": "cpu"},  # the laptop's case, also on a machine with a GPU
            "schedule": {"preview_every": 2, "preview_minutes": 0.0, "checkpoint_every": 0, "checkpoint_minutes": 0.0},
            "data": {"cache": False},
        }, base=default_config())
        studio.settings.set_config(cfg)
        pump(0.5)
        meter = PeakMeter()
        if not studio.training.start():
            raise RuntimeError(f"Start refused: {studio.training.verdict.reasons}")
        end = time.perf_counter() + 1800
        while studio.training.is_running() and time.perf_counter() < end:
            pump(0.05)
        out["preview_peak"] = meter.stop()
        out["previews"] = float(window.trajectory.preview_count)
        out["after_run"] = settle()
    studio.shutdown()
    window.close()
    QApplication.processEvents()
    return {k: round(v, 1) for k, v in out.items()}


def verdicts(m: dict[str, float]) -> list[tuple[str, float, float]]:
    """(what, measured, bound) for every bound that applies."""
    rows = [("idle window", m["idle"], BOUNDS_MB["idle"]),
            ("exercising it adds", m["exercised"] - m["idle"], BOUNDS_MB["exercised_growth"])]
    if "preview_peak" in m:
        rows += [("peak during the laptop preset's previews", m["preview_peak"], BOUNDS_MB["preview_peak"]),
                 ("after the run, above idle", m["after_run"] - m["idle"], BOUNDS_MB["after_run_growth"])]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "gui_memory.json"))
    parser.add_argument("--no-run", action="store_true", help="measure the idle window only (no training run)")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = tempfile.mkdtemp(prefix="ddpm-gui-memory-")
    for key, value in (("DDPM_STUDIO_RUNS_DIR", "runs"), ("DDPM_STUDIO_SETTINGS", "settings.ini"),
                       ("XDG_CACHE_HOME", "cache")):  # never the user's runs, settings or cache
        os.environ.setdefault(key, os.path.join(tmp, value))
    measured = measure(run=not args.no_run)
    rows = verdicts(measured)
    print(f"{'resident memory (MB)':45} {'measured':>9} {'bound':>7}")
    for what, value, bound in rows:
        print(f"{what:45} {value:9,.0f} {bound:7,.0f}  {'ok' if value <= bound else 'OVER'}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"measured_mb": measured, "bounds_mb": BOUNDS_MB,
                                           "ok": all(v <= b for _, v, b in rows)}, indent=2))
    return 0 if all(v <= b for _, v, b in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
