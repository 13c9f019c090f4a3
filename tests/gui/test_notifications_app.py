"""The app's notifications: each run's Notifier sees every event on the worker thread, its outcome reaches the desktop
(a tray message where the system has a tray, nothing otherwise) and the webhook (a local HTTP server on 127.0.0.1);
the webhook URL is a preference edited from File → Notifications…."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from unittest.mock import MagicMock

import pytest

from ddpm_studio.gui.preferences import Preferences, open_settings
from ddpm_studio.gui.presenters.messages import Verdict
from ddpm_studio.gui.presenters.notifications import NotificationsPresenter
from ddpm_studio.gui.presenters.training import TrainingPresenter
from ddpm_studio.gui.views import notifications as tray_module
from ddpm_studio.gui.views.notifications import DesktopNotifications
from ddpm_studio.gui.views.protocols import (
    DialogService,
    LossPlotView,
    NotificationsView,
    RunControlsView,
    StatusView,
    TrajectoryView,
)
from ddpm_studio.services import config as c
from ddpm_studio.services.notifications import Notification, Notifier
from tests.gui.fakes import FakeTrainingSession, last
from tests.services.test_notifications import Hook

WAIT = 20_000


@pytest.fixture
def hook():
    receiver = Hook("ok")
    yield receiver
    receiver.close()


def presenter(tmp_path: Path, notifier_factory: Any, **fake: Any) -> TrainingPresenter:
    def factory(cfg: Any, *, runs_dir: Any, resume_from: Any, control: Any, overrides: Any) -> FakeTrainingSession:
        return FakeTrainingSession(control, run_dir=str(tmp_path / "cats"), **fake)

    p = TrainingPresenter(MagicMock(spec=RunControlsView), MagicMock(spec=LossPlotView), MagicMock(spec=TrajectoryView),
                          MagicMock(spec=StatusView), MagicMock(spec=DialogService), runs_dir=lambda: tmp_path,
                          session_factory=factory, notifier_factory=notifier_factory)
    p.set_verdict(Verdict(c.RunConfig(), True))
    return p


def test_a_completed_run_is_posted_to_the_webhook_and_shown_on_the_desktop(qtbot, tmp_path: Path, hook) -> None:
    view = MagicMock(spec=NotificationsView)
    prefs = Preferences(open_settings(tmp_path / "prefs.ini"))
    prefs.set_webhook_url(hook.url)
    notifications = NotificationsPresenter(view, prefs)
    p = presenter(tmp_path, notifications.new_notifier, steps=5)
    p.notified.connect(notifications.show)
    assert p.start()
    qtbot.waitUntil(lambda: not p.is_running() and view.notify.called, timeout=WAIT)
    title, message = last(view.notify)
    assert title == "cats: completed" and "completed at step 5" in message
    assert hook.arrived.wait(10)
    assert hook.states() == ["completed"]
    body = hook.received[0]["json"]
    assert body["run"] == "cats" and body["state"] == "completed" and body["step"] == 5
    assert hook.received[0]["path"] == "/hooks/SECRET-TOKEN"


def test_a_failed_run_notifies_and_no_webhook_means_the_desktop_only(qtbot, tmp_path: Path) -> None:
    notes: list[Notification] = []
    p = presenter(tmp_path, Notifier, fail_at=4)
    p.notified.connect(notes.append)
    assert p.start()
    qtbot.waitUntil(lambda: not p.is_running() and bool(notes), timeout=WAIT)
    assert [n.state for n in notes] == ["failed"] and "out of memory" in notes[0].message.lower()


def test_a_stop_is_not_worth_a_notification(qtbot, tmp_path: Path) -> None:
    notes: list[Notification] = []
    p = presenter(tmp_path, Notifier, steps=10**9)
    p.notified.connect(notes.append)
    assert p.start()
    qtbot.waitUntil(lambda: p.step >= 3, timeout=WAIT)
    p.stop()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)
    assert notes == []


def test_a_webhook_that_refuses_never_stops_the_run(qtbot, tmp_path: Path) -> None:
    from tests.services.test_notifications import refusing_url

    p = presenter(tmp_path, lambda: Notifier(refusing_url()), steps=5)
    ended: list[Any] = []
    p.runEnded.connect(ended.append)
    assert p.start()
    qtbot.waitUntil(lambda: bool(ended), timeout=WAIT)
    assert ended[0].reason == "completed"


def test_the_webhook_url_is_a_checked_preference(tmp_path: Path) -> None:
    view = MagicMock(spec=NotificationsView)
    prefs = Preferences(open_settings(tmp_path / "prefs.ini"))
    notifications = NotificationsPresenter(view, prefs)
    view.ask_webhook_url.side_effect = ["ftp://example.com/x", " https://hooks.example.com/T0K3N "]
    assert notifications.edit_webhook()
    assert prefs.webhook_url() == "https://hooks.example.com/T0K3N"
    first, second = view.ask_webhook_url.call_args_list
    assert first.args == ("", "") and "must start with http" in second.args[1]  # asked again, saying why
    assert notifications.new_notifier().url == "https://hooks.example.com/T0K3N"
    view.ask_webhook_url.side_effect = [None]  # Cancel changes nothing
    assert not notifications.edit_webhook() and prefs.webhook_url() == "https://hooks.example.com/T0K3N"
    view.ask_webhook_url.side_effect = [""]  # empty: no webhook
    assert notifications.edit_webhook() and prefs.webhook_url() == ""
    assert notifications.new_notifier().url is None
    prefs.set_webhook_url("not a url")  # a stored URL that no longer checks: desktop notifications only
    assert notifications.new_notifier().url is None


class FakeTray:
    """Stands in for QSystemTrayIcon: whether the system has a tray, and the messages shown."""

    available = False
    MessageIcon = MagicMock()
    made: ClassVar[list[FakeTray]] = []

    def __init__(self, *_args: Any) -> None:
        self.messages: list[tuple[str, str]] = []
        FakeTray.made.append(self)

    @classmethod
    def isSystemTrayAvailable(cls) -> bool:
        return cls.available

    def setToolTip(self, _text: str) -> None:
        pass

    def show(self) -> None:
        pass

    def showMessage(self, title: str, text: str, *_args: Any) -> None:
        self.messages.append((title, text))


def test_a_tray_message_only_where_the_system_has_a_tray(qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tray_module, "QSystemTrayIcon", FakeTray)
    FakeTray.made.clear()
    desktop = DesktopNotifications(None)
    FakeTray.available = False
    desktop.notify("cats: completed", "Run cats completed at step 5.")  # no tray: nothing, and no error
    assert FakeTray.made == []
    FakeTray.available = True
    desktop.notify("cats: completed", "Run cats completed at step 5.")
    desktop.notify("dogs: failed", "Run dogs failed.")
    assert len(FakeTray.made) == 1  # one icon, made at the first message
    assert FakeTray.made[0].messages == [("cats: completed", "Run cats completed at step 5."),
                                         ("dogs: failed", "Run dogs failed.")]


def test_quitting_gives_the_last_webhook_post_a_moment(qtbot, tmp_path: Path) -> None:
    notifier = MagicMock(spec=Notifier)
    notifier.observe.return_value = None
    p = presenter(tmp_path, lambda: notifier, steps=3)
    assert p.start()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)
    assert p.shutdown()
    notifier.close.assert_called_once()


def test_a_run_paused_by_a_full_disk_notifies(qtbot, tmp_path: Path) -> None:
    notes: list[Notification] = []
    p = presenter(tmp_path, Notifier, steps=10**9, disk_full_at=4)
    p.notified.connect(notes.append)
    assert p.start()
    qtbot.waitUntil(lambda: bool(notes), timeout=WAIT)
    assert notes[0].state == "paused" and "Disk full" in notes[0].message and notes[0].step == 4
    p.stop()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)
    assert [n.state for n in notes] == ["paused"]
