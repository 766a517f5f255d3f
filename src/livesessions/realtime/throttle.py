"""How fast one peer may send over its WebSocket.

A token bucket: `rate` messages a second on average, bursts of up to `burst`.
A message past the budget is dropped and the peer told once; a peer that
keeps sending while throttled (more than `burst` dropped before it lets the
bucket fill up again) is disconnected. Large messages cost more, so the limit
also bounds the bytes one peer can make the server fan out.
"""

from __future__ import annotations

import time
from enum import Enum

# A message costs one token, plus one for every whole 16 KiB it carries.
BYTES_PER_TOKEN = 16 * 1024


class Verdict(Enum):
    ADMIT = "admit"
    DROP_AND_WARN = "drop-and-warn"
    DROP = "drop"
    DISCONNECT = "disconnect"


class Throttle:
    __slots__ = ("_at", "_dropped", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic()
        self._dropped = 0

    def check(self, size: int) -> Verdict:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._dropped and self._tokens >= self.burst / 2:
            self._dropped = 0  # it slowed down long enough: a fresh start
        cost = 1 + size // BYTES_PER_TOKEN
        if self._tokens >= cost:
            self._tokens -= cost
            return Verdict.ADMIT
        self._dropped += 1
        if self._dropped > self.burst:
            return Verdict.DISCONNECT
        return Verdict.DROP_AND_WARN if self._dropped == 1 else Verdict.DROP
