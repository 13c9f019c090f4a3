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


def test_a_request_runs_on_the_session_thread_while_it_waits_paused():
    control = RunControl()
    control.pause()
    waiter_ready = threading.Event()
    threads = {}

    def session_thread():
        threads["session"] = threading.get_ident()
        waiter_ready.set()
        control.wait_resumed()

    th = threading.Thread(target=session_thread)
    th.start()
    waiter_ready.wait(2)
    future = control.submit(lambda: threading.get_ident())
    assert future.result(timeout=2) == threads["session"]  # served while paused, by the paused thread
    assert control.paused and th.is_alive()
    control.resume()
    th.join(2)


def test_requests_wait_for_the_next_safe_point_then_run_on_the_callers_thread_after_close():
    control = RunControl()
    ran = []
    future = control.submit(lambda: ran.append("between steps") or 7)
    assert not future.done() and ran == []  # nothing runs until the session reaches a safe point
    control.run_pending()
    assert future.result(0) == 7 and ran == ["between steps"]
    failing = control.submit(lambda: 1 / 0)
    control.close()  # the session ended: what is pending is served, errors go to the waiter
    with pytest.raises(ZeroDivisionError):
        failing.result(0)
    after = control.submit(threading.get_ident)
    assert after.done() and after.result() == threading.get_ident()


def test_wait_resumed_times_out():
    control = RunControl()
    control.pause()
    t0 = time.monotonic()
    assert control.wait_resumed(0.1) is False
    assert 0.05 < time.monotonic() - t0 < 2
