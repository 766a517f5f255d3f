"""Token-bucket rate limits per key (an API key, an address, a client address).

`Limiter` is what the routes use. `RateLimiter` keeps its buckets in this
process's memory (one node); `RedisRateLimiter` (redis_rate_limits.py) keeps
them in Redis, so that a limit holds across every node."""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections import OrderedDict
from typing import Protocol


class Limiter(Protocol):
    """`rate` requests a second on average per key, bursts of up to `burst`."""

    rate: float
    burst: float

    async def acquire(self, key: str) -> float:
        """0 if the request may go ahead (and it is counted); else seconds until it could."""
        ...

    async def waiting(self, key: str) -> float:
        """Seconds until `key` may go ahead again; 0 now. Counts nothing."""
        ...


class RateLimiter:
    """`rate` requests a second on average, bursts of up to `burst`.

    At most `max_keys` buckets are kept: past that the least recently used
    goes (a forgotten key starts again with a full bucket, so a flood of
    new keys costs O(1) each and cannot grow memory).

    `acquire_now` and `waiting_now` are `acquire` and `waiting` without an
    await, for callers that are not coroutines (and tests)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    async def acquire(self, key: str) -> float:
        return self.acquire_now(key)

    async def waiting(self, key: str) -> float:
        return self.waiting_now(key)

    def acquire_now(self, key: str) -> float:
        """0 if the request may go ahead (and it is counted); else seconds until it could."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens = self._tokens(key, now)
        if tokens >= 1:
            self._keep(key, tokens - 1, now)
            return 0.0
        self._keep(key, tokens, now)
        return (1 - tokens) / self.rate

    def waiting_now(self, key: str) -> float:
        """Seconds until `key` may go ahead again; 0 now. Counts nothing."""
        if self.rate <= 0:
            return 0.0
        tokens = self._tokens(key, time.monotonic())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def _keep(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def client_key(address: str) -> str:
    """What a client address is counted by, in rate limits and connection caps.

    An IPv6 client is its /64 network: one subscriber is routinely given a
    whole /64 and may pick any address in it, so counting addresses would
    not limit it at all. An IPv4 client (also written IPv4-mapped, ::ffff:a.b.c.d)
    is its address. Anything else (not an IP address) is kept as it is.
    """
    # A dotted IPv4 address is its own key: no parsing on the hot path.
    if ":" not in address:
        return address
    return _ipv6_key(address)


@functools.lru_cache(maxsize=65536)
def _ipv6_key(address: str) -> str:
    # Cached: parsing costs microseconds, and one client sends many requests.
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        # int() drops any zone (fe80::1%eth0): the network is the same.
        return f"{ipaddress.IPv6Address(int(ip) >> 64 << 64)}/64"
    return str(ip)
