"""Keeping the process responsive and lean, and showing whether it is.

Every peer and every request shares one event loop, so anything that holds it
(a long query, a full pass of the garbage collector over a large heap) delays
them all. `LagProbe` samples how late a timer fires and reports it at
/metrics; `tune_garbage_collector` keeps the collector's full passes rare and
small; `MemoryReturn` hands memory back to the system once many peers left.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

from prometheus_client import Gauge, Histogram

log = logging.getLogger(__name__)

# Young-generation passes after this many allocations (the default is 700):
# a request allocates a few hundred short-lived objects, and each young pass
# walks the survivors of the last ones.
YOUNG_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Call once start-up is done: what exists by then (modules, classes, the
    service's own objects) lives as long as the process, so it is moved out of
    the collector's sight (`gc.freeze`) and full passes no longer walk it."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


class LagProbe:
    """Wakes every `interval` seconds and records how late it woke."""

    def __init__(self, interval: float, lag: Histogram, max_lag: Gauge) -> None:
        self.interval = interval
        self._lag = lag
        self._max_lag = max_lag
        self._longest = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            # Only ever waits in sleep: a cancel ends it at once.
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        interval = self.interval
        clock = time.perf_counter
        while True:
            due = clock() + interval
            await asyncio.sleep(interval)
            late = max(0.0, clock() - due)
            self._lag.observe(late)
            if late > self._longest:
                self._longest = late
                self._max_lag.set(late)


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None where there is none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class MemoryReturn:
    """Once the connections have fallen to half their peak (and by at least
    `min_drop`), give the memory they freed back to the system.

    The C allocator keeps freed memory for reuse and returns only what lies at
    the top of its heap, so after a crowd leaves the process stays at its
    high-water mark; malloc_trim returns every free page. It runs on a worker
    thread (ctypes lets go of the interpreter lock), so the loop never waits."""

    def __init__(self, min_drop: int = 500) -> None:
        self.min_drop = min_drop
        self._peak = 0
        self._trim = _malloc_trim()
        self._running: asyncio.Future[object] | None = None

    async def check(self, connections: int) -> bool:
        """True when memory was handed back this time."""
        self._peak = max(self._peak, connections)
        dropped = self._peak - connections
        if self._trim is None or dropped < max(self.min_drop, self._peak // 2):
            return False
        if self._running is not None and not self._running.done():
            return False
        self._peak = connections
        self._running = asyncio.get_running_loop().run_in_executor(None, self._trim)
        await self._running
        log.debug("memory handed back after peers left", extra={"dropped": dropped})
        return True
