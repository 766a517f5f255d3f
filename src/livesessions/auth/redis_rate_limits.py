"""Rate limits kept in Redis, so that they hold across every node.

In scale-out mode any node may serve any request: with `RateLimiter`'s
buckets in each node's memory, N nodes would let N times the limit through
(an API key's budget, a client address's wrong keys, an address's sign-ins).
`RedisRateLimiter` keeps the same token buckets in Redis, one hash per key:

    <prefix>:{rl:<name>:<key>}  hash: t (tokens), at (last update, microseconds
                                of Redis's clock); expires once the bucket would
                                be full again (a missing bucket is a full one)

Each call is one Lua script, so taking a token is atomic however many nodes
race for it, and it reads Redis's own clock (TIME): the nodes' clocks do not
matter. Every bucket is its own hash tag, so buckets spread over the slots of
a Redis Cluster rather than making one slot hot.

When Redis cannot be reached, the limiter does not fail the request, and it
does not let everything through either: it falls back to an in-memory
`RateLimiter` of the same rate and burst, so the limit then holds per node (at
most N times the limit over N nodes) until Redis answers again. A rate limit
is a guard, not a ledger: a few extra requests during an outage cost less than
refusing every request, or none. Once a call has found Redis unreachable,
the others use the fallback at once, and Redis is tried again by one call every
`retry_interval` seconds: an outage does not add the client's timeouts and
retries to every request. A warning is logged at most once a minute.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import RedisError

from livesessions.auth.rate_limits import RateLimiter

if TYPE_CHECKING:
    from livesessions.auth.rate_limits import Limiter

log = logging.getLogger(__name__)

_WARN_EVERY = 60.0  # seconds between warnings while Redis is unreachable

# KEYS[1]: the bucket. ARGV: rate (tokens a second), burst, take ("1": count
# this request, "0": only look). Returns the seconds to wait as a string ("0":
# go ahead); a Lua number would come back as an integer, truncated.
TAKE = r"""
if redis.replicate_commands then pcall(redis.replicate_commands) end
local rate, burst, take = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tokens = burst
local state = redis.call('HMGET', KEYS[1], 't', 'at')
if state[1] and state[2] then
  -- max(0, ...): after a failover to a server whose clock is behind, the
  -- gap refills nothing (rather than taking tokens away).
  local elapsed = math.max(0, now - tonumber(state[2]))
  tokens = math.min(burst, tonumber(state[1]) + elapsed * rate / 1000000)
end
local allowed = tokens >= 1
if take then
  if allowed then tokens = tokens - 1 end
  redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'at', string.format('%d', now))
  local ttl = math.min(math.ceil((burst - tokens) / rate * 1000) + 1, 2 ^ 53)
  redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
end
if allowed then return '0' end
return string.format('%.17g', (1 - tokens) / rate)
"""


class RedisRateLimiter:
    """`rate` requests a second on average per key, bursts of up to `burst`,
    counted in Redis for every node that uses the same `name` and `prefix`.
    A rate of 0 or less is no limit (and no Redis call).

    Answers `Limiter` (rate_limits.py); never raises for Redis being down (see
    the module's docstring)."""

    def __init__(
        self,
        redis: Redis,
        name: str,
        rate: float,
        burst: float,
        prefix: str = "ls",
        *,
        retry_interval: float = 5.0,
    ) -> None:
        for what, value in (("prefix", prefix), ("name", name)):
            if not value or any(c in value for c in "{}"):
                raise ValueError(f"the rate limit {what} must be non-empty, without braces: {value!r}")
        self.rate = rate
        self.burst = burst
        self.name = name
        self._redis = redis
        self._prefix = prefix
        self._take = redis.register_script(TAKE)
        self._args = (repr(float(rate)), repr(float(burst)))
        self._retry_interval = retry_interval
        # Used while Redis cannot be reached: the limit then holds per node.
        self.fallback = RateLimiter(rate, burst)
        self._down_until = 0.0  # monotonic time before which Redis is not tried
        self._down = False  # the last call found Redis unreachable
        self._probing = False  # a call is trying Redis again after it was down
        self._warned_at = -_WARN_EVERY  # monotonic time of the last warning

    def bucket(self, key: str) -> str:
        """The Redis key of `key`'s bucket."""
        return f"{self._prefix}:{{rl:{self.name}:{key}}}"

    async def acquire(self, key: str) -> float:
        """0 if the request may go ahead (and it is counted); else seconds until it could."""
        if self.rate <= 0:
            return 0.0
        wait = await self._call(key, take=True)
        return self.fallback.acquire_now(key) if wait is None else wait

    async def waiting(self, key: str) -> float:
        """Seconds until `key` may go ahead again; 0 now. Counts nothing."""
        if self.rate <= 0:
            return 0.0
        wait = await self._call(key, take=False)
        return self.fallback.waiting_now(key) if wait is None else wait

    async def _call(self, key: str, take: bool) -> float | None:
        """The script's answer, or None when Redis cannot be reached (or is
        known to be down and not due to be tried again)."""
        probing = False
        if self._down:
            # One call at a time tries Redis again, once the interval is over;
            # the others meanwhile do not wait on it.
            if self._probing or time.monotonic() < self._down_until:
                return None
            self._probing = probing = True
        try:
            reply = await self._take(keys=[self.bucket(key)], args=[*self._args, "1" if take else "0"])
        except (RedisError, OSError) as exc:  # OSError covers ConnectionError and TimeoutError
            self._unreachable(exc)
            return None
        finally:
            if probing:
                self._probing = False
        if self._down:
            self._down = False
            log.info("rate limit %r: Redis answers again; limiting across nodes", self.name)
        return float(reply)

    def _unreachable(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._down = True
        self._down_until = now + self._retry_interval
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning(
                "rate limit %r: Redis unreachable (%s: %s); limiting per node until it answers",
                self.name,
                type(exc).__name__,
                exc,
            )


if TYPE_CHECKING:
    _: type[Limiter] = RedisRateLimiter
