"""The layers stay apart, checked on the import graph and the syntax tree (ast), so CI fails when they mix.

- core/ and services/ never import Qt, pyqtgraph or the app; core/ never imports services/ (imports point down);
  the CLI imports the app in one place only (cli/launch.py, for the bare command).
- The app uses a training session only through its public API (``SESSION_API``): no gui module reads or
  assigns anything else of a session (``session.cfg``, ``getattr(session, "ema")``, ...).
- Presenters import no widget (only the view Protocols) and no QtWidgets/QtGui; views import no presenter.
- config validation needs no torch, and config.py does not import model_factory (no cycle between them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ddpm_studio"
QT = ("PySide6", "shiboken6", "pyqtgraph")
#: What the app may use of a TrainingSession (besides building one): thread-safe by design.
SESSION_API = {"steps", "snapshot", "set_keep_last"}


def modules(package: Path, sub: str) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted((package / sub).rglob("*.py")):
        yield str(path.relative_to(package.parent)), ast.parse(path.read_text(encoding="utf-8"), str(path))


def imported(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every module an import statement names, anywhere in the file (function-level imports too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # ``from ddpm_studio.gui import dialogs`` imports ddpm_studio.gui.dialogs
                yield node.lineno, f"{node.module}.{alias.name}"


#: The one module of the CLI that may import the app: the bare command opens the window.
CLI_LAUNCHER = "/cli/launch.py"


def import_violations(package: Path) -> list[str]:
    found = []
    for layer, banned in (("core", (*QT, "ddpm_studio.gui", "ddpm_studio.services", "ddpm_studio.cli")),
                          ("services", (*QT, "ddpm_studio.gui", "ddpm_studio.cli")),
                          ("cli", (*QT, "ddpm_studio.gui"))):
        for name, tree in modules(package, layer):
            if name.endswith(CLI_LAUNCHER):
                continue
            for line, module in imported(tree):
                if module.split(".")[0] in banned or any(module == b or module.startswith(b + ".") for b in banned):
                    found.append(f"{name}:{line} imports {module}")
    return found


def _names_a_session(node: ast.expr) -> bool:
    """``session``, ``self.session``, ``self._worker.session``, ``live_session``: a value that holds a session."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return "session" in name.lower()


def session_violations(package: Path) -> list[str]:
    """Reads and writes of a session's attributes outside SESSION_API, in every gui module."""
    found = []
    for name, tree in modules(package, "gui"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _names_a_session(node.value) and node.attr not in SESSION_API:
                found.append(f"{name}:{node.lineno} uses session.{node.attr}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
                  and _names_a_session(node.args[0]) and isinstance(node.args[1], ast.Constant)
                  and node.args[1].value not in SESSION_API):
                found.append(f"{name}:{node.lineno} uses {node.func.id}(session, {node.args[1].value!r})")
    return found


def gui_layer_violations(package: Path) -> list[str]:
    found = []
    for name, tree in modules(package, "gui/presenters"):
        for line, module in imported(tree):
            if module.startswith(("PySide6.QtWidgets", "PySide6.QtGui")) or (
                    module.startswith("ddpm_studio.gui.views") and not module.startswith("ddpm_studio.gui.views.protocols")):
                found.append(f"{name}:{line} imports {module} (a presenter knows its views only by their Protocols)")
    for name, tree in modules(package, "gui/views"):
        for line, module in imported(tree):
            if module.startswith(("ddpm_studio.gui.presenters", "ddpm_studio.gui.studio")):
                found.append(f"{name}:{line} imports {module} (a view does not know its presenter)")
    return found


def test_core_and_services_import_no_qt_and_point_down() -> None:
    assert import_violations(PACKAGE) == []


def test_the_import_check_lets_only_the_launcher_of_the_cli_import_the_app(tmp_path: Path) -> None:
    package = tmp_path / "ddpm_studio"
    (package / "cli").mkdir(parents=True)
    (package / "cli" / "launch.py").write_text("def f():\n    from ddpm_studio.gui import main\n")
    (package / "cli" / "runs.py").write_text("def f():\n    from ddpm_studio.gui.studio import Studio\n")
    assert import_violations(package) == ["ddpm_studio/cli/runs.py:2 imports ddpm_studio.gui.studio",
                                          "ddpm_studio/cli/runs.py:2 imports ddpm_studio.gui.studio.Studio"]


def test_the_app_uses_only_the_sessions_public_api() -> None:
    from ddpm_studio.services.training import TrainingSession

    assert all(callable(getattr(TrainingSession, name)) for name in SESSION_API)
    assert session_violations(PACKAGE) == []


def test_presenters_and_views_stay_apart() -> None:
    assert gui_layer_violations(PACKAGE) == []


@pytest.mark.parametrize("bad", [
    "def f(session):\n    return session.cfg\n",
    "def f(self):\n    self._worker.session.ema = None\n",
    "def f(session):\n    return getattr(session, 'class_names', ())\n",
])
def test_the_session_check_catches_internals(tmp_path: Path, bad: str) -> None:
    (tmp_path / "gui").mkdir()
    (tmp_path / "gui" / "x.py").write_text(bad)
    (tmp_path / "gui" / "ok.py").write_text("def f(session):\n    session.set_keep_last(2)\n    return session.snapshot()\n")
    assert len(session_violations(tmp_path)) == 1


def test_config_validation_needs_no_torch_and_no_model_factory() -> None:
    probe = ("import sys; from ddpm_studio.services import config as c;"
             "errors = c.validate(c.from_dict({'data': {'image_size': 250}}));"
             "assert 'divisible' in errors[0], errors;"
             "print(sorted(m for m in sys.modules if m == 'torch' or m.endswith('model_factory')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    config_imports = {module for _, module in imported(ast.parse((PACKAGE / "services" / "config.py").read_text()))}
    assert not any("model_factory" in m for m in config_imports)
