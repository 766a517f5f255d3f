"""The lag probe sees the event loop held."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Gauge, Histogram

from livesessions.loop_health import LagProbe


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
