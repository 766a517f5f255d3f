"""The floor for memory per idle WebSocket peer: a raw ASGI app that accepts
every WebSocket, sends one small text message (like the service's `joined`),
then only waits; `{"type":"leave"}` makes it close with 1000, as the service
does. Any HTTP request gets a fixed 200 (a readiness check).

uvicorn serves it with the service's own transport: the same uvicorn.Config
`livesessions serve` builds (livesessions.cli._server_config: the service's
protocol classes from livesessions.http.protocols, ping interval and timeout,
frame size limit, the raised open-files limit), with the per-client
connection cap off and permessage-deflate OFF unless --compression is given.
So the difference to the service is the service's own per-peer state.

    .venv/bin/python benchmarks/raw_ws_idle.py --port 9002 [--compression]

peer_memory.py starts it by itself; run it alone to poke at it.
"""

from __future__ import annotations

import argparse
from typing import Any

JOINED = '{"type":"joined","roomId":"raw","sessionId":null,"peerId":"raw","peers":[]}'
BODY = b'{"ok":true,"message":"raw ws floor"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if kind == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": BODY})
        return
    if kind != "websocket":
        return
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": JOINED})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if '"leave"' in (message.get("text") or ""):
            await send({"type": "websocket.close", "code": 1000, "reason": "left"})
            return


def server_config(host: str, port: int, compression: bool) -> Any:
    """The uvicorn.Config `livesessions serve` would use, for this app."""
    from livesessions.config import Settings

    settings = Settings(host=host, port=port, max_connections_per_client=0)
    try:
        from livesessions.cli import _server_config
    except ImportError:  # renamed: build the same thing from its parts
        import uvicorn

        from livesessions.http.protocols import protocol_classes, raise_open_files_limit

        http_protocol, ws_protocol = protocol_classes(settings)
        raise_open_files_limit()
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=http_protocol,
            ws=ws_protocol,
            ws_ping_interval=settings.ping_interval,
            ws_ping_timeout=settings.ping_timeout,
            ws_max_size=settings.max_ws_frame_bytes,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    else:
        config = _server_config(settings, app)
    config.ws_per_message_deflate = compression
    config.access_log = False
    return config


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument(
        "--compression", action="store_true", help="negotiate permessage-deflate with clients that offer it"
    )
    args = parser.parse_args()
    uvicorn.Server(server_config(args.host, args.port, args.compression)).run()


if __name__ == "__main__":
    main()
