"""Keeping the event loop responsive, and showing whether it is.

Every peer and every request shares one event loop, so anything that holds it
(a long query, a full pass of the garbage collector over a large heap) delays
them all. `LagProbe` samples how late a timer fires and reports it at
/metrics; `tune_garbage_collector` keeps the collector's full passes rare and
small.
"""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import Gauge, Histogram

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
