"""RedisRateLimiter: token buckets in Redis that hold across nodes, and the
per-node fallback when Redis cannot be reached.

The tests run on the `redis-server` test_redis_presence.py starts on a free
port (skipped without one, unless LIVESESSIONS_REQUIRE_SERVICES or CI is set:
then they fail). Each test uses a key prefix of its own and deletes its keys,
so nothing is flushed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from test_redis_presence import needs_redis, redis_server

from livesessions.auth.redis_rate_limits import RedisRateLimiter
from support import free_port


def unreachable_client(**options: Any) -> Redis:
    """A client of a closed port (nothing listens on a free one), that does not
    retry: each command fails at once."""
    return Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0), **options)


class Nodes:
    """Rate limiters as separate nodes make them: each on a Redis client of its own."""

    def __init__(self) -> None:
        self.url = redis_server().url
        self.prefix = f"t{secrets.token_hex(6)}"
        self.clients: list[Redis] = []

    def client(self, **options: Any) -> Redis:
        client = Redis.from_url(self.url, **{"decode_responses": True, **options})
        self.clients.append(client)
        return client

    def limiter(self, rate: float, burst: float, name: str = "key", **options: Any) -> RedisRateLimiter:
        return RedisRateLimiter(self.client(), name, rate, burst, prefix=self.prefix, **options)

    async def keys(self) -> list[str]:
        return [key async for key in self.clients[0].scan_iter(match=f"{self.prefix}:*")]

    async def close(self) -> None:
        try:
            if self.clients and (keys := await self.keys()):
                await self.clients[0].delete(*keys)
        finally:
            for client in self.clients:
                await client.aclose()


def run(test: Callable[[Nodes], Awaitable[None]]) -> None:
    async def main() -> None:
        nodes = Nodes()
        nodes.client()  # the first client, used for looking and cleaning up
        try:
            await test(nodes)
        finally:
            await nodes.close()

    asyncio.run(main())


def test_names_and_prefixes_with_braces_are_refused() -> None:
    with pytest.raises(ValueError, match="braces"):
        RedisRateLimiter(Redis(), "a}b", 1, 1)
    with pytest.raises(ValueError, match="braces"):
        RedisRateLimiter(Redis(), "key", 1, 1, prefix="{ls}")


@needs_redis
def test_a_burst_goes_through_then_requests_are_refused_with_the_time_to_wait() -> None:
    async def test(nodes: Nodes) -> None:
        limiter = nodes.limiter(rate=1, burst=3)
        assert [await limiter.acquire("k") for _ in range(3)] == [0, 0, 0]
        wait = await limiter.acquire("k")
        assert 0.9 < wait <= 1.0
        # Looking counts nothing, however often.
        for _ in range(5):
            assert 0.8 < await limiter.waiting("k") <= wait
        assert 0.8 < await limiter.acquire("k") <= wait
        # The bucket is one hash in a slot of its own, gone once it would be full again.
        [key] = await nodes.keys()
        assert key == f"{nodes.prefix}:{{rl:key:k}}" == limiter.bucket("k")
        assert 2000 < await nodes.clients[0].pttl(key) <= 3001

    run(test)


@needs_redis
def test_a_bucket_refills_over_time() -> None:
    async def test(nodes: Nodes) -> None:
        limiter = nodes.limiter(rate=20, burst=2)
        assert await limiter.acquire("k") == 0
        assert await limiter.acquire("k") == 0
        wait = await limiter.acquire("k")
        assert 0.04 < wait <= 0.05
        await asyncio.sleep(wait + 0.01)
        assert await limiter.waiting("k") == 0
        assert await limiter.acquire("k") == 0
        assert await limiter.acquire("k") > 0
        # A full bucket's key expires: an idle key leaves nothing behind.
        await asyncio.sleep(0.15)
        assert await nodes.keys() == []
        assert await limiter.acquire("k") == 0

    run(test)


@needs_redis
def test_nodes_on_the_same_redis_share_one_budget() -> None:
    async def test(nodes: Nodes) -> None:
        # The second node's client answers bytes: the replies are read alike.
        one = nodes.limiter(rate=0.01, burst=4)
        two = RedisRateLimiter(nodes.client(decode_responses=False), "key", 0.01, 4, prefix=nodes.prefix)
        assert await one.acquire("k") == 0
        assert await two.acquire("k") == 0
        assert await one.acquire("k") == 0
        assert await two.acquire("k") == 0
        assert await one.acquire("k") > 0
        assert await two.acquire("k") > 0
        assert await two.waiting("k") > 0

        # Racing: forty requests on four nodes for five tokens, exactly five go through.
        racers = [nodes.limiter(rate=0.01, burst=5) for _ in range(4)]
        waits = await asyncio.gather(*(racers[i % 4].acquire("race") for i in range(40)))
        assert sum(wait == 0 for wait in waits) == 5

    run(test)


@needs_redis
def test_keys_and_limit_names_are_independent() -> None:
    async def test(nodes: Nodes) -> None:
        keys = nodes.limiter(rate=0.01, burst=1, name="key")
        sign_ins = nodes.limiter(rate=0.01, burst=1, name="sign-in")
        assert await keys.acquire("a") == 0
        assert await keys.acquire("a") > 0
        assert await keys.acquire("b") == 0
        assert await keys.waiting("c") == 0
        assert await sign_ins.acquire("a") == 0
        assert await sign_ins.acquire("a") > 0
        assert len(await nodes.keys()) == 3

    run(test)


@needs_redis
def test_a_rate_of_zero_is_no_limit_and_touches_no_redis() -> None:
    async def test(nodes: Nodes) -> None:
        limiter = nodes.limiter(rate=0, burst=0)
        assert [await limiter.acquire("k") for _ in range(100)] == [0] * 100
        assert await limiter.waiting("k") == 0
        assert await nodes.keys() == []
        # Not even a connection: a client on a closed port is never used.
        unreachable = RedisRateLimiter(unreachable_client(), "key", 0, 0)
        assert await unreachable.acquire("k") == 0
        assert await unreachable.waiting("k") == 0

    run(test)


def test_without_redis_the_limit_holds_per_node_and_nothing_is_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        # Nothing listens on a free port: every connection is refused. Redis is
        # tried on every call here (retry_interval=0), yet one warning is logged.
        client = unreachable_client(decode_responses=True)
        one = RedisRateLimiter(client, "key", 0.01, 2, retry_interval=0)
        two = RedisRateLimiter(client, "key", 0.01, 2, retry_interval=0)
        try:
            assert await one.waiting("k") == 0
            assert await one.acquire("k") == 0
            assert await one.acquire("k") == 0
            assert await one.acquire("k") > 0
            assert await one.waiting("k") > 0
            assert await one.acquire("other") == 0
            # Another node's fallback is its own: per node, not shared.
            assert await two.acquire("k") == 0
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="livesessions.auth.redis_rate_limits"):
        asyncio.run(test())
    warnings = [r for r in caplog.records if r.name == "livesessions.auth.redis_rate_limits"]
    assert len(warnings) == 2  # one per limiter, not one per call
    assert all("limiting per node" in r.getMessage() for r in warnings)


def test_after_a_failure_redis_is_left_alone_for_the_retry_interval() -> None:
    async def test() -> None:
        calls = 0

        class Counting(Redis):
            async def evalsha(self, *args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                return await super().evalsha(*args, **kwargs)

        client = Counting(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        limiter = RedisRateLimiter(client, "key", 0.01, 3, retry_interval=60)
        try:
            assert [await limiter.acquire("k") for _ in range(4)][-1] > 0
            assert calls == 1
        finally:
            await client.aclose()

    asyncio.run(test())


@needs_redis
def test_once_redis_is_down_one_call_at_a_time_tries_it_and_it_is_used_again_when_back() -> None:
    async def test(nodes: Nodes) -> None:
        limiter = nodes.limiter(rate=0.01, burst=20, retry_interval=0.05)
        script = limiter._take
        tries = 0

        async def down(**_args: Any) -> Any:
            nonlocal tries
            tries += 1
            await asyncio.sleep(0.05)
            raise RedisConnectionError("Connection refused")

        limiter._take = down  # type: ignore[assignment]
        assert await limiter.acquire("k") == 0
        assert tries == 1
        # Within the interval Redis is left alone; after it, one call of many
        # tries it (and pays for it), the others go on at once.
        assert await asyncio.gather(*(limiter.acquire("k") for _ in range(5))) == [0] * 5
        assert tries == 1
        await asyncio.sleep(0.06)
        assert await asyncio.gather(*(limiter.acquire("k") for _ in range(5))) == [0] * 5
        assert tries == 2
        assert await nodes.keys() == []

        limiter._take = script
        await asyncio.sleep(0.06)
        assert await limiter.acquire("k") == 0
        assert await nodes.keys() == [limiter.bucket("k")]
        assert await limiter.acquire("k") == 0  # counted in Redis again, not in the fallback
        assert float(await nodes.clients[0].hget(limiter.bucket("k"), "t")) == pytest.approx(18, abs=0.01)

    run(test)
