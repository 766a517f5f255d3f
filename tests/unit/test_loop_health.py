"""The lag probe sees the event loop held, and memory is handed back only
once the connections have fallen far from their peak."""

from __future__ import annotations

import asyncio
import platform
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram

from livesessions.loop_health import LagProbe, MemoryReturn


def test_the_probe_reports_how_long_the_loop_was_held() -> None:
    registry = CollectorRegistry()
    lag = Histogram("lag", "", buckets=(0.01, 0.1, 1.0), registry=registry)
    longest = Gauge("longest", "", registry=registry)

    async def scenario() -> None:
        probe = LagProbe(0.002, lag, longest)
        probe.start()
        await asyncio.sleep(0.05)
        time.sleep(0.15)  # the loop held: nothing else runs
        await asyncio.sleep(0.05)
        await probe.stop()

    asyncio.run(scenario())
    assert 0.1 <= registry.get_sample_value("longest") < 1.0
    assert registry.get_sample_value("lag_bucket", {"le": "0.1"}) < registry.get_sample_value("lag_count")
    assert registry.get_sample_value("lag_count") >= 10


def test_an_interval_of_zero_samples_nothing() -> None:
    registry = CollectorRegistry()
    lag = Histogram("lag", "", registry=registry)

    async def scenario() -> None:
        probe = LagProbe(0, lag, Gauge("longest", "", registry=registry))
        probe.start()
        await asyncio.sleep(0.02)
        await probe.stop()

    asyncio.run(scenario())
    assert registry.get_sample_value("lag_count") == 0


def test_memory_is_handed_back_once_half_the_peak_has_left() -> None:
    trims: list[int] = []

    async def scenario() -> list[bool]:
        returner = MemoryReturn(min_drop=100)
        returner._trim = lambda: trims.append(1)
        seen = []
        # Up to 1000, down to 600 (not half), 499 (half), then a small crowd
        # comes and goes (under min_drop), then 300 more leave from 520.
        for connections in (10, 1000, 800, 600, 499, 420, 520, 450, 220):
            seen.append(await returner.check(connections))
        return seen

    assert asyncio.run(scenario()) == [False, False, False, False, True, False, False, False, True]
    assert len(trims) == 2


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_memory_return_works_with_glibc() -> None:
    async def scenario() -> bool:
        returner = MemoryReturn(min_drop=1)
        await returner.check(10)
        return await returner.check(0)

    assert asyncio.run(scenario())
