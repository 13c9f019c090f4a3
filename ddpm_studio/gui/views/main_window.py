"""The main window: builds and lays out the views, docks, menus and the status bar. No behaviour here.

Behaviour lives in the presenters (``gui/presenters``); the composition root (``gui/studio.py``) hands each
presenter its own views from this window, so the window can be built in tests and screenshots without
starting anything.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QMenu, QSplitter, QStatusBar, QTabWidget, QToolBar, QWidget

from ddpm_studio.gui.views.checkpoints_panel import CheckpointsPanel
from ddpm_studio.gui.views.dataset_panel import DatasetPanel
from ddpm_studio.gui.views.generate_panel import GeneratePanel
from ddpm_studio.gui.views.log_panel import LogPanel
from ddpm_studio.gui.views.loss_plot import LossPlot
from ddpm_studio.gui.views.run_controls import RunControls
from ddpm_studio.gui.views.runs_panel import RunsPanel
from ddpm_studio.gui.views.settings_panel import SettingsPanel
from ddpm_studio.gui.views.trajectory_viewer import TrajectoryViewer

DEFAULT_SIZE = (1280, 800)


class StatusBar(QStatusBar):
    """The window's status bar (StatusView): passing messages, the device, the memory in use."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.device_label = QLabel("Device: detecting…")
        self.device_label.setObjectName("device_label")
        self.memory_label = QLabel()
        self.memory_label.setObjectName("memory_label")
        self.addPermanentWidget(self.device_label)
        self.addPermanentWidget(self.memory_label)

    def set_device(self, text: str) -> None:
        self.device_label.setText(text)

    def set_memory(self, text: str) -> None:
        self.memory_label.setText(text)

    def show_message(self, text: str, timeout_ms: int = 0) -> None:
        self.showMessage(text, timeout_ms)


class MainWindow(QMainWindow):
    """Panels: docks tabbed on the left (Dataset, Settings, Runs, Checkpoints, Log), Training / Generate tabs in the centre.

    One dock column leaves the loss plot and the trajectory viewer the full height of a 1280x800 screen;
    every dock can be dragged elsewhere, and the layout is remembered.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("MainWindow")
        self.setWindowTitle("DDPM Studio")
        self.setDockNestingEnabled(True)
        self.close_handler: Callable[[], bool] | None = None

        self.run_controls = RunControls()
        toolbar = QToolBar("Training controls")
        toolbar.setObjectName("run_toolbar")
        toolbar.setMovable(False)
        toolbar.addWidget(self.run_controls)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)
        for action in self.run_controls.actions_by_name.values():
            self.addAction(action)

        self.loss_plot = LossPlot()
        self.trajectory = TrajectoryViewer()
        self.generate_panel = GeneratePanel()
        self.train_split = QSplitter(Qt.Orientation.Vertical)
        self.train_split.setObjectName("train_split")
        self.train_split.addWidget(self.loss_plot)
        self.train_split.addWidget(self.trajectory)
        self.train_split.setSizes([380, 360])
        self.tabs = QTabWidget()
        self.tabs.setObjectName("main_tabs")
        self.tabs.addTab(self.train_split, "Training")
        self.tabs.addTab(self.generate_panel, "Generate")
        self.setCentralWidget(self.tabs)

        self.dataset_panel = DatasetPanel()
        self.settings_panel = SettingsPanel()
        self.runs_panel = RunsPanel()
        self.checkpoints_panel = CheckpointsPanel()
        self.log_panel = LogPanel()
        self.docks: dict[str, QDockWidget] = {}
        left = Qt.DockWidgetArea.LeftDockWidgetArea
        for key, title, widget, area in (
            ("dataset", "Dataset", self.dataset_panel, left),
            ("settings", "Settings", self.settings_panel, left),
            ("runs", "Runs", self.runs_panel, left),
            ("checkpoints", "Checkpoints", self.checkpoints_panel, left),
            ("log", "Log", self.log_panel, left),
        ):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock_{key}")
            dock.setWidget(widget)
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                             | QDockWidget.DockWidgetFeature.DockWidgetClosable)
            self.addDockWidget(area, dock)
            self.docks[key] = dock
        for key in ("settings", "runs", "checkpoints", "log"):
            self.tabifyDockWidget(self.docks["dataset"], self.docks[key])
        self.docks["dataset"].raise_()
        self.resizeDocks([self.docks["dataset"]], [400], Qt.Orientation.Horizontal)

        self.status = StatusBar()
        self.setStatusBar(self.status)
        self._build_menus()
        self.resize(*DEFAULT_SIZE)
        self.default_state = self.saveState()

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.menu_actions: dict[str, QAction] = {}

        def add(menu: QMenu, key: str, text: str, shortcut: str | None = None) -> QAction:
            action = menu.addAction(text)
            if shortcut:
                action.setShortcut(QKeySequence(shortcut))
            self.menu_actions[key] = action
            return action

        add(file_menu, "choose_folder", "Choose &data folder…", "Ctrl+O")
        add(file_menu, "open_run", "Open &run folder…", "Ctrl+Shift+R")
        file_menu.addSeparator()
        add(file_menu, "load_config", "&Load settings…", "Ctrl+L")
        add(file_menu, "save_config", "&Save settings…", "Ctrl+S")
        add(file_menu, "runs_dir", "Change runs &folder…")
        add(file_menu, "notifications", "&Notifications…")
        file_menu.addSeparator()
        add(file_menu, "quit", "&Quit", "Ctrl+Q")
        run_menu = bar.addMenu("&Run")
        for name in ("start", "pause", "resume", "stop", "continue", "preview", "checkpoint"):
            run_menu.addAction(self.run_controls.action(name))
        run_menu.addSeparator()
        add(run_menu, "generate", "&Generate images", "Ctrl+G")
        view_menu = bar.addMenu("&View")
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        view_menu.addSeparator()
        add(view_menu, "reset_layout", "&Reset layout")
        help_menu = bar.addMenu("&Help")
        add(help_menu, "about", "&About DDPM Studio")

    def show_generate(self) -> None:
        self.tabs.setCurrentWidget(self.generate_panel)

    def reset_layout(self) -> None:
        self.restoreState(self.default_state)
        for dock in self.docks.values():
            dock.show()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Ask the composition root (a run may be active); it accepts now or closes the window later."""
        if self.close_handler is not None and not self.close_handler():
            event.ignore()
            return
        event.accept()
