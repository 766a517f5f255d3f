"""One webhook attempt: a signed POST to a checked address, and what came back.

A small HTTP/1.1 client of its own rather than a general one, because the
attempt must connect to the address that was checked (not resolve the name
again), never follow a redirect, give up after 10 s in all, and read at most
1 KiB of whatever the receiver answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl

from livesessions.domain.webhooks import ATTEMPT_TIMEOUT_S, MAX_RESPONSE_BYTES, AttemptResult
from livesessions.webhooks.targets import IPAddress, Target

USER_AGENT = "livesessions-webhooks/1"
# The status line and headers of an answer may take this much, no more.
_MAX_HEAD_BYTES = 16 * 1024


def signature_header(api_key: str, event_id: str, timestamp_ms: int, body: str) -> str:
    """`t=<ms>,sha256=<hex>`: HMAC-SHA256 over "<id>.<t>.<body>" keyed with the
    API key, as Huddle01's WebhookReceiver checks it."""
    digest = hmac.new(api_key.encode(), f"{event_id}.{timestamp_ms}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp_ms},sha256={digest}"


def request_bytes(target: Target, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host_header}",
        f"User-Agent: {USER_AGENT}",
        "Content-Type: text/plain",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_TLS = ssl.create_default_context()


async def post(
    target: Target,
    address: IPAddress,
    headers: list[tuple[str, str]],
    body: bytes,
    timeout: float = ATTEMPT_TIMEOUT_S,
) -> AttemptResult:
    """POST `body` to `target` at `address`; never raises."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                str(address),
                target.port,
                ssl=_TLS if target.scheme == "https" else None,
                server_hostname=target.host if target.scheme == "https" else None,
                limit=_MAX_HEAD_BYTES,
            )
            writer.write(request_bytes(target, headers, body))
            await writer.drain()
            status = await _read_status(reader)
            if 300 <= status < 400:
                return AttemptResult(status, f"answered {status}: redirects are not followed")
            if not 200 <= status < 300:
                text = await _read_some(reader)
                return AttemptResult(status, f"answered {status}" + (f": {text}" if text else ""))
            return AttemptResult(status)
    except TimeoutError:
        return AttemptResult(None, f"no answer within {timeout:g} s")
    except ssl.SSLError as exc:
        return AttemptResult(None, f"TLS failed: {exc.reason or exc}")
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return AttemptResult(None, f"{type(exc).__name__}: {exc}"[:200])
    finally:
        if writer is not None:
            writer.close()


async def _read_status(reader: asyncio.StreamReader) -> int:
    line = await reader.readline()
    parts = line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ValueError(f"not an HTTP answer: {line[:60]!r}")
    size = len(line)
    while True:  # the headers: skipped, but bounded
        header = await reader.readline()
        size += len(header)
        if size > _MAX_HEAD_BYTES:
            raise ValueError("the answer's headers are too long")
        if header in (b"\r\n", b"\n", b""):
            break
    return int(parts[1])


async def _read_some(reader: asyncio.StreamReader) -> str:
    """At most MAX_RESPONSE_BYTES of the answer's body, for the log (a short
    wait: the status is what counts)."""
    try:
        async with asyncio.timeout(1.0):
            data = await reader.read(MAX_RESPONSE_BYTES)
    except (TimeoutError, OSError):
        return ""
    return data.decode("utf-8", "replace").strip()[:200]
