import threading
import time

import pytest

from ddpm_studio.services.control import RunControl, drive


def test_pause_blocks_without_polling_and_stop_wakes_it():
    control = RunControl()
    control.pause()
    woke = threading.Event()

    def worker():
        control.wait_resumed()
        woke.set()

    th = threading.Thread(target=worker)
    th.start()
    time.sleep(0.1)
    assert not woke.is_set() and control.paused
    control.stop()
    th.join(2)
    assert woke.is_set() and control.stop_requested and not control.paused
    control.pause()  # pausing a stopped run is ignored so it cannot hang
    assert not control.paused


def test_drive_closes_generator_on_sink_error():
    closed = []

    def gen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    seen = []

    def sink(ev):
        seen.append(ev)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        drive(gen(), sink)
    assert seen == [1] and closed == [True]
