"""Ctrl-C and SIGTERM as exceptions that cannot be lost.

Python raises a signal handler's exception wherever the main thread is at that moment. When
that is inside a finalizer (`__del__`, a weakref callback) or a library's catch-all, the
exception is dropped ("Exception ignored in ...") and the grid runs on: a `kill` then ends
with exit 0. So the handler also records the signal, and the loops that take time (every
training and evaluation batch, every cell) call `raise_pending` to raise it again.
"""
from __future__ import annotations

import os
import signal
import sys

from bench.errors import Terminated

_pending: int | None = None


def _handler(signum, frame):
    global _pending
    _pending = signum
    raise_pending()


def raise_pending() -> None:
    """Raise the interrupt a signal asked for, if one did (again, if it was swallowed)."""
    if _pending == signal.SIGTERM:
        raise Terminated
    if _pending == signal.SIGINT:
        raise KeyboardInterrupt


def install() -> None:
    """SIGINT and SIGTERM raise (and keep raising) KeyboardInterrupt / Terminated; also when the
    launching shell left SIGINT ignored (`cmd &` in a script)."""
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def handled() -> None:
    """The interrupt reached its handler: ignore further signals while the exit is recorded, so a
    second Ctrl-C cannot turn exit 130 into a crash."""
    global _pending
    _pending = None
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def exit_now(code: int) -> None:
    """Leave an interrupted run (every cell already recorded) without the interpreter's teardown,
    where the SIGINT case was seen to end as killed-by-signal (-2) after the "interrupted" line.

    multiprocessing's exit hook still runs first: os._exit alone skips it, and a pool's queues and
    locks (named semaphores under forkserver, not yet garbage-collected) were then reported by
    the resource tracker as "leaked semaphore objects" (seen in a full-suite run under load)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if "multiprocessing.util" in sys.modules:
        import multiprocessing.util

        multiprocessing.util._exit_function()  # the atexit hook: finalizers, then joins the children
    os._exit(code)
