"""Unguessable, expiring download links: an HMAC over what and until when."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def load_or_create_secret(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(secret)
    os.replace(partial, path)
    return secret


class LinkSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def signature(self, subject: str, expires_s: int) -> str:
        return hmac.new(self._secret, f"{subject}:{expires_s}".encode(), hashlib.sha256).hexdigest()

    def valid(self, subject: str, expires_s: int, signature: str, now_s: int) -> bool:
        return expires_s >= now_s and hmac.compare_digest(self.signature(subject, expires_s), signature)
