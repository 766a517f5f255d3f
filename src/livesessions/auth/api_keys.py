"""Project API keys: high-entropy secrets kept only as SHA-256 hashes.

A key is random enough that a fast hash is safe to store; the hash is what
requests are looked up by, so checking a key costs one hash and one dict hit.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass

from livesessions.clock import Clock
from livesessions.domain.ports import Accounts
from livesessions.domain.records import ApiKeyRecord
from livesessions.logs import context

log = logging.getLogger(__name__)

_PREFIX = "lsk_"
WALLET_PATTERN = re.compile(r"^0x[0-9a-fA-F]{40}$")


def new_api_key() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def mask_api_key(key: str) -> str:
    return f"{key[:8]}…{key[-4:]}"


@dataclass(frozen=True, slots=True)
class KeyUse:
    """A valid API key, as a request presented it."""

    project_id: str
    key_id: str
    key_hash: str


class ApiKeys:
    """Issues and revokes keys, and answers "which project is this key for?"
    quickly: from memory after the first use, with last use noted in memory
    and written out in batches.

    Revocations made elsewhere (another process on the same database, such
    as the command line) are picked up by `refresh_revocations`, which the
    service calls on every heartbeat."""

    def __init__(self, accounts: Accounts, clock: Clock) -> None:
        self._accounts = accounts
        self._clock = clock
        self._by_hash: dict[str, KeyUse] = {}
        # Revoked: refused even while the database write that revokes them is
        # still on its way, so a request queued behind the revocation can
        # never get through on a stale read.
        self._revoked_hashes: set[str] = set()
        self._revoked_ids: set[str] = set()
        self._active_ids: set[str] = set()
        self._revocations_seen_at = 0
        self._last_used: dict[str, int] = {}

    async def create(self, project_id: str, name: str, now: int) -> tuple[str, ApiKeyRecord]:
        key = new_api_key()
        record = await self._accounts.add_api_key(
            project_id, "key_" + secrets.token_hex(8), name, hash_api_key(key), mask_api_key(key), now
        )
        log.info("API key created", extra=context(project=project_id, key=record.id, name=name))
        return key, record

    async def project_for(self, key: str | None) -> KeyUse | None:
        """The project and key a valid key stands for, else None."""
        if not key or len(key) > 256:
            return None
        digest = hash_api_key(key)
        use = self._by_hash.get(digest)
        if use is None:
            found = await self._accounts.project_for_key_hash(digest)
            if found is None or digest in self._revoked_hashes:
                return None
            use = self._by_hash[digest] = KeyUse(found[0], found[1], digest)
        self._last_used[digest] = self._clock()
        return use

    async def is_active(self, key_id: str) -> bool:
        """Is the key that issued a token still valid? (Tokens die with it.)"""
        if key_id in self._revoked_ids:
            return False
        if key_id in self._active_ids:
            return True
        if not await self._accounts.api_key_active(key_id) or key_id in self._revoked_ids:
            return False
        self._active_ids.add(key_id)
        return True

    async def list(self, project_id: str) -> list[ApiKeyRecord]:
        await self.flush_last_used()
        return await self._accounts.list_api_keys(project_id)

    async def revoke(self, project_id: str, key_id: str) -> bool:
        digest = await self._accounts.api_key_hash(project_id, key_id)
        if digest is None:
            return False
        self._forget(digest, key_id)
        await self._accounts.revoke_api_key(digest, self._clock())
        log.info("API key revoked", extra=context(project=project_id, key=key_id))
        return True

    async def refresh_revocations(self) -> None:
        # Overlapping by a second: a revocation committed with an older clock
        # reading than the last poll is still seen.
        since = max(0, self._revocations_seen_at - 1000)
        for digest, key_id, revoked_at in await self._accounts.keys_revoked_since(since):
            self._forget(digest, key_id)
            self._revocations_seen_at = max(self._revocations_seen_at, revoked_at)

    def _forget(self, digest: str, key_id: str) -> None:
        self._revoked_hashes.add(digest)
        self._revoked_ids.add(key_id)
        self._active_ids.discard(key_id)
        self._by_hash.pop(digest, None)

    async def flush_last_used(self) -> None:
        if self._last_used:
            batch, self._last_used = self._last_used, {}
            await self._accounts.record_key_use(batch)
