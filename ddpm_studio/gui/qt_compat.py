"""A work-around for a reference-counting bug in PySide6 6.12.0 on Python < 3.12, applied on import.

That build returns ``None`` (from every void method: ``setText``, ``setValue``, ``processEvents``,
``update``, ...) and ``True`` (from ``Signal.emit``) without owning a reference, as if they were
immortal, which they only are from Python 3.12 on. Every Qt call from Python then takes one
reference away from ``None`` or ``True``; a training window makes thousands of calls a second and
the interpreter aborts within a minute ("Fatal Python error: none_dealloc"). PySide6 6.11.3 is not
affected. The fix gives ``None``, ``True`` and ``False`` the same effective immortality 3.12 has: a
reference count so large (2**40) that no number of stolen references can reach zero. It is detected,
not assumed: with a correct binding, or on 3.12+, nothing is changed.
"""

from __future__ import annotations

import ctypes
import sys

BOOST = 1 << 40
_applied = False


def binding_drops_references() -> bool:
    """True when calling a void Qt method or emitting a signal lowers the count of None / True."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(32):
        probe.setObjectName("probe")  # void: returns None
        probe.ping.emit()  # returns True
    lost_none = none_before - sys.getrefcount(None)
    lost_true = true_before - sys.getrefcount(True)
    return lost_none >= 16 or lost_true >= 16


def _add_references(obj: object, n: int) -> None:
    """Raise ``obj``'s reference count by ``n`` (CPython: ob_refcnt is the object's first field)."""
    refcnt = ctypes.c_ssize_t.from_address(id(obj))
    refcnt.value += n


def apply() -> bool:
    """Make None/True/False effectively immortal when the binding drops references; True when applied."""
    global _applied
    if _applied:
        return True
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12) or not binding_drops_references():
        return False
    for obj in (None, True, False):
        before = sys.getrefcount(obj)
        _add_references(obj, BOOST)
        if sys.getrefcount(obj) - before != BOOST:  # unexpected object layout: undo, never guess
            _add_references(obj, -BOOST)
            return False
    _applied = True
    return True
