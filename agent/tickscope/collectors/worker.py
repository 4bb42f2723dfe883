"""A single daemon thread that runs blocking calls one at a time.

Collectors call psutil and statvfs, which can block: on a hung NFS mount, a
statvfs never returns. concurrent.futures' pool threads are joined at interpreter
exit, so one such call would also hang shutdown. A DaemonWorker's thread is a
daemon: a call stuck in it is abandoned, never waited for at exit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["DaemonWorker"]

T = TypeVar("T")

_STOP = object()


class DaemonWorker:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while a call is running (or stuck) in the thread."""
        return self._busy

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        return future

    def stop(self) -> None:
        """Ask the thread to end after its current call; never waits for it."""
        self._jobs.put(_STOP)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            self._busy = True
            try:
                result = fn()
            except BaseException as exc:
                # Not busy before the future resolves: whoever awaits it may submit the
                # next call at once, and must not find the worker "still running" the
                # one that just finished (a race the collectors' tests hit 1 run in 4).
                self._busy = False
                future.set_exception(exc)
            else:
                self._busy = False
                future.set_result(result)
