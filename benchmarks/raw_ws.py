"""The WebSocket ceiling: a raw ASGI app that does only the transport work of a
peer's join and leave. For every WebSocket it accepts, sends one small JSON
text message shaped like the service's `joined` message, waits for the
client's next message and closes with 1000 "left", as the service does after
{"type":"leave"}. Any HTTP request gets a small 200 (a readiness probe).

uvicorn serves it with the service's own server options: the uvicorn.Config
that `livesessions serve` builds (`livesessions.cli._server_config`, so the
service's protocol classes from `livesessions.http.protocols`, httptools +
websockets-sansio, uvloop, one worker, access log off, the same ping interval
and timeout) from default Settings, with the per-client connection cap off as
the benchmarks run the service. permessage-deflate is negotiated only with
--ws-compression (the service's default is off).

    .venv/bin/python benchmarks/raw_ws.py --port 9002 [--ws-compression]
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

# The size and shape of the service's `joined` for a peer alone in its room.
JOINED = (
    '{"type":"joined","roomId":"abc-defg-hij","sessionId":"ses_0f5c2a4e9d7b4c1e8a3f",'
    '"peerId":"peerId-6qx0bv2mr8kl3n5p","peers":[]}'
)
ACCEPT = {"type": "websocket.accept"}
SEND_JOINED = {"type": "websocket.send", "text": JOINED}
CLOSE = {"type": "websocket.close", "code": 1000, "reason": "left"}

BODY = b'{"ok":true,"message":"raw ws baseline"}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
}
RESPONSE_BODY = {"type": "http.response.body", "body": BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "websocket":
        if (await receive())["type"] != "websocket.connect":
            return
        await send(ACCEPT)
        await send(SEND_JOINED)
        if (await receive())["type"] == "websocket.receive":
            await send(CLOSE)
        return
    if kind == "http":
        await send(START)
        await send(RESPONSE_BODY)
        return
    if kind == "lifespan":  # the service's config runs with lifespan "on"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def config(host: str, port: int, ws_compression: bool) -> Any:
    """The uvicorn.Config `livesessions serve` would use, serving `app`."""
    from livesessions.cli import _server_config
    from livesessions.config import Settings

    settings = Settings(host=host, port=port, max_connections_per_client=0)
    cfg = _server_config(settings, app)
    # Set here whatever the service's Settings say, so the ceiling negotiates
    # exactly what it is told to (ws_churn.py passes what the service did).
    cfg.ws_per_message_deflate = ws_compression
    return cfg


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument(
        "--ws-compression",
        action="store_true",
        help="negotiate permessage-deflate with clients that offer it (default: off, as the service)",
    )
    args = parser.parse_args()
    # The service's config leaves logging to livesessions.logs; warnings only here.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.Server(config(args.host, args.port, args.ws_compression)).run()


if __name__ == "__main__":
    main()
