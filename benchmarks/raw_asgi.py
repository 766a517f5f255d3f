"""The ceiling: a minimal raw ASGI app that answers every HTTP request with a
fixed small JSON body. Served by uvicorn with the same options the service
uses (one worker, httptools/uvloop as uvicorn picks them with "auto", access
log off), so the difference to a service route is the service's own work.

    .venv/bin/python benchmarks/raw_asgi.py --port 9001
    wrk -t2 -c64 -d5s http://127.0.0.1:9001/
"""

from __future__ import annotations

import argparse
from typing import Any

BODY = b'{"ok":true,"message":"raw asgi baseline"}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
}
RESPONSE_BODY = {"type": "http.response.body", "body": BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # no lifespan work; uvicorn runs with lifespan "auto"/"off"
    await send(START)
    await send(RESPONSE_BODY)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    # Mirrors `livesessions serve`: http/loop "auto" (httptools + uvloop when
    # installed), a single worker, no access log, warning-level logging.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
