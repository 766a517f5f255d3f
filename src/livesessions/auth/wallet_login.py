"""`livesessions login`: sign in with a wallet's private key from a script.

The key comes from a file or an environment variable, never from the command
line (where other users could read it in the process list).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.messages import encode_defunct

from livesessions.auth.siwe import SiweMessage, format_time
from livesessions.auth.wallet_sign_in import STATEMENT
from livesessions.clock import now_ms


class LoginError(Exception):
    pass


def _call(method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
            return answer
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message", exc.reason)
        except ValueError:
            message = exc.reason
        raise LoginError(f"{method} {url}: {exc.code} {message}") from None
    except urllib.error.URLError as exc:
        raise LoginError(f"cannot reach {url}: {exc.reason}") from None


def login(
    base_url: str, private_key: str, chain_id: int, key_name: str, public_url: str | None = None
) -> dict[str, Any]:
    """Sign in; returns the verify answer with an `apiKey` (a new one if the
    wallet had signed in before and so got none from the sign-in itself).

    The message names `public_url` (the service's --public-url), by default
    `base_url`. It is built here, never taken from the server: a server
    could otherwise have the wallet sign a message for another site."""
    try:
        account = Account.from_key(private_key.strip())
    except Exception:  # noqa: BLE001 - never echo the key back
        raise LoginError("the private key is not a valid 32-byte hex key") from None
    base = base_url.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LoginError(f"--url must be an http(s) address, not {base_url!r}")
    named = urlsplit(public_url.rstrip("/")) if public_url else parts
    if named.scheme not in ("http", "https") or not named.netloc:
        raise LoginError(f"--public-url must be an http(s) address, not {public_url!r}")
    nonce = _call("GET", f"{base}/api/v2/auth/nonce")["nonce"]
    message = SiweMessage(
        domain=named.netloc,
        address=account.address,
        statement=STATEMENT,
        uri=f"{named.scheme}://{named.netloc}",
        chain_id=chain_id,
        nonce=nonce,
        issued_at=format_time(now_ms()),
    ).text()
    signature = "0x" + Account.sign_message(encode_defunct(text=message), account.key).signature.hex().removeprefix(
        "0x"
    )
    answer = _call("POST", f"{base}/api/v2/auth/verify", {"message": message, "signature": signature})
    if "apiKey" not in answer:
        created = _call("POST", f"{base}/api/v2/keys", {"name": key_name}, token=answer["token"])
        answer["apiKey"] = created["apiKey"]
    return answer
