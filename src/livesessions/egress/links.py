"""Unguessable, expiring download links: an HMAC over what and until when."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from livesessions.auth.key_files import load_or_create


def new_secret() -> bytes:
    return secrets.token_bytes(32)


def load_or_create_secret(path: Path) -> bytes:
    return load_or_create(path, new_secret)


class LinkSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def signature(self, subject: str, expires_s: int) -> str:
        return hmac.new(self._secret, f"{subject}:{expires_s}".encode(), hashlib.sha256).hexdigest()

    def valid(self, subject: str, expires_s: int, signature: str, now_s: int) -> bool:
        expected = self.signature(subject, expires_s).encode()
        return expires_s >= now_s and hmac.compare_digest(expected, signature.encode("utf-8", "replace"))
