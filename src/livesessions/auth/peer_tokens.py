"""Peer tokens: ES256 JWTs that admit one peer to one room.

The signing key is generated on first start and kept in the data directory;
its public half is published at /jwks.json so anyone can verify a token.

Issuing uses PyJWT. Verifying, on every WebSocket join, does not: PyJWT's
checks around the signature (per-character base64 checks among them) cost
more than the ECDSA check itself, so `PeerTokenSigner.verify` checks the
compact JWS here, with `cryptography` for the signature, and keeps a small
bounded cache of tokens already verified (benchmarks/jwt_verify.py). It
refuses everything PyJWT (with the options the service used, see `verify`)
refuses, and is stricter in a few places where PyJWT is lax (padding,
duplicate JSON keys, NaN, `crit`/`b64` headers, non-UTF-8 JSON, length).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jwt
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from livesessions.auth.key_files import load_or_create

_ALGORITHM = "ES256"
# keyId: the API key that issued the token; the token dies with it.
REQUIRED_CLAIMS = ("peerId", "roomId", "projectId", "keyId", "role", "permissions", "exp")

# The longest token verify() reads. The service's own tokens stay far below:
# peer metadata is at most 5 KiB of UTF-8, which json.dumps (ASCII-only
# escapes) can grow six-fold (a control character becomes \u0001), so the
# payload is at most ~32 KB of JSON, ~43 KB of base64url. Over a WebSocket the
# request line (8 KiB, websockets' MAX_LINE_LENGTH) bounds tokens further;
# egress start takes them in a JSON body. Refused before anything is decoded.
MAX_TOKEN_CHARS = 64 * 1024
# Our header, {"alg":"ES256","kid":"<43 chars>","typ":"JWT"}, is ~110 characters.
_MAX_HEADER_CHARS = 1024
# Tokens kept after a full verification (their claims and expiry), by token:
# at most this many, of at most CACHE_BUDGET_CHARS in all (a typical token is
# under 1000 characters). Anyone with an API key can mint well-signed tokens,
# so the memory they may pin is bounded (the claims take about as much again);
# a token longer than MAX_CACHED_TOKEN_CHARS (none fits a WebSocket URL) is
# verified in full every time.
DEFAULT_CACHE_SIZE = 4096
CACHE_BUDGET_CHARS = 8 * 1024 * 1024
MAX_CACHED_TOKEN_CHARS = 8 * 1024

# header.payload.signature, base64url without padding; an ES256 signature is
# r || s, 2 x 32 bytes: exactly 86 characters.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{86}")
# The order of the P-256 group: r and s must lie in [1, n - 1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


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


class _Cached(NamedTuple):
    claims: PeerClaims
    expires: int
    not_before: int | None


_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# Each base64url character's 6-bit value, and which of its low bits carry no
# data in a segment's last character (by the segment's length mod 4).
_B64URL_VALUES = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}
_SPARE_BITS = (0, -1, 0b1111, 0b11)


def _b64url(segment: str, what: str) -> bytes:
    """A base64url segment (alphabet already checked) in its one canonical
    form: no padding, and no set bits past the data (PyJWT refuses those too:
    it re-encodes and compares)."""
    spare = _SPARE_BITS[len(segment) % 4]
    if spare < 0:  # one character past a multiple of four: not even a byte
        raise InvalidPeerToken(f"malformed token: {what} is not base64url")
    if spare and _B64URL_VALUES[segment[-1]] & spare:
        raise InvalidPeerToken(f"malformed token: {what} is not canonical base64url")
    try:
        return binascii.a2b_base64(segment.encode("ascii").translate(_URLSAFE_TO_STANDARD) + b"==")
    except binascii.Error:
        raise InvalidPeerToken(f"malformed token: {what} is not base64url") from None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400: valid JSON, but not a number Python keeps
        raise ValueError("number out of range")
    return number


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("duplicate key")
    return found


# Standard JSON only: no NaN/Infinity (nor numbers that overflow to it), no
# repeated keys (where PyJWT's json.loads would let the last one win).
_STRICT_JSON = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite, object_pairs_hook=_unique_keys)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = _STRICT_JSON.decode(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError, JSONDecodeError are ValueErrors
        raise InvalidPeerToken(f"malformed {what}: not a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidPeerToken(f"malformed {what}: not a JSON object")
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _copied(value: Any) -> Any:
    """A copy of a JSON value that shares no dict or list with it."""
    if type(value) is dict:
        return {name: item if type(item) in _SCALARS else _copied(item) for name, item in value.items()}
    if type(value) is list:
        return [item if type(item) in _SCALARS else _copied(item) for item in value]
    return value


def _detached(claims: PeerClaims) -> PeerClaims:
    """Claims equal to a cached entry's, whose permissions a caller may change
    without changing the cache."""
    return dataclasses.replace(claims, permissions=_copied(claims.permissions), max_peers=_copied(claims.max_peers))


def peer_claims(claims: dict[str, Any]) -> PeerClaims:
    """A verified token's payload as PeerClaims (the mapping PyJWT's path had)."""
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


def _check_times(expires: int, not_before: int | None, now_s: int) -> None:
    if expires <= now_s:
        raise InvalidPeerToken("Signature has expired")
    # PyJWT checked nbf (verify_nbf stayed on) against the wall clock; the
    # service's clock must agree too.
    if not_before is not None and (not_before > time.time() or not_before > now_s):
        raise InvalidPeerToken("The token is not yet valid (nbf)")


class PeerTokenSigner:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._key = key
        self._public = key.public_key()
        # Tokens that passed every check but the clock ones, oldest first;
        # cache_size 0: none kept.
        self._cache: dict[str, _Cached] = {}
        self._cache_size = cache_size
        self._cache_chars = 0
        self._cache_lock = threading.Lock()
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
        service's clock, the one tokens are issued by).

        Accepts nothing that jwt.decode(token, public_key, algorithms=["ES256"],
        options={"require": REQUIRED_CLAIMS, "verify_exp": False, "verify_iat":
        False}) refused, and gives the claims it gave."""
        if not isinstance(token, str):
            raise InvalidPeerToken("token must be a string")
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidPeerToken(f"token longer than {MAX_TOKEN_CHARS} characters")
        cached = self._cache.get(token)
        if cached is None:
            cached = self._verify_uncached(token)
            _check_times(cached.expires, cached.not_before, now_s)
            self._remember(token, cached)
        else:
            _check_times(cached.expires, cached.not_before, now_s)
        return _detached(cached.claims)

    def _remember(self, token: str, entry: _Cached) -> None:
        if self._cache_size <= 0 or len(token) > MAX_CACHED_TOKEN_CHARS:
            return
        with self._cache_lock:
            if token in self._cache:
                return
            while self._cache and (
                len(self._cache) >= self._cache_size or self._cache_chars + len(token) > CACHE_BUDGET_CHARS
            ):
                oldest = next(iter(self._cache))
                del self._cache[oldest]
                self._cache_chars -= len(oldest)
            self._cache[token] = entry
            self._cache_chars += len(token)

    def _verify_uncached(self, token: str) -> _Cached:
        """Every check but the clock ones (exp, nbf), in this order: shape,
        header, signature, then payload and claims. Only a well-signed token's
        payload is decoded."""
        # 1. Three base64url segments, nothing else (no padding, whitespace,
        #    '+' or '/', non-ASCII); the signature exactly 64 bytes.
        if _COMPACT_JWS.fullmatch(token) is None:
            raise InvalidPeerToken("malformed token: not an ES256 JWT (three base64url segments)")
        signing_input, signature_segment = token.rsplit(".", 1)
        header_segment, payload_segment = signing_input.split(".", 1)
        if len(header_segment) > _MAX_HEADER_CHARS:
            raise InvalidPeerToken("malformed token: header too long")
        # 2. The header: alg exactly ES256 (never none, HS256, ES384...);
        #    kid, if any, a string (as PyJWT: its value is not matched); no
        #    extensions (crit, b64), which PyJWT would refuse or need crit for.
        header = _json_object(_b64url(header_segment, "header"), "header")
        if header.get("alg") != _ALGORITHM:
            raise InvalidPeerToken("The specified alg value is not allowed")
        if "kid" in header and not isinstance(header["kid"], str):
            raise InvalidPeerToken("Key ID header parameter must be a string")
        if "crit" in header or "b64" in header:
            raise InvalidPeerToken("unsupported header parameter (crit, b64)")
        # 3. The signature: r || s, each in [1, n - 1], over header.payload
        #    with this service's key (high s is valid ECDSA: PyJWT took it too).
        raw = _b64url(signature_segment, "signature")
        r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
            raise InvalidPeerToken("Signature verification failed")
        try:
            self._public.verify(encode_dss_signature(r, s), signing_input.encode("ascii"), _ECDSA_SHA256)
        except InvalidSignature:
            raise InvalidPeerToken("Signature verification failed") from None
        # 4. The payload, and its claims as PyJWT checked them.
        claims = _json_object(_b64url(payload_segment, "payload"), "payload")
        for name in REQUIRED_CLAIMS:
            if claims.get(name) is None:
                raise InvalidPeerToken(f'Token is missing the "{name}" claim')
        if claims.get("aud"):  # no audience expected: a token naming one is not for us
            raise InvalidPeerToken("Invalid audience")
        if "sub" in claims and not isinstance(claims["sub"], str):
            raise InvalidPeerToken("Subject must be a string")
        if "jti" in claims and not isinstance(claims["jti"], str):
            raise InvalidPeerToken("JWT ID must be a string")
        not_before = None
        if "nbf" in claims:
            # PyJWT took int(nbf) of anything; only a JSON number here.
            nbf = claims["nbf"]
            if not isinstance(nbf, int | float) or isinstance(nbf, bool):
                raise InvalidPeerToken("malformed claims: nbf")
            not_before = int(nbf)
        expires = claims["exp"]
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise InvalidPeerToken("malformed claims: exp")
        return _Cached(peer_claims(claims), expires, not_before)


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
