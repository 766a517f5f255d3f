"""The `livesessions` command: run the service, manage API keys."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from livesessions import __version__
from livesessions.auth.api_keys import WALLET_PATTERN, ApiKeys
from livesessions.clock import now_ms
from livesessions.config import Settings

DEFAULT_DATA_DIR = "livesessions-data"
DEFAULTS = Settings()


class CommandError(Exception):
    """A problem worth one line to the user, not a traceback."""


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("LIVESESSIONS_DATA_DIR", DEFAULT_DATA_DIR)),
        help="where the SQLite database and the token signing key live "
        f"(default: $LIVESESSIONS_DATA_DIR or ./{DEFAULT_DATA_DIR}; created on first start)",
    )


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _chain_ids(text: str) -> frozenset[int]:
    try:
        ids = frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not ids or min(ids) < 1:
        raise argparse.ArgumentTypeError("chain ids are positive numbers")
    return ids


def _public_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"must be an http(s) URL such as https://live.example.com: {text!r}")
    return text.rstrip("/")


def _address_list(text: str) -> tuple[str, ...]:
    addresses = tuple(part.strip() for part in text.split(",") if part.strip())
    for address in addresses:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an IP address or network: {address!r}") from None
    return addresses


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livesessions",
        description="A self-hosted, wire-compatible Huddle01 Live Sessions API.",
    )
    parser.add_argument("--version", action="version", version=f"livesessions {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the service", description="Run the HTTP and WebSocket service.")
    serve.add_argument("--host", default=DEFAULTS.host, help=f"address to listen on (default: {DEFAULTS.host})")
    serve.add_argument("--port", type=int, default=DEFAULTS.port, help=f"port to listen on (default: {DEFAULTS.port})")
    _data_dir(serve)
    serve.add_argument(
        "--recordings-dir", type=Path, default=None, metavar="DIR",
        help="where the built-in recorder writes its files, e.g. on a volume of their own "
        "(default: DATA_DIR/recordings)",
    )
    serve.add_argument(
        "--grace-period", type=_positive, default=DEFAULTS.grace_period, metavar="SECONDS",
        help="a room whose last peer left keeps its session if someone rejoins within this time (default: %(default)g)",
    )
    serve.add_argument(
        "--ping-interval", type=_positive, default=DEFAULTS.ping_interval, metavar="SECONDS",
        help="how often peers are pinged (default: %(default)g)",
    )
    serve.add_argument(
        "--ping-timeout", type=_positive, default=DEFAULTS.ping_timeout, metavar="SECONDS",
        help="a peer that does not answer a ping within this time is removed (default: %(default)g)",
    )
    serve.add_argument(
        "--heartbeat-interval", type=_positive, default=DEFAULTS.heartbeat_interval, metavar="SECONDS",
        help="how often live sessions are marked alive in history (a crash closes them no earlier than this), "
        "and keys revoked by another process on the same database are picked up (default: %(default)g)",
    )
    serve.add_argument(
        "--worker-lease", type=_positive, default=DEFAULTS.worker_lease, metavar="SECONDS",
        help="a media worker silent for this long loses its claimed job to the queue (default: %(default)g)",
    )
    serve.add_argument(
        "--public-url", type=_public_url, default=None, metavar="URL",
        help="the address clients reach the service at: what wallet sign-in messages must name, and the base "
        "of the links it hands out; set it behind a proxy (default: http://HOST:PORT as listened on; "
        "never taken from request headers)",
    )
    serve.add_argument(
        "--trusted-proxies", type=_address_list, default=DEFAULTS.trusted_proxies, metavar="ADDRESSES",
        help="comma-separated addresses or networks of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto headers are believed (default: none)",
    )
    serve.add_argument(
        "--rate-limit", type=_non_negative, default=DEFAULTS.rate_limit, metavar="PER_SECOND",
        help="requests a second each API key may make on average; 0 turns limits off (default: %(default)g)",
    )
    serve.add_argument(
        "--rate-burst", type=_positive, default=DEFAULTS.rate_burst, metavar="REQUESTS",
        help="how many requests an API key may make at once above its rate (default: %(default)g)",
    )
    serve.add_argument(
        "--sign-ins-per-minute", type=_positive, default=DEFAULTS.sign_ins_per_minute, metavar="N",
        help="wallet sign-in attempts allowed per minute, per wallet and per client address (default: %(default)g)",
    )
    serve.add_argument(
        "--siwe-domain", default=None, metavar="HOST",
        help="the domain sign-in messages must name (default: the host and port of --public-url)",
    )
    serve.add_argument(
        "--siwe-uri", default=None, metavar="URL",
        help="the URI sign-in messages must name (default: --public-url)",
    )
    serve.add_argument(
        "--failed-auths-per-minute", type=_positive, default=DEFAULTS.failed_auths_per_minute, metavar="N",
        help="requests with a wrong API key or account token allowed per minute from one client address, "
        "then 429 (default: %(default)g)",
    )
    serve.add_argument(
        "--peer-message-rate", type=_positive, default=DEFAULTS.peer_message_rate, metavar="PER_SECOND",
        help="messages a second each peer may send over its WebSocket on average (default: %(default)g)",
    )
    serve.add_argument(
        "--peer-message-burst", type=_positive, default=DEFAULTS.peer_message_burst, metavar="MESSAGES",
        help="how many messages a peer may send at once above its rate; past that they are dropped, "
        "and a peer that keeps sending is disconnected with code 4008 (default: %(default)g)",
    )
    serve.add_argument(
        "--max-header-bytes", type=int, default=DEFAULTS.max_header_bytes, metavar="BYTES",
        help="longest request line plus headers accepted; longer ones get 414 or 431 (default: %(default)d)",
    )
    serve.add_argument(
        "--read-timeout", type=_positive, default=DEFAULTS.read_timeout, metavar="SECONDS",
        help="a client must send a request's headers within this time, and may not pause longer "
        "while sending a body (default: %(default)g)",
    )
    serve.add_argument(
        "--max-connections-per-client", type=int, default=DEFAULTS.max_connections_per_client, metavar="N",
        help="open connections allowed from one client address (default: %(default)d)",
    )
    serve.add_argument(
        "--chain-ids", type=_chain_ids, default=DEFAULTS.chain_ids, metavar="IDS",
        help="comma-separated chain ids sign-in messages may name (default: 1)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--access-log", action="store_true", help="log every request (off by default: it costs throughput)")

    keys = commands.add_parser("keys", help="manage API keys", description="Manage API keys offline.")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    create = key_commands.add_parser(
        "create",
        help="create an API key for a wallet's project",
        description="Create an API key for the project owned by a wallet address, and print it. "
        "The key is shown only now; only its hash is stored.",
    )
    create.add_argument("--wallet", required=True, help="the wallet address that owns the project (0x…)")
    create.add_argument("--name", default="cli", help="a name to tell the key apart (default: cli)")
    create.add_argument("--json", action="store_true", help="print a JSON object instead of the bare key")
    _data_dir(create)

    login = commands.add_parser(
        "login",
        help="sign in with a wallet key and print an API key",
        description="Sign in to a running service with a wallet's private key (Sign-In with Ethereum) "
        "and print an API key for the wallet's project: its first key on a first sign-in, "
        "otherwise a new one. The private key is read from --key-file or the "
        "LIVESESSIONS_WALLET_KEY environment variable, never from the command line.",
    )
    login.add_argument("--url", default="http://127.0.0.1:8080", help="the service (default: http://127.0.0.1:8080)")
    login.add_argument("--key-file", type=Path, help="a file holding the wallet's hex private key")
    login.add_argument("--chain-id", type=int, default=1, help="the chain id to sign for (default: 1)")
    login.add_argument("--name", default="login", help="name of the key created when one is needed (default: login)")
    login.add_argument("--json", action="store_true", help="print a JSON object instead of the bare key")
    return parser


class RedactTokens(logging.Filter):
    """Keep bearer secrets (peer tokens in /ws?token=…) out of the logs."""

    _TOKEN = re.compile(r"token=[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._TOKEN.sub("token=…", a) if isinstance(a, str) else a for a in record.args)
        return True


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from livesessions.app import create_app
    from livesessions.data_dir import DataDirInUse, lock_data_dir
    from livesessions.services import build_services

    settings = Settings(
        data_dir=args.data_dir,
        recordings_path=args.recordings_dir,
        host=args.host,
        port=args.port,
        grace_period=args.grace_period,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        heartbeat_interval=args.heartbeat_interval,
        worker_lease=args.worker_lease,
        public_url=args.public_url,
        trusted_proxies=args.trusted_proxies,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        sign_ins_per_minute=args.sign_ins_per_minute,
        siwe_domain=args.siwe_domain,
        siwe_uri=args.siwe_uri,
        failed_auths_per_minute=args.failed_auths_per_minute,
        chain_ids=args.chain_ids,
        peer_message_rate=args.peer_message_rate,
        peer_message_burst=args.peer_message_burst,
        max_header_bytes=args.max_header_bytes,
        read_timeout=args.read_timeout,
        max_connections_per_client=args.max_connections_per_client,
    )
    try:
        lock = lock_data_dir(settings.data_dir)
    except DataDirInUse as exc:
        raise CommandError(str(exc)) from None
    services = build_services(settings)
    # Bounded request heads, read timeouts, a cap on connections per client,
    # and WebSocket peers that stop reading cut off: livesessions.http.protocols.
    from livesessions.http.protocols import protocol_classes, raise_open_files_limit

    http_protocol, ws_protocol = protocol_classes(settings)
    raise_open_files_limit()
    config = uvicorn.Config(
        create_app(services),
        host=settings.host,
        port=settings.port,
        http=http_protocol,
        ws=ws_protocol,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        ws_max_size=settings.max_ws_frame_bytes,
        log_level=args.log_level,
        access_log=args.access_log,
        lifespan="on",
        # Forwarded headers are believed only from the proxies named.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
        timeout_graceful_shutdown=5,
    )
    # uvicorn logs each WebSocket's path; ours carries the peer's token.
    logging.getLogger("uvicorn.error").addFilter(RedactTokens())
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        lock.close()
    return 0 if server.started else 1


def create_key(args: argparse.Namespace) -> int:
    from livesessions.services import open_store

    if not WALLET_PATTERN.match(args.wallet):
        raise CommandError("--wallet must be 0x followed by 40 hexadecimal digits")
    if not args.name.strip() or len(args.name) > 100:
        raise CommandError("--name must be 1 to 100 characters")
    store = open_store(Settings(data_dir=args.data_dir))

    async def run() -> tuple[str, str, str]:
        now = now_ms()
        project = await store.project_for_wallet(args.wallet, now)
        key, record = await ApiKeys(store, now_ms).create(project.project_id, args.name.strip(), now)
        return key, record.id, project.project_id

    try:
        key, key_id, project_id = asyncio.run(run())
    finally:
        store.close()
    if args.json:
        print(json.dumps({"apiKey": key, "id": key_id, "projectId": project_id, "wallet": args.wallet.lower()}))
    else:
        print(f"project {project_id} (wallet {args.wallet.lower()}); the key is shown only once:")
        print(key)
    return 0


def run_login(args: argparse.Namespace) -> int:
    from livesessions.auth.wallet_login import LoginError, login

    if args.key_file is not None:
        try:
            private_key = args.key_file.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read --key-file: {exc.strerror}") from None
    elif os.environ.get("LIVESESSIONS_WALLET_KEY"):
        private_key = os.environ["LIVESESSIONS_WALLET_KEY"]
    else:
        raise CommandError("give the wallet's private key with --key-file or LIVESESSIONS_WALLET_KEY")
    try:
        answer = login(args.url, private_key, args.chain_id, args.name)
    except LoginError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps({k: answer[k] for k in ("apiKey", "projectId", "address")}))
    else:
        print(f"signed in as {answer['address']} (project {answer['projectId']}); the key is shown only once:")
        print(answer["apiKey"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    handler = {"serve": serve, "keys": create_key, "login": run_login}[args.command]
    try:
        return handler(args)
    except CommandError as exc:
        print(f"livesessions: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"livesessions: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, not a traceback
        print(f"livesessions: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
