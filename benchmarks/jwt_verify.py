"""Peer-token verification cost, in this process: the PyJWT-based verify the
service used to run on every WebSocket join, next to PeerTokenSigner.verify
(its own ES256 check on `cryptography`), on a cache miss and on a cache hit.

    .venv/bin/python benchmarks/jwt_verify.py [--tokens 200] [--count 1500] [--hit-count 30000]
                                              [--rounds 5] [--metadata-bytes 64] [--output jwt_verify.json]

What it does (no server, no network; about 10 s with the defaults):
  1. makes a P-256 key and --tokens distinct tokens with create-peer-token's
     claims (host permissions, --metadata-bytes of metadata, room options);
  2. checks that every path gives the same claims for every token;
  3. --rounds times, interleaved (so a neighbour's load on a shared machine
     falls on all paths alike), times:
       pyjwt reference        jwt.decode(...) with the old options + PeerClaims
       new, cache miss        PeerTokenSigner(key, cache_size=0).verify
       new, cache hit         PeerTokenSigner(key).verify, every token cached
       ecdsa only             public_key.verify(DER signature, header.payload):
                              the floor any ES256 verification pays
     --count verifies per round for the first two and the last, --hit-count
     for the hit, garbage collection off while timing (as timeit does);
  4. prints µs per verify -- CPU time of this process (median over rounds,
     and the best round), and wall time -- and the ratios of the CPU medians
     to the reference, and writes benchmarks/results/jwt_verify.json.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, write_json
from livesessions.auth.peer_tokens import (
    REQUIRED_CLAIMS,
    InvalidPeerToken,
    PeerClaims,
    PeerTokenSigner,
    peer_claims,
)
from livesessions.domain.permissions import resolve_permissions

NOW = 1_700_000_000
TTL = 4 * 3600


def reference_verify(public: ec.EllipticCurvePublicKey, token: str, now_s: int) -> PeerClaims:
    """PeerTokenSigner.verify as it was before issue 12 (PyJWT)."""
    try:
        claims = jwt.decode(
            token,
            public,
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
    return peer_claims(claims)


def make_tokens(signer: PeerTokenSigner, count: int, metadata_bytes: int) -> list[str]:
    metadata = '{"displayName":"' + "x" * max(0, metadata_bytes - 18) + '"}'
    return [
        signer.issue(
            {
                "peerId": f"peerId-{index:016d}",
                "roomId": "abc-defg-hij",
                "projectId": "prj_0123456789abcdef",
                "keyId": "key_0123456789abcdef",
                "role": "host",
                "permissions": resolve_permissions("host", None),
                "metadata": metadata,
                "options": {"maxPeersAllowed": 50, "roomLocked": False},
            },
            NOW,
            TTL,
        )
        for index in range(count)
    ]


def ecdsa_only(public: ec.EllipticCurvePublicKey) -> Callable[[str], object]:
    algorithm = ec.ECDSA(hashes.SHA256())

    def verify(token: str) -> None:
        signing_input, _, signature = token.rpartition(".")
        raw = jwt.utils.base64url_decode(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        public.verify(der, signing_input.encode(), algorithm)

    return verify


def time_round(verify: Callable[[str], object], tokens: list[str], count: int) -> tuple[float, float]:
    """µs per verify over `count` verifies, cycling through the tokens: CPU
    time of this process (what a join costs; steadier on a shared machine)
    and wall time."""
    batch = (tokens * (count // len(tokens) + 1))[:count]
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        for token in batch:
            verify(token)
        cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
    finally:
        if gc_was_on:
            gc.enable()
    return cpu / count * 1e6, wall / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200, help="distinct tokens (default 200)")
    parser.add_argument("--count", type=int, default=1500, help="verifies per round, uncached paths (default 1500)")
    parser.add_argument("--hit-count", type=int, default=30_000, help="verifies per round, cache hits (default 30000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per path, interleaved (default 5)")
    parser.add_argument("--metadata-bytes", type=int, default=64, help="peer metadata per token (default 64)")
    parser.add_argument("--output", default="jwt_verify.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    if args.tokens < 1 or args.count < 1 or args.hit_count < 1 or args.rounds < 1:
        parser.error("--tokens, --count, --hit-count and --rounds must be at least 1")

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    signer = PeerTokenSigner(key)
    tokens = make_tokens(signer, args.tokens, args.metadata_bytes)
    if args.tokens > 4096:
        print("note: more tokens than the cache holds; the 'hit' path will miss", file=sys.stderr)

    uncached = PeerTokenSigner(key, cache_size=0)
    cached = PeerTokenSigner(key)
    for token in tokens:  # same answers everywhere, and the cache filled
        expected = reference_verify(public, token, NOW)
        if not (uncached.verify(token, NOW) == cached.verify(token, NOW) == expected):
            raise SystemExit("the paths disagree on a token's claims")

    paths: dict[str, tuple[Callable[[str], object], int]] = {
        "pyjwt_reference": (lambda token: reference_verify(public, token, NOW), args.count),
        "new_cache_miss": (lambda token: uncached.verify(token, NOW), args.count),
        "new_cache_hit": (lambda token: cached.verify(token, NOW), args.hit_count),
        "ecdsa_only": (ecdsa_only(public), args.count),
    }
    for verify, _ in paths.values():  # warm up
        time_round(verify, tokens, min(200, args.count))
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    started = time.monotonic()
    for _ in range(args.rounds):
        for name, (verify, count) in paths.items():
            rounds[name].append(time_round(verify, tokens, count))
    wall_s = time.monotonic() - started

    results: dict[str, Any] = {}
    for name, values in rounds.items():
        cpu, wall = [value[0] for value in values], [value[1] for value in values]
        results[name] = {
            "cpu_us_per_verify_median": round(statistics.median(cpu), 2),
            "cpu_us_per_verify_best": round(min(cpu), 2),
            "wall_us_per_verify_median": round(statistics.median(wall), 2),
            "cpu_rounds_us": [round(value, 2) for value in cpu],
        }
    median = {name: figures["cpu_us_per_verify_median"] for name, figures in results.items()}
    reference = median["pyjwt_reference"]
    ratios = {
        "pyjwt_over_new_miss": round(reference / median["new_cache_miss"], 2),
        "pyjwt_over_new_hit": round(reference / median["new_cache_hit"], 1),
        "new_miss_over_ecdsa_only": round(median["new_cache_miss"] / median["ecdsa_only"], 2),
    }

    print(f"token length {len(tokens[0])} characters, {args.tokens} tokens, {args.rounds} rounds ({wall_s:.1f} s)")
    print(f"{'path':18} {'CPU µs/verify':>14} {'best round':>11} {'wall µs':>9} {'pyjwt / this':>13}")
    for name, figures in results.items():
        print(
            f"{name:18} {figures['cpu_us_per_verify_median']:14.2f} {figures['cpu_us_per_verify_best']:11.2f}"
            f" {figures['wall_us_per_verify_median']:9.2f} {reference / median[name]:12.2f}x"
        )
    print(
        f"pyjwt / new miss = {ratios['pyjwt_over_new_miss']}x, pyjwt / new hit = {ratios['pyjwt_over_new_hit']}x, "
        f"new miss / ecdsa only = {ratios['new_miss_over_ecdsa_only']}x (medians of CPU time)"
    )
    path = write_json(
        args.output,
        {
            "benchmark": "jwt_verify",
            "machine": machine_info(),
            "params": {
                "tokens": args.tokens,
                "count": args.count,
                "hit_count": args.hit_count,
                "rounds": args.rounds,
                "metadata_bytes": args.metadata_bytes,
                "token_chars": len(tokens[0]),
                "pyjwt": jwt.__version__,
            },
            "results": results,
            "ratios": ratios,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
