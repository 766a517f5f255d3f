"""Project API keys: high-entropy secrets kept only as SHA-256 hashes.

A key is random enough that a fast hash is safe to store; the hash is what
requests are looked up by, so checking a key costs one hash and one dict hit.
"""

from __future__ import annotations

import hashlib
import re
import secrets

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
    """Issues keys and answers "which project is this key for?" quickly."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._projects_by_hash: dict[str, str] = {}

    async def create(self, project_id: str, name: str, now: int) -> tuple[str, ApiKeyRecord]:
        key = new_api_key()
        record = await self._store.add_api_key(
            project_id, "key_" + secrets.token_hex(8), name, hash_api_key(key), mask_api_key(key), now
        )
        return key, record

    async def project_for(self, key: str | None) -> str | None:
        if not key or len(key) > 256:
            return None
        digest = hash_api_key(key)
        project_id = self._projects_by_hash.get(digest)
        if project_id is None:
            project_id = await self._store.project_for_key_hash(digest)
            if project_id is not None:
                self._projects_by_hash[digest] = project_id
        return project_id

    def forget(self, key_hash: str) -> None:
        """Drop a revoked key from the cache so it stops working at once."""
        self._projects_by_hash.pop(key_hash, None)
