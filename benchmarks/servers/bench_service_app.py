"""The livesessions app as an importable ASGI callable, for servers other than
the uvicorn that `livesessions serve` runs (granian, hypercorn), so that
benchmarks/servers.py can measure the same app under each.

    LIVESESSIONS_BENCH_ARGS='["--data-dir", "/tmp/x", "--rate-limit", "0"]' \
        granian --interface asgi --working-dir benchmarks/servers bench_service_app:app

The settings are parsed from LIVESESSIONS_BENCH_ARGS (a JSON list of
`livesessions serve` flags) by the CLI's own parser, then, as `serve` does in
embedded mode: the data directory is locked, the services built, the app made
(`create_app`), logging configured. What `serve` adds on top stays with
uvicorn and is NOT here: the hardened protocol classes
(livesessions.http.protocols: header limits, read timeouts, per-client
connection cap, write-stall cut-off, ping timeout), and the WebSocket ping
settings, which are the server's.

The app is built lazily, on the first ASGI call (the lifespan startup), inside
the server's worker process and event loop: a server that imports the module
in a supervisor process as well never locks the data directory twice.
On lifespan shutdown, the live event streams are ended first, as `serve`'s
uvicorn.Server subclass does.
"""

from __future__ import annotations

import json
import os
from typing import Any

_state: dict[str, Any] = {}


def _build() -> Any:
    from livesessions import cli
    from livesessions.app import create_app
    from livesessions.config import Settings
    from livesessions.data_dir import lock_data_dir
    from livesessions.http.protocols import raise_open_files_limit
    from livesessions.logs import configure as configure_logs
    from livesessions.services import build_services

    argv = json.loads(os.environ.get("LIVESESSIONS_BENCH_ARGS", "[]"))
    args = cli.build_parser().parse_args(["serve", *argv])
    settings = Settings(**{name: cli._value(args, name) for name in cli.SETTINGS})
    settings.check_mode()
    if settings.scaled_out:
        raise RuntimeError("bench_service_app runs the embedded (SQLite) mode only")
    configure_logs(settings.log_level, "json" if settings.log_format == "json" else "text", settings.access_log)
    raise_open_files_limit()
    _state["lock"] = lock_data_dir(settings.data_dir)
    services = build_services(settings)
    _state["services"] = services
    return create_app(services)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    inner = _state.get("app")
    if inner is None:
        inner = _state["app"] = _build()
    if scope["type"] != "lifespan":
        return await inner(scope, receive, send)

    async def receive_and_end_streams() -> Any:
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            _state["services"].project_events.close()
        return message

    await inner(scope, receive_and_end_streams, send)
