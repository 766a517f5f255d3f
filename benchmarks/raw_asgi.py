"""The ceiling: a minimal raw ASGI app served by uvicorn with the same options
the service uses (one worker, httptools/uvloop as uvicorn picks them with
"auto", access log off), so the difference to a service route is the
service's own work.

By default it answers every HTTP request with a fixed 41-byte JSON body
(the historical baseline). With `--responses FILE` it answers the paths named
in that file with the exact status, headers and body bytes given there
(usually captured from the service just before a run, see hot_gets.py and
create_room.py), and every other path with the 41-byte body:

    {"/api/v2/sdk/live-sessions": {"status": 200,
                                   "headers": [["content-type", "application/json"]],
                                   "body_b64": "eyJsaXZlU2Vzc2lvbnMiOltdfQ=="}, ...}

`content-length` is always set from the body. Requests other than GET/HEAD
have their body read in full before the answer, as the service does.

    .venv/bin/python benchmarks/raw_asgi.py --port 9001
    .venv/bin/python benchmarks/raw_asgi.py --port 9001 --responses /tmp/responses.json
    wrk -t2 -c64 -d5s http://127.0.0.1:9001/
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path
from typing import Any

BODY = b'{"ok":true,"message":"raw asgi baseline"}'


def _messages(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"date", b"server")]
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [*kept, (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


DEFAULT = _messages(200, [(b"content-type", b"application/json")], BODY)
# path -> (response start, response body), filled by --responses.
ROUTES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}


def load_responses(path: Path) -> None:
    for route, spec in json.loads(path.read_text()).items():
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in spec.get("headers", [])]
        ROUTES[route] = _messages(int(spec.get("status", 200)), headers, base64.b64decode(spec["body_b64"]))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # no lifespan work; uvicorn runs with lifespan "off"
    if scope["method"] not in ("GET", "HEAD"):
        # Read the whole request body, as the service does for a POST.
        message = await receive()
        while message.get("more_body"):
            message = await receive()
    start, body = ROUTES.get(scope["path"], DEFAULT) if ROUTES else DEFAULT
    await send(start)
    await send(body)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument(
        "--responses",
        type=Path,
        default=None,
        help="JSON file mapping path -> {status, headers, body_b64}; other paths get the 41-byte body",
    )
    args = parser.parse_args()
    if args.responses is not None:
        load_responses(args.responses)
    # Mirrors `livesessions serve`: http/loop "auto" (httptools + uvloop when
    # installed), a single worker, no access log, warning-level logging.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
