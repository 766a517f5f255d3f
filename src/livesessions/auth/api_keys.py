"""Project API keys: high-entropy secrets kept only as SHA-256 hashes.

A key is random enough that a fast hash is safe to store; the hash is what
requests are looked up by, so checking a key costs one hash and one dict hit.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from livesessions.clock import Clock
from livesessions.domain.records import ApiKeyRecord
from livesessions.stores.base import Store

_PREFIX = "lsk_"
WALLET_PATTERN = re.compile(r"^0x[0-9a-fA-F]{40}$")


def new_api_key() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def mask_api_key(key: str) -> str:
    return f"{key[:8]}…{key[-4:]}"


class ApiKeys:
    """Issues and revokes keys, and answers "which project is this key for?"
    quickly: from memory after the first use, with last use noted in memory
    and written out in batches."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._projects_by_hash: dict[str, str] = {}
        # Revoked in this process: refused even while the database write that
        # revokes them is still on its way, so a request queued behind the
        # revocation can never get through on a stale read.
        self._revoked: set[str] = set()
        self._last_used: dict[str, int] = {}

    async def create(self, project_id: str, name: str, now: int) -> tuple[str, ApiKeyRecord]:
        key = new_api_key()
        record = await self._store.add_api_key(
            project_id, "key_" + secrets.token_hex(8), name, hash_api_key(key), mask_api_key(key), now
        )
        return key, record

    async def project_for(self, key: str | None) -> tuple[str, str] | None:
        """(project id, key hash) for a valid key, else None."""
        if not key or len(key) > 256:
            return None
        digest = hash_api_key(key)
        project_id = self._projects_by_hash.get(digest)
        if project_id is None:
            project_id = await self._store.project_for_key_hash(digest)
            if project_id is None or digest in self._revoked:
                return None
            self._projects_by_hash[digest] = project_id
        self._last_used[digest] = self._clock()
        return project_id, digest

    async def list(self, project_id: str) -> list[ApiKeyRecord]:
        await self.flush_last_used()
        return await self._store.list_api_keys(project_id)

    async def revoke(self, project_id: str, key_id: str) -> bool:
        digest = await self._store.api_key_hash(project_id, key_id)
        if digest is None:
            return False
        self._revoked.add(digest)
        self._projects_by_hash.pop(digest, None)
        await self._store.revoke_api_key(digest, self._clock())
        return True

    async def flush_last_used(self) -> None:
        if self._last_used:
            batch, self._last_used = self._last_used, {}
            await self._store.record_key_use(batch)
