"""PeerTokenSigner.verify, differentially: the lean verification (cryptography,
no PyJWT) against the PyJWT-based one it replaced, kept here as the reference.

For every forged token both must refuse; for every good one both must accept
and give equal claims. Where the new one is deliberately stricter than PyJWT
(only ever on tokens the service never issues) the case says so ("stricter"):
the reference accepts, the new one refuses. The new one may never accept what
the reference refuses.

(Named test_peer_token_verify.py: tests/api/test_peer_tokens.py holds the
basename test_peer_tokens, and pytest's default import mode needs unique ones.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livesessions.auth import peer_tokens
from livesessions.auth.peer_tokens import (
    MAX_TOKEN_CHARS,
    REQUIRED_CLAIMS,
    InvalidPeerToken,
    PeerClaims,
    PeerTokenCheck,
    PeerTokenSigner,
    RevokedKey,
)
from livesessions.domain.metadata import MAX_PEER_METADATA_BYTES

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
NOW = 1_700_000_000
TTL = 3600
SIGNER = PeerTokenSigner(KEY)
HEADER: dict[str, Any] = {"alg": "ES256", "kid": SIGNER.key_id, "typ": "JWT"}
CLAIMS: dict[str, Any] = {
    "peerId": "peerId-abcdefghijklmnop",
    "roomId": "abc-defg-hij",
    "projectId": "prj_0123456789",
    "keyId": "key_0123456789",
    "role": "host",
    "permissions": {
        "admin": True,
        "canConsume": True,
        "canProduce": True,
        "canProduceSources": {"cam": True, "mic": True, "screen": True},
        "canSendData": True,
        "canRecvData": True,
        "canUpdateMetadata": True,
    },
    "metadata": '{"displayName":"Ada"}',
    "options": {"maxPeersAllowed": 10, "roomLocked": True},
}
PAYLOAD: dict[str, Any] = {**CLAIMS, "iat": NOW, "exp": NOW + TTL}


# --- the reference: PeerTokenSigner.verify as it was, on PyJWT ----------------------


def reference_verify(token: Any, now_s: int, public: ec.EllipticCurvePublicKey | None = None) -> PeerClaims:
    try:
        claims = jwt.decode(
            token,
            public or KEY.public_key(),
            algorithms=["ES256"],
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


# --- making tokens ------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def encode_json(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()


def raw_signature(signing_input: bytes, key: ec.EllipticCurvePrivateKey = KEY) -> tuple[int, int]:
    return decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))


def rs_bytes(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def signed(
    header: Any = None,
    payload: Any = None,
    *,
    key: ec.EllipticCurvePrivateKey = KEY,
    rs: Callable[[int, int], bytes] = rs_bytes,
) -> str:
    """A compact JWS of exactly these header and payload bytes, well signed by
    `key` (the service's unless said), its signature bytes made by `rs`."""
    signing_input = b64(encode_json(HEADER if header is None else header)) + "."
    signing_input += b64(encode_json(PAYLOAD if payload is None else payload))
    r, s = raw_signature(signing_input.encode(), key)
    return signing_input + "." + b64(rs(r, s))


def with_payload(**changes: Any) -> str:
    payload = {**PAYLOAD, **changes}
    return signed(payload={k: v for k, v in payload.items() if v is not _ABSENT})


def with_header(**changes: Any) -> str:
    header = {**HEADER, **changes}
    return signed(header={k: v for k, v in header.items() if v is not _ABSENT})


_ABSENT = object()
GOOD = signed()
GOOD_H, GOOD_P, GOOD_S = GOOD.split(".")


def _flip_last_bits(segment: str) -> str:
    """The same bytes with the unused low bits of the last character set
    (non-canonical base64url)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = {2: 0b1111, 3: 0b11}[len(segment) % 4]
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) | spare]


def _with_high_or_low_s(r: int, s: int) -> bytes:
    return rs_bytes(r, N - s)


def _hs256_with_public_key() -> str:
    pem = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    import hmac

    signing_input = b64(encode_json({**HEADER, "alg": "HS256"})) + "." + GOOD_P
    return signing_input + "." + b64(hmac.new(pem, signing_input.encode(), "sha256").digest())


def _payload_of_size(chars: int) -> str:
    return with_payload(padding="x" * chars)


# --- verdicts -----------------------------------------------------------------------


Outcome = tuple[bool, PeerClaims | str]


def outcome(verify: Callable[[], PeerClaims]) -> Outcome:
    try:
        return True, verify()
    except InvalidPeerToken as exc:
        return False, str(exc)


def new_outcome(token: Any, now_s: int) -> Outcome:
    """The new verify, uncached, then through a cache twice (miss, hit): all
    three must agree."""
    uncached = outcome(lambda: PeerTokenSigner(KEY, cache_size=0).verify(token, now_s))
    cached_signer = PeerTokenSigner(KEY)
    miss = outcome(lambda: cached_signer.verify(token, now_s))
    hit = outcome(lambda: cached_signer.verify(token, now_s))
    assert uncached[0] == miss[0] == hit[0], (uncached, miss, hit)
    if uncached[0]:
        assert uncached[1] == miss[1] == hit[1]
    else:
        assert len(cached_signer._cache) == 0  # a refused token is never kept
    return uncached


def both(token: Any, now_s: int = NOW) -> tuple[Outcome, Outcome]:
    return outcome(lambda: reference_verify(token, now_s)), new_outcome(token, now_s)


def assert_both_refuse(token: Any, now_s: int = NOW) -> None:
    reference, new = both(token, now_s)
    assert not reference[0], f"the reference accepted: {reference}"
    assert not new[0], f"the new verify accepted: {new}"
    assert len(f"invalid peer token: {new[1]}") <= 120, new[1]


def assert_both_accept(token: Any, now_s: int = NOW) -> PeerClaims:
    reference, new = both(token, now_s)
    assert reference[0], f"the reference refused: {reference}"
    assert new[0], f"the new verify refused: {new}"
    assert new[1] == reference[1]
    assert isinstance(new[1], PeerClaims)
    return new[1]


def assert_stricter(token: Any, now_s: int = NOW) -> None:
    """A token PyJWT took and the new verify refuses on purpose."""
    reference, new = both(token, now_s)
    assert reference[0], f"the reference refused (then it is not a stricter case): {reference}"
    assert not new[0], f"the new verify accepted: {new}"
    assert len(f"invalid peer token: {new[1]}") <= 120, new[1]


# --- good tokens --------------------------------------------------------------------


@pytest.mark.parametrize(
    "claims",
    [
        CLAIMS,
        {k: v for k, v in CLAIMS.items() if k not in ("options", "metadata")},
        {**CLAIMS, "role": "moderator", "metadata": "Ünïcødé ✓ 😀 \u2028 \x01 \"'\\"},
        {**CLAIMS, "options": {"maxPeersAllowed": 100_000}},
        {**CLAIMS, "options": {"roomLocked": False}},
        {**CLAIMS, "options": None, "metadata": None},
        {**CLAIMS, "permissions": {}},
    ],
)
def test_issued_tokens_are_accepted_by_both_with_equal_claims(claims: dict[str, Any]) -> None:
    token = SIGNER.issue(claims, NOW, TTL)
    got = assert_both_accept(token)
    assert got.peer_id == claims["peerId"] and got.permissions == claims["permissions"]
    assert assert_both_accept(token, NOW + TTL - 1) == got


def test_the_longest_token_the_service_can_issue_is_read() -> None:
    # Peer metadata at its limit, every byte a control character (six bytes
    # once JSON-escaped), and a custom role of 20 four-byte characters.
    claims = {**CLAIMS, "metadata": "\x01" * MAX_PEER_METADATA_BYTES, "role": "😀" * 20}
    token = SIGNER.issue(claims, NOW, TTL)
    assert len(token) < MAX_TOKEN_CHARS
    assert assert_both_accept(token).metadata == claims["metadata"]


def test_a_token_with_high_s_is_valid_ecdsa_for_both() -> None:
    # (r, n - s) verifies whenever (r, s) does; PyJWT/OpenSSL take both, and
    # the service's own tokens carry a high s half the time, so both must.
    flipped = signed(rs=_with_high_or_low_s)
    assert flipped != GOOD
    assert assert_both_accept(flipped) == assert_both_accept(GOOD)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "ES256"},  # no kid, no typ
        {**HEADER, "typ": "jwt"},
        {**HEADER, "typ": "JOSE"},
        {**HEADER, "typ": 5},  # PyJWT does not look at typ
        {**HEADER, "kid": "another key"},  # nor match kid: only its type
        {**HEADER, "cty": "JWT", "x5u": "https://evil.example/", "jku": "https://evil.example/"},
    ],
)
def test_header_variations_pyjwt_ignores_are_ignored(header: dict[str, Any]) -> None:
    assert_both_accept(signed(header=header))


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": ""},
        {"aud": []},
        {"aud": None},
        {"aud": 0},
        {"sub": "a subject"},
        {"jti": "an id"},
        {"iss": 5},  # no issuer expected: never looked at
        {"iat": "not a number"},  # verify_iat was off
        {"iat": NOW + 10**9},
        {"nbf": NOW - 10},
        {"nbf": NOW - 10.5},
        {"exp": 10**40},
        {"permissions": []},  # dict([]) == {}
        {"permissions": [["admin", True]]},
        {"peerId": 12345},  # str() of it, as before
        {"metadata": 7},
        {"options": {"maxPeersAllowed": "many"}},
        {"extra": {"nested": [1, 2.5, None, "x"]}},
    ],
)
def test_payload_variations_both_accept_alike(changes: dict[str, Any]) -> None:
    assert_both_accept(with_payload(**changes))


# --- the token's shape --------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        GOOD_H,
        f"{GOOD_H}.{GOOD_P}",
        f"{GOOD}.{GOOD_S}",
        f"{GOOD_H}.{GOOD_P}.{GOOD_S}.",
        f".{GOOD_P}.{GOOD_S}",
        f"{GOOD_H}..{GOOD_S}",
        f"{GOOD_H}.{GOOD_P}.",
        "..",
        f"{GOOD_H}.{GOOD_P}.{GOOD_S}=",  # one '=' after 86 characters: bad padding
        f"{GOOD_H}=.{GOOD_P}.{GOOD_S}",
        f"{GOOD_H}.{GOOD_P}=.{GOOD_S}",
        f" {GOOD}",
        f"{GOOD} ",
        f"{GOOD}\n",
        f"{GOOD_H}.{GOOD_P}.{GOOD_S[:40]} {GOOD_S[40:]}",
        f"{GOOD_H}.{GOOD_P}.{GOOD_S[:40]}\t{GOOD_S[41:]}",
        GOOD.replace("-", "+").replace("_", "/") if ("-" in GOOD or "_" in GOOD) else GOOD[:-2] + "+/",
        GOOD[:-1] + "é",
        GOOD[:-1] + "\u0410",  # Cyrillic A
        GOOD[:-1] + "\uff21",  # fullwidth A
        GOOD[:-1] + "\x00",
        GOOD[:-1] + "%",
        f"{GOOD_H}.{GOOD_P}.{GOOD_S[:-1]}",  # 85 characters
        f"{GOOD_H}.{GOOD_P}.{GOOD_S}A",  # 87
        f"{GOOD_H}.{GOOD_P}.{GOOD_S}AA",  # 88: 66 bytes
        f"{GOOD_H}.{GOOD_P}.{_flip_last_bits(GOOD_S)}",  # same 64 bytes, non-canonical
        f"{GOOD_H}.{GOOD_P}.{GOOD_S.lower()}",
    ],
    ids=lambda token: repr(token[-12:]) if token else "empty",
)
def test_malformed_tokens_are_refused_by_both(token: str) -> None:
    assert_both_refuse(token)


def _of_length_mod_3(value: dict[str, Any], remainder: int) -> bytes:
    """value's JSON, padded with a field until its length is remainder mod 3
    (so that its base64url form has spare bits in the last character)."""
    for extra in range(3):
        data = encode_json({**value, "z": "z" * extra})
        if len(data) % 3 == remainder:
            return data
    raise AssertionError("unreachable")


@pytest.mark.parametrize("remainder", [1, 2])
@pytest.mark.parametrize("part", ["header", "payload"])
def test_non_canonical_header_and_payload_segments_are_refused_by_both(part: str, remainder: int) -> None:
    header = b64(_of_length_mod_3(HEADER, remainder) if part == "header" else encode_json(HEADER))
    payload = b64(_of_length_mod_3(PAYLOAD, remainder) if part == "payload" else encode_json(PAYLOAD))
    # Canonical, it is good for both.
    r, s = raw_signature(f"{header}.{payload}".encode())
    assert_both_accept(f"{header}.{payload}.{b64(rs_bytes(r, s))}")
    # The same bytes with spare bits set, signed as written: only the
    # base64url form is wrong.
    if part == "header":
        header = _flip_last_bits(header)
    else:
        payload = _flip_last_bits(payload)
    assert unb64(header) == unb64(_flip_last_bits(header)) or part == "payload"
    r, s = raw_signature(f"{header}.{payload}".encode())
    assert_both_refuse(f"{header}.{payload}.{b64(rs_bytes(r, s))}")


def test_a_token_that_is_not_a_string_is_refused() -> None:
    assert not new_outcome(None, NOW)[0]
    assert not new_outcome(12, NOW)[0]
    # PyJWT took bytes; the service only ever hands over str (stricter).
    assert_stricter(GOOD.encode())


def test_padding_pyjwt_tolerates_is_refused() -> None:
    # PyJWT 2.10+ accepts '=' padding "used by some issuers"; the service pads
    # nothing, so a padded copy of its token is refused (stricter).
    assert_stricter(f"{GOOD}==")


def test_tokens_over_the_length_bound_are_refused_before_decoding() -> None:
    long_token = _payload_of_size(MAX_TOKEN_CHARS)
    assert len(long_token) > MAX_TOKEN_CHARS
    assert_stricter(long_token)  # well signed, but no token of ours is that long
    accepted, message = new_outcome(long_token, NOW)
    assert not accepted and isinstance(message, str) and "longer than" in message
    assert not new_outcome("A" * (MAX_TOKEN_CHARS + 1), NOW)[0]


# --- the header ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"not json",
        b"[]",
        b'"ES256"',
        b"5",
        b"null",
        b'{"alg":"ES256"',
        b"\xff\xfe",
        b"[" * 700 + b"]" * 700,
        b"[" * 5000 + b"]" * 5000,  # longer than any header of ours, too
        {"kid": SIGNER.key_id, "typ": "JWT"},  # no alg
        {**HEADER, "alg": "none"},
        {**HEADER, "alg": "None"},
        {**HEADER, "alg": ""},
        {**HEADER, "alg": None},
        {**HEADER, "alg": "HS256"},
        {**HEADER, "alg": "ES384"},
        {**HEADER, "alg": "ES512"},
        {**HEADER, "alg": "RS256"},
        {**HEADER, "alg": "PS256"},
        {**HEADER, "alg": "EdDSA"},
        {**HEADER, "alg": "es256"},
        {**HEADER, "alg": "ES256 "},
        {**HEADER, "alg": ["ES256"]},
        {**HEADER, "alg": {"ES256": 1}},
        {**HEADER, "kid": 5},
        {**HEADER, "kid": None},
        {**HEADER, "kid": [SIGNER.key_id]},
        {**HEADER, "crit": ["exp"], "exp": 1},
        {**HEADER, "crit": []},
        {**HEADER, "crit": "b64", "b64": True},
        {**HEADER, "crit": ["b64"]},  # listed but missing
        {**HEADER, "crit": ["b64"], "b64": False},
        {**HEADER, "b64": False},
    ],
    ids=repr,
)
def test_bad_headers_are_refused_by_both(header: Any) -> None:
    assert_both_refuse(signed(header=header))


@pytest.mark.parametrize(
    "header",
    [
        {**HEADER, "crit": ["b64"], "b64": True},  # PyJWT knows b64; the service uses no extension
        {**HEADER, "b64": True},
        {**HEADER, "b64": "yes"},
        b'{"alg":"none","alg":"ES256"}',  # last one wins in PyJWT
        b'{"alg":"ES256","kid":"a","kid":"b"}',
        b'{"alg":"ES256","x":NaN}',
        b'{"alg":"ES256","x":1e400}',
        b'\xef\xbb\xbf{"alg":"ES256"}',  # a UTF-8 BOM
        '{"alg":"ES256"}'.encode("utf-16"),  # json.loads(bytes) guesses UTF-16/32
        '{"alg":"ES256"}'.encode("utf-32-le"),
        b'{"alg":"ES256","pad":"' + b"x" * 1024 + b'"}',  # a header longer than any of ours
    ],
    ids=repr,
)
def test_headers_pyjwt_took_and_the_service_never_writes_are_refused(header: Any) -> None:
    assert_stricter(signed(header=header))


# --- the signature ------------------------------------------------------------------


def _der(r: int, s: int) -> bytes:
    return encode_dss_signature(r, s)


@pytest.mark.parametrize(
    "rs",
    [
        lambda r, s: rs_bytes(0, s),
        lambda r, s: rs_bytes(r, 0),
        lambda r, s: rs_bytes(0, 0),
        lambda r, s: rs_bytes(N, s),
        lambda r, s: rs_bytes(r, N),
        lambda r, s: rs_bytes(r + N, s) if r + N < 2**256 else rs_bytes(2**256 - 1, s),
        lambda r, s: rs_bytes(r, s + N) if s + N < 2**256 else rs_bytes(r, 2**256 - 1),
        lambda r, s: rs_bytes(s, r),
        lambda r, s: rs_bytes(r, s ^ 1),
        lambda r, s: rs_bytes(r ^ (1 << 200), s),
        lambda r, s: b"\x00" * 64,
        lambda r, s: b"\xff" * 64,
        lambda r, s: _der(r, s),  # DER, as OpenSSL gives it
        lambda r, s: _der(r, s)[:64],
        lambda r, s: (_der(r, s) + b"\x00" * 64)[:64],
        lambda r, s: rs_bytes(r, s)[:63],
        lambda r, s: rs_bytes(r, s) + b"\x00",
        lambda r, s: b"\x00" + rs_bytes(r, s),
        lambda r, s: b"",
    ],
)
def test_bad_signatures_are_refused_by_both(rs: Callable[[int, int], bytes]) -> None:
    assert_both_refuse(signed(rs=rs))


def test_forgeries_are_refused_by_both() -> None:
    assert_both_refuse(signed(key=OTHER_KEY))  # another key
    assert_both_refuse(PeerTokenSigner(OTHER_KEY).issue(CLAIMS, NOW, TTL))
    assert_both_refuse(_hs256_with_public_key())  # alg confusion
    assert_both_refuse(f"{b64(encode_json({'alg': 'none'}))}.{GOOD_P}.")
    tampered = b64(encode_json({**PAYLOAD, "role": "bot"}))
    assert_both_refuse(f"{GOOD_H}.{tampered}.{GOOD_S}")  # payload changed
    assert_both_refuse(f"{b64(encode_json({**HEADER, 'typ': 'x'}))}.{GOOD_P}.{GOOD_S}")  # header changed
    other = SIGNER.issue({**CLAIMS, "role": "bot"}, NOW, TTL)
    assert_both_refuse(f"{GOOD_H}.{GOOD_P}.{other.split('.')[2]}")  # another token's signature
    assert_both_refuse(f"{GOOD_H}.{other.split('.')[1]}.{GOOD_S}")


# --- the payload and its claims -------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'"claims"',
        b"null",
        b"5",
        encode_json(PAYLOAD)[:-1],
        encode_json(PAYLOAD).replace(b'"host"', b'"\xff"'),  # not UTF-8
        # Deep, but not so deep that the reference's json.loads overflows the
        # C stack: eth-account (imported by tests/support.py, and by the
        # service at start) sets the recursion limit to 100000.
        b"[" * 20_000 + b"]" * 20_000,
        b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
        *[encode_json({k: v for k, v in PAYLOAD.items() if k != name}) for name in REQUIRED_CLAIMS],
        *[encode_json({**PAYLOAD, name: None}) for name in REQUIRED_CLAIMS],
    ],
    ids=lambda payload: repr(payload[:40]),
)
def test_bad_payloads_are_refused_by_both(payload: bytes) -> None:
    assert_both_refuse(signed(payload=payload))


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": True},
        {"exp": False},
        {"exp": float(NOW + TTL)},
        {"exp": NOW + TTL + 0.5},
        {"exp": str(NOW + TTL)},
        {"exp": [NOW + TTL]},
        {"exp": {"at": NOW + TTL}},
        {"exp": NOW},  # expired exactly now
        {"exp": NOW - 1},
        {"exp": -(10**40)},
        {"exp": 0},
        {"aud": "someone"},
        {"aud": ["someone"]},
        {"aud": 1},
        {"aud": True},
        {"sub": 5},
        {"sub": None},
        {"sub": ["a"]},
        {"jti": 5},
        {"jti": None},
        {"nbf": "soon"},
        {"nbf": None},
        {"nbf": [1]},
        {"nbf": {}},
        {"nbf": int(time.time()) + 3600},  # not yet valid (PyJWT: by the wall clock)
        {"nbf": 10**40},
        {"permissions": "all"},
        {"permissions": 5},
        {"permissions": True},
        {"options": ["roomLocked"]},
        {"options": "x"},
        {"options": 5},
    ],
    ids=repr,
)
def test_bad_claims_are_refused_by_both(changes: dict[str, Any]) -> None:
    assert_both_refuse(with_payload(**changes))


def test_an_exp_as_infinity_or_nan_is_refused_by_both() -> None:
    for constant in (b"Infinity", b"-Infinity", b"NaN", b"1e400"):
        text = encode_json({**PAYLOAD, "exp": 0}).replace(b'"exp":0', b'"exp":' + constant)
        assert_both_refuse(signed(payload=text))


@pytest.mark.parametrize(
    "payload",
    [
        encode_json(PAYLOAD).replace(b"}", b',"x":NaN}', 1),
        encode_json(PAYLOAD).replace(b"}", b',"x":Infinity}', 1),
        encode_json(PAYLOAD).replace(b"}", b',"x":1e400}', 1),
        encode_json(PAYLOAD).replace(b'"role":"host"', b'"role":"bot","role":"host"'),  # last one wins in PyJWT
        encode_json(PAYLOAD).replace(b'"host"', b'"\xed\xa0\x80"'),  # a UTF-8-encoded surrogate
        b"\xef\xbb\xbf" + encode_json(PAYLOAD),
        json.dumps(PAYLOAD).encode("utf-16"),
        encode_json({**PAYLOAD, "nbf": "12"}),  # PyJWT took int("12")
        encode_json({**PAYLOAD, "nbf": True}),  # and int(True)
    ],
    ids=lambda payload: repr(payload[-30:]),
)
def test_payloads_pyjwt_took_and_the_service_never_writes_are_refused(payload: bytes) -> None:
    assert_stricter(signed(payload=payload))


def test_nbf_is_checked_against_the_service_clock_too() -> None:
    # Between the service's clock and the wall clock: PyJWT only looked at
    # the wall clock (stricter).
    assert_stricter(with_payload(nbf=NOW + 10), NOW)
    assert_both_accept(with_payload(nbf=NOW), NOW)


# --- the cache ----------------------------------------------------------------------


def test_a_cached_token_past_its_expiry_is_refused() -> None:
    signer = PeerTokenSigner(KEY)
    token = signer.issue(CLAIMS, NOW, TTL)
    assert signer.verify(token, NOW).peer_id == CLAIMS["peerId"]
    assert token in signer._cache
    assert signer.verify(token, NOW + TTL - 1).peer_id == CLAIMS["peerId"]
    for later in (NOW + TTL, NOW + TTL + 1, NOW + 10 * TTL):
        with pytest.raises(InvalidPeerToken, match="expired"):
            signer.verify(token, later)
    # And the clock is the caller's: earlier again, it is good again.
    assert signer.verify(token, NOW).peer_id == CLAIMS["peerId"]


def test_an_expired_token_is_not_kept() -> None:
    signer = PeerTokenSigner(KEY)
    token = signer.issue(CLAIMS, NOW, TTL)
    with pytest.raises(InvalidPeerToken):
        signer.verify(token, NOW + TTL)
    assert signer._cache == {}


def test_a_refused_token_never_succeeds_later_nor_a_neighbour_of_a_cached_one() -> None:
    signer = PeerTokenSigner(KEY)
    assert signer.verify(GOOD, NOW)
    for bad in (
        f"{GOOD}==",
        f"{GOOD_H}.{GOOD_P}.{_flip_last_bits(GOOD_S)}",
        f"{GOOD} ",
        signed(key=OTHER_KEY),
        f"{GOOD_H}.{b64(encode_json({**PAYLOAD, 'role': 'bot'}))}.{GOOD_S}",
    ):
        for _ in range(3):
            with pytest.raises(InvalidPeerToken):
                signer.verify(bad, NOW)
        assert bad not in signer._cache
    assert list(signer._cache) == [GOOD]


def test_the_cache_is_bounded_and_evicted_tokens_still_verify() -> None:
    signer = PeerTokenSigner(KEY, cache_size=3)
    tokens = [signer.issue({**CLAIMS, "peerId": f"peer-{i}"}, NOW, TTL) for i in range(10)]
    for token in tokens:
        signer.verify(token, NOW)
        assert len(signer._cache) <= 3
    assert list(signer._cache) == tokens[-3:]
    assert [signer.verify(token, NOW).peer_id for token in tokens] == [f"peer-{i}" for i in range(10)]
    unkept = PeerTokenSigner(KEY, cache_size=0)
    assert unkept.verify(tokens[0], NOW).peer_id == "peer-0"
    assert unkept._cache == {}


def test_the_cache_holds_a_bounded_number_of_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = PeerTokenSigner(KEY)
    tokens = [signer.issue({**CLAIMS, "peerId": f"peer-{i}"}, NOW, TTL) for i in range(10)]
    monkeypatch.setattr(peer_tokens, "CACHE_BUDGET_CHARS", 3 * len(tokens[0]) + 10)
    for token in tokens:
        signer.verify(token, NOW)
        assert sum(map(len, signer._cache)) == signer._cache_chars <= peer_tokens.CACHE_BUDGET_CHARS
    assert list(signer._cache) == tokens[-3:]
    # A token longer than any WebSocket URL takes is verified, never kept.
    big = signer.issue({**CLAIMS, "metadata": "x" * peer_tokens.MAX_CACHED_TOKEN_CHARS}, NOW, TTL)
    assert signer.verify(big, NOW).metadata == "x" * peer_tokens.MAX_CACHED_TOKEN_CHARS
    assert big not in signer._cache and list(signer._cache) == tokens[-3:]


def test_changing_returned_claims_does_not_change_the_cache() -> None:
    signer = PeerTokenSigner(KEY)
    first = signer.verify(GOOD, NOW)
    first.permissions["admin"] = False
    first.permissions["canProduceSources"]["screen"] = False
    second = signer.verify(GOOD, NOW)
    assert second.permissions == CLAIMS["permissions"]
    second.permissions.clear()
    assert signer.verify(GOOD, NOW).permissions == CLAIMS["permissions"]


def test_the_cache_belongs_to_one_key() -> None:
    signer = PeerTokenSigner(KEY)
    signer.verify(GOOD, NOW)
    with pytest.raises(InvalidPeerToken, match="Signature verification failed"):
        PeerTokenSigner(OTHER_KEY).verify(GOOD, NOW)


def test_revocation_is_asked_on_every_call_cached_or_not() -> None:
    signer = PeerTokenSigner(KEY)
    token = signer.issue(CLAIMS, NOW, TTL)
    active = {CLAIMS["keyId"]: True}
    asked: list[str] = []

    async def is_active(key_id: str) -> bool:
        asked.append(key_id)
        return active.get(key_id, False)

    check = PeerTokenCheck(signer, is_active)

    async def scenario() -> None:
        assert (await check.claims(token, NOW)).peer_id == CLAIMS["peerId"]
        assert (await check.claims(token, NOW)).peer_id == CLAIMS["peerId"]  # a cache hit
        active[CLAIMS["keyId"]] = False
        with pytest.raises(RevokedKey):
            await check.claims(token, NOW)
        with pytest.raises(InvalidPeerToken, match="expired"):
            await check.claims(token, NOW + TTL)

    asyncio.run(scenario())
    assert asked == [CLAIMS["keyId"]] * 3


# --- fuzzing ------------------------------------------------------------------------

MUTATION_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.+/ \t\n%é\x00\uff21"
FUZZ_BASE = [GOOD, signed(rs=_with_high_or_low_s), SIGNER.issue({**CLAIMS, "options": None}, NOW, 60)]


@st.composite
def mutated_tokens(draw: st.DrawFn) -> str:
    token = draw(st.sampled_from(FUZZ_BASE))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "tail"]))
        where = draw(st.integers(0, len(token)))
        char = draw(st.sampled_from(MUTATION_CHARS))
        if kind == "flip" and where < len(token):
            token = token[:where] + char + token[where + 1 :]
        elif kind == "insert":
            token = token[:where] + char + token[where:]
        elif kind == "delete" and where < len(token):
            token = token[:where] + token[where + 1 :]
        else:  # near the end, where the signature's spare bits and padding are
            where = len(token) - draw(st.integers(0, 3))
            token = token[:where] + char + token[where:]
    return token


def _agree(token: str, now_s: int) -> None:
    reference, new = both(token, now_s)
    if new[0]:
        assert reference[0] and new[1] == reference[1], (token, reference, new)
    elif reference[0]:
        # The one way a mutation of a good token is still good for PyJWT and
        # not here: '=' padding after the signature.
        assert token.endswith("=") and token.rstrip("=") in FUZZ_BASE, (token, reference, new)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_tokens(), st.sampled_from([NOW, NOW + 59, NOW + 60, NOW + TTL]))
def test_fuzz_mutated_tokens_verdicts_agree(token: str, now_s: int) -> None:
    _agree(token, now_s)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
claim_names = st.sampled_from([*REQUIRED_CLAIMS, "options", "metadata", "aud", "sub", "jti", "nbf", "iat", "iss"])


@st.composite
def signed_payloads(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    payload = dict(PAYLOAD)
    for _ in range(draw(st.integers(0, 4))):
        name = draw(claim_names)
        if draw(st.booleans()):
            payload.pop(name, None)
        else:
            payload[name] = draw(
                st.one_of(
                    json_values,
                    st.integers(NOW - 5, NOW + 5),
                    st.dictionaries(st.sampled_from(["maxPeersAllowed", "roomLocked", "admin"]), json_values),
                )
            )
    return payload, signed(payload=payload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(signed_payloads())
def test_fuzz_well_signed_payloads_verdicts_agree(case: tuple[dict[str, Any], str]) -> None:
    payload, token = case
    now_s = int(time.time())  # both then judge nbf by the same clock
    reference, new = both(token, now_s)
    if new[0]:
        assert reference[0] and new[1] == reference[1], (payload, reference, new)
    elif reference[0]:
        # Only where the new one is stricter on purpose: an nbf that is not a number.
        nbf = payload.get("nbf")
        assert isinstance(nbf, bool | str), (payload, reference, new)
