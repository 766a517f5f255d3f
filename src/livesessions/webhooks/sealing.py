"""API keys kept for signing webhook deliveries, encrypted at rest.

The service stores the key that registered a webhook (deliveries are signed
with it, as Huddle01 signs them), so that a copy of the database alone does
not give the keys away: each is sealed with AES-256-GCM under a secret of
the service's own, bound to the webhook's id. The secret is a file in the data
directory, or scaled out a row of PostgreSQL's service secrets — there a
dump of the database holds both, so an operator who wants the keys safe from
a dump gives every node the same `--webhook-sealing-key-file` instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12
SECRET_BYTES = 32


def read_secret_file(path: Path) -> bytes:
    """The operator's own sealing secret (--webhook-sealing-key-file);
    ValueError naming the problem if it cannot be used."""
    try:
        secret = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the webhook sealing key file {path}: {exc.strerror or exc}") from None
    if len(secret) != SECRET_BYTES:
        raise ValueError(
            f"the webhook sealing key file {path} must hold exactly {SECRET_BYTES} bytes "
            f"(make one with: head -c {SECRET_BYTES} /dev/urandom > {path}); it holds {len(secret)}"
        )
    return secret


class Sealer:
    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"the webhook sealing secret must be {SECRET_BYTES} bytes")
        self._aead = AESGCM(secret)

    def seal(self, plaintext: str, bound_to: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), bound_to.encode())

    def open(self, sealed: bytes, bound_to: str) -> str:
        """Raises cryptography's InvalidTag if the secret or binding differ."""
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, bound_to.encode()).decode()
