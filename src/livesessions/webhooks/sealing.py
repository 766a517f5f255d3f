"""API keys kept for signing webhook deliveries, encrypted at rest.

The service stores the key that registered a webhook (deliveries are signed
with it, as Huddle01 signs them), so that a copy of the database alone does
not give the keys away: each is sealed with AES-256-GCM under a secret of
the service's own (a file in the data directory, or a row in PostgreSQL's
service secrets), bound to the webhook's id.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12


class Sealer:
    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("the webhook sealing secret must be 32 bytes")
        self._aead = AESGCM(secret)

    def seal(self, plaintext: str, bound_to: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), bound_to.encode())

    def open(self, sealed: bytes, bound_to: str) -> str:
        """Raises cryptography's InvalidTag if the secret or binding differ."""
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, bound_to.encode()).decode()
