"""Peer tokens: ES256 JWTs that admit one peer to one room.

The signing key is generated on first start and kept in the data directory;
its public half is published at /jwks.json so anyone can verify a token.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from livesessions.auth.key_files import load_or_create

_ALGORITHM = "ES256"
# keyId: the API key that issued the token; the token dies with it.
REQUIRED_CLAIMS = ("peerId", "roomId", "projectId", "keyId", "role", "permissions", "exp")


class InvalidPeerToken(Exception):
    pass


class RevokedKey(InvalidPeerToken):
    """The token is well signed, but the API key that issued it was revoked."""


@dataclass(frozen=True, slots=True)
class PeerClaims:
    peer_id: str
    room_id: str
    project_id: str
    key_id: str
    role: str
    permissions: dict[str, Any]
    metadata: str
    max_peers: int | None
    lock_room: bool


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


def new_key_pem() -> bytes:
    """A new P-256 signing key, as PKCS#8 PEM."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_from_pem(data: bytes, source: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{source} does not hold an EC private key")
    return key


def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    return key_from_pem(load_or_create(path, new_key_pem), str(path))


class PeerTokenSigner:
    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self._public = key.public_key()
        numbers = self._public.public_numbers()
        x, y = _b64(numbers.x), _b64(numbers.y)
        # RFC 7638 thumbprint: a kid that changes exactly when the key does.
        thumbprint = hashlib.sha256(
            orjson.dumps({"crv": "P-256", "kty": "EC", "x": x, "y": y}, option=orjson.OPT_SORT_KEYS)
        ).digest()
        self.key_id = base64.urlsafe_b64encode(thumbprint).rstrip(b"=").decode()
        self.jwks: dict[str, Any] = {
            "keys": [{"kty": "EC", "crv": "P-256", "x": x, "y": y, "use": "sig", "alg": _ALGORITHM, "kid": self.key_id}]
        }

    def issue(self, claims: dict[str, Any], now_s: int, ttl_s: int) -> str:
        payload = {**claims, "iat": now_s, "exp": now_s + ttl_s}
        return jwt.encode(payload, self._key, algorithm=_ALGORITHM, headers={"kid": self.key_id})

    def verify(self, token: str, now_s: int) -> PeerClaims:
        """The claims of a token signed here and not expired at `now_s` (the
        service's clock, the one tokens are issued by)."""
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=[_ALGORITHM],
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            raise InvalidPeerToken(str(exc)) from exc
        expires = claims["exp"]
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise InvalidPeerToken("malformed claims: exp")
        if expires <= now_s:
            raise InvalidPeerToken("Signature has expired")
        options = claims.get("options") or {}
        try:
            return PeerClaims(
                peer_id=str(claims["peerId"]),
                room_id=str(claims["roomId"]),
                project_id=str(claims["projectId"]),
                key_id=str(claims["keyId"]),
                role=str(claims["role"]),
                permissions=dict(claims["permissions"]),
                metadata=str(claims.get("metadata") or ""),
                max_peers=options.get("maxPeersAllowed"),
                lock_room=bool(options.get("roomLocked", False)),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidPeerToken("malformed claims") from exc


class PeerTokenCheck:
    """What makes a peer token good, in one place: its signature, its expiry
    by the service's clock, and the API key that issued it (tokens die with it)."""

    def __init__(self, signer: PeerTokenSigner, is_key_active: Callable[[str], Awaitable[bool]]) -> None:
        self.signer = signer
        self._is_key_active = is_key_active

    async def claims(self, token: str, now_s: int) -> PeerClaims:
        claims = self.signer.verify(token, now_s)
        if not await self._is_key_active(claims.key_id):
            raise RevokedKey("the API key that issued it was revoked")
        return claims
