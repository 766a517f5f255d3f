"""The `livesessions` command: run the service, manage API keys and whitelisted
domains, sign in."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from livesessions import __version__
from livesessions.auth.api_keys import WALLET_PATTERN, ApiKeys
from livesessions.clock import now_ms
from livesessions.config import Setting, Settings, declared, describe_default
from livesessions.logs import configure as configure_logs

SETTINGS = {setting.attr: setting for setting in declared()}


class CommandError(Exception):
    """A problem worth one line to the user, not a traceback."""


def _from_text(setting: Setting) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.attr  # argparse names the type in its errors
    return parse


def _add_setting(parser: argparse.ArgumentParser, setting: Setting) -> None:
    """A setting's flag. Left out, the setting comes from its environment
    variable, then its declared default (see `_value`): read only by the
    command that uses it, so a bad variable fails only there."""
    if "(default:" in setting.help:  # the declaration says it in words
        help_text = f"{setting.help[:-1]}; env {setting.env})"
    else:
        shown = "none" if setting.default is None else describe_default(setting.default)
        help_text = f"{setting.help} (default: {shown}; env {setting.env})"
    optional_value = {"nargs": "?", "const": True} if isinstance(setting.default, bool) else {}
    parser.add_argument(
        setting.flag,
        dest=setting.attr,
        default=argparse.SUPPRESS,
        type=_from_text(setting),
        metavar=setting.metavar,
        help=help_text,
        **optional_value,  # type: ignore[arg-type]
    )


def _value(args: argparse.Namespace, name: str) -> Any:
    """A setting as the command line, then the environment, then its declaration give it."""
    if hasattr(args, name):
        return getattr(args, name)
    setting = SETTINGS[name]
    raw = os.environ.get(setting.env)
    if raw is None:
        return setting.default
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise CommandError(f"{setting.env}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livesessions",
        description="A self-hosted, wire-compatible Huddle01 Live Sessions API.",
    )
    parser.add_argument("--version", action="version", version=f"livesessions {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the service",
        description="Run the HTTP and WebSocket service. Every setting is also read from the environment "
        "variable named in its help; a flag given here wins.",
    )
    for setting in SETTINGS.values():
        _add_setting(serve, setting)
    serve.set_defaults(run=run_serve)

    keys = commands.add_parser(
        "keys",
        help="manage API keys",
        description="Manage API keys offline, on the data directory of a server (which may be running), "
        "or on the PostgreSQL database of scaled-out nodes (--database-url).",
    )
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
    create.set_defaults(run=create_key)
    listing = key_commands.add_parser(
        "list",
        help="list the API keys that work",
        description="List every working API key (masked), or one wallet's, with its project.",
    )
    listing.add_argument("--wallet", help="only this wallet's keys")
    listing.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    listing.set_defaults(run=list_keys)
    revoke = key_commands.add_parser(
        "revoke",
        help="revoke an API key by its id",
        description="Revoke an API key (and every peer token "
        "it issued). A running server on the same data directory stops accepting it within its heartbeat "
        "interval.",
    )
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id, as `keys list` shows it (key_…)")
    revoke.set_defaults(run=revoke_key)
    for command in (create, listing, revoke):
        _add_setting(command, SETTINGS["data_dir"])
        _add_setting(command, SETTINGS["database_url"])

    domains = commands.add_parser(
        "domains",
        help="manage projects' whitelisted domains",
        description="Show or set the browser origins a project's peers may join from (while a project's list is "
        "not empty, a WebSocket join whose Origin names another host is closed with 4003), on the data directory "
        "of a server (which may be running) or on the PostgreSQL database of scaled-out nodes (--database-url). "
        "A running server applies a change within 5 seconds.",
    )
    domain_commands = domains.add_subparsers(dest="domains_command", metavar="COMMAND", required=True)
    domains_list = domain_commands.add_parser(
        "list",
        help="list the projects that have whitelisted domains",
        description="List every project whose list is not empty, or one wallet's project (whatever its list).",
    )
    domains_list.add_argument("--wallet", help="only this wallet's project")
    domains_list.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    domains_list.set_defaults(run=list_domains)
    domains_set = domain_commands.add_parser(
        "set",
        help="replace a wallet's project's whitelisted domains",
        description="Replace the whitelisted domains of the project owned by a wallet address (made if it has "
        "none yet). Each DOMAIN is a host, optionally with a port: app.example.com, localhost:3000, [::1]:8080 "
        "(no scheme, no path, no wildcard; an entry without a port admits its host on any port). "
        "No DOMAIN clears the list: every origin may join again.",
    )
    domains_set.add_argument("--wallet", required=True, help="the wallet address that owns the project (0x…)")
    domains_set.add_argument("domains", nargs="*", metavar="DOMAIN", help="an allowed host[:port]")
    domains_set.add_argument("--json", action="store_true", help="print a JSON object")
    domains_set.set_defaults(run=set_domains)
    for command in (domains_list, domains_set):
        _add_setting(command, SETTINGS["data_dir"])
        _add_setting(command, SETTINGS["database_url"])

    where = commands.add_parser(
        "data-dir",
        help="show the data directory in use and what it holds",
        description="Show which data directory the settings name (absolute) and what it holds; creates nothing.",
    )
    _add_setting(where, SETTINGS["data_dir"])
    where.add_argument("--json", action="store_true", help="print a JSON object")
    where.set_defaults(run=show_data_dir)

    reference = commands.add_parser(
        "openapi",
        help="print the API's OpenAPI 3.1 document",
        description="Print the OpenAPI 3.1 document the service serves at /openapi.json (docs/openapi.json "
        "in the repository is this output).",
    )
    reference.set_defaults(run=print_openapi)

    login = commands.add_parser(
        "login",
        help="sign in with a wallet key and print an API key",
        description="Sign in to a running service with a wallet's private key (Sign-In with Ethereum) "
        "and print an API key for the wallet's project: its first key on a first sign-in, "
        "otherwise a new one. The private key is read from --key-file or the "
        "LIVESESSIONS_WALLET_KEY environment variable, never from the command line.",
    )
    login.add_argument("--url", default="http://127.0.0.1:8080", help="the service (default: http://127.0.0.1:8080)")
    login.add_argument(
        "--public-url",
        help="the service's public URL, which the signed message must name, when it is not --url "
        "(a server behind a proxy, started with --public-url)",
    )
    login.add_argument("--key-file", type=Path, help="a file holding the wallet's hex private key")
    login.add_argument("--chain-id", type=int, default=1, help="the chain id to sign for (default: 1)")
    login.add_argument("--name", default="login", help="name of the key created when one is needed (default: login)")
    login.add_argument("--json", action="store_true", help="print a JSON object instead of the bare key")
    login.set_defaults(run=run_login)
    return parser


# --- serve ------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    from livesessions.data_dir import DataDirInUse, lock_data_dir
    from livesessions.services import build_services

    settings = Settings(**{name: _value(args, name) for name in SETTINGS})
    try:
        settings.check_mode()
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    configure_logs(settings.log_level, "json" if settings.log_format == "json" else "text", settings.access_log)
    if settings.scaled_out:
        # Many nodes may share a data directory (recordings): no lock on it,
        # and the services are made on the server's own event loop.
        return _serve_scaled_out(settings)
    try:
        lock = lock_data_dir(settings.data_dir)
    except DataDirInUse as exc:
        raise CommandError(str(exc)) from None
    try:
        services = build_services(settings)
    except ValueError as exc:  # a setting that cannot be used (a key file, say)
        lock.close()
        raise CommandError(str(exc)) from None
    server = _server(settings, services)
    _announce(settings)
    try:
        server.run()
    finally:
        lock.close()
    return 0 if server.started else 1


def _serve_scaled_out(settings: Settings) -> int:
    from uvicorn._compat import asyncio_run

    from livesessions.cluster.services import build_scaled_out_services

    server = None

    async def serve() -> None:
        nonlocal server
        try:
            services = await build_scaled_out_services(settings)
        except (ConnectionError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        server = _server(settings, services)
        _announce(settings)
        await server.serve()

    probe = _server_config(settings, None)
    asyncio_run(serve(), loop_factory=probe.get_loop_factory())
    return 0 if server is not None and server.started else 1


def _server_config(settings: Settings, app: Any) -> Any:
    import uvicorn

    from livesessions.http.protocols import protocol_classes, raise_open_files_limit

    telemetry = getattr(app, "services", None)
    disconnects = telemetry.telemetry.disconnects if telemetry is not None else None
    # Bounded request heads, read timeouts, a cap on connections per client,
    # and clients that stop reading cut off (counted as peer disconnects):
    # livesessions.http.protocols.
    http_protocol, ws_protocol = protocol_classes(
        settings, lambda reason: disconnects.labels(reason).inc() if disconnects is not None else None
    )
    raise_open_files_limit()
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=http_protocol,
        ws=ws_protocol,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        ws_per_message_deflate=settings.ws_compression,
        ws_max_size=settings.max_ws_frame_bytes,
        # Logging is set up above (livesessions.logs), for uvicorn's loggers too.
        log_config=None,
        access_log=settings.access_log,
        lifespan="on",
        # Forwarded headers are believed only from the proxies named.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
        timeout_graceful_shutdown=5,
    )


def _server(settings: Settings, services: Any) -> Any:
    import uvicorn

    from livesessions.app import create_app
    from livesessions.loop_health import tune_garbage_collector

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            # What start-up made lives as long as the process (see loop_health).
            tune_garbage_collector()

        async def shutdown(self, sockets: Any = None) -> None:
            # Live event streams never end on their own: ended first, so that
            # the graceful shutdown does not wait its whole timeout for them.
            services.project_events.close()
            await super().shutdown(sockets)

    return Server(_server_config(settings, create_app(services)))


def _announce(settings: Settings) -> None:
    """The start-up banner: what runs, where its data is, how to begin."""
    import logging

    from livesessions.logs import context

    data_dir = settings.data_dir.resolve()
    url = settings.base_url
    listen = f"http://{settings.host}:{settings.port}"
    if settings.scaled_out:
        from livesessions.cluster.services import where

        assert settings.database_url is not None and settings.redis_url is not None
        backend = f"scale-out: PostgreSQL {where(settings.database_url)}, Redis {where(settings.redis_url)}"
        data = f"{where(settings.database_url)} (PostgreSQL), live state in {where(settings.redis_url)} (Redis)"
        key_hint = "--database-url …"
    else:
        backend, data, key_hint = "sqlite", f"{data_dir} (SQLite, embedded)", f"--data-dir {data_dir}"
    if settings.log_format == "json":
        logging.getLogger("livesessions").info(
            "livesessions started",
            extra=context(
                version=__version__,
                data_dir=str(data_dir),
                backend=backend,
                listen=listen,
                public_url=url,
                docs=f"{url}/docs",
            ),
        )
        return
    lines = [
        f"livesessions {__version__}",
        f"  listening on   {listen}" + (f" (public URL {url})" if url != listen else ""),
        f"  data           {data}",
        f"  API reference  {url}/docs",
        f"  metrics        {url}/metrics",
        f"  first API key  open {url}/ and connect a wallet, or run",
        f"                 livesessions keys create --wallet 0x… {key_hint}",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


# --- keys and the data directory -------------------------------------------


def _open_store(data_dir: Path) -> Any:
    """The data directory's store, saying on stderr which directory it is
    (and warning when it did not exist: a key made there reaches no server)."""
    from livesessions.services import open_store

    existed = (data_dir / Settings(data_dir=data_dir).database_path.name).exists()
    print(f"livesessions: data directory {data_dir.resolve()}", file=sys.stderr)
    if not existed:
        print(
            f"livesessions: warning: {data_dir.resolve()} held no database and a new one was made there; "
            "if a server runs elsewhere, give its --data-dir (or LIVESESSIONS_DATA_DIR)",
            file=sys.stderr,
        )
    return open_store(Settings(data_dir=data_dir))


def _run_on_store(args: argparse.Namespace, work: Callable[[Any], Any]) -> Any:
    """Run `work` on the store the settings name: the scale-out database
    given by --database-url, else the data directory's."""
    database_url = _value(args, "database_url")
    if database_url is None:
        store = _open_store(_value(args, "data_dir"))
        try:
            return asyncio.run(work(store))
        finally:
            store.close()

    async def on_postgres() -> Any:
        from livesessions.cluster.services import open_postgres, where

        print(f"livesessions: database {where(database_url)}", file=sys.stderr)
        try:
            store = await open_postgres(database_url)
        except ConnectionError as exc:
            raise CommandError(str(exc)) from None
        try:
            return await work(store)
        finally:
            await store.aclose()

    return asyncio.run(on_postgres())


def create_key(args: argparse.Namespace) -> int:
    if not WALLET_PATTERN.match(args.wallet):
        raise CommandError("--wallet must be 0x followed by 40 hexadecimal digits")
    if not args.name.strip() or len(args.name) > 100 or "\x00" in args.name:
        raise CommandError("--name must be 1 to 100 characters, none of them NUL")

    async def work(store: Any) -> tuple[str, str, str]:
        now = now_ms()
        project = await store.project_for_wallet(args.wallet, now)
        key, record = await ApiKeys(store, now_ms).create(project.project_id, args.name.strip(), now)
        return key, record.id, project.project_id

    key, key_id, project_id = _run_on_store(args, work)
    if args.json:
        print(json.dumps({"apiKey": key, "id": key_id, "projectId": project_id, "wallet": args.wallet.lower()}))
    else:
        print(f"project {project_id} (wallet {args.wallet.lower()}); key {key_id}, shown only once:")
        print(key)
    return 0


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "never"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def list_keys(args: argparse.Namespace) -> int:
    if args.wallet is not None and not WALLET_PATTERN.match(args.wallet):
        raise CommandError("--wallet must be 0x followed by 40 hexadecimal digits")
    wallet = args.wallet.lower() if args.wallet else None

    async def work(store: Any) -> list[tuple[str, str, Any]]:
        return list(await store.all_api_keys(wallet))

    rows = _run_on_store(args, work)
    if args.json:
        for project_id, owner, key in rows:
            print(
                json.dumps(
                    {
                        "id": key.id,
                        "name": key.name,
                        "maskedKey": key.masked_key,
                        "projectId": project_id,
                        "wallet": owner,
                        "createdAt": key.created_at,
                        "lastUsedAt": key.last_used_at,
                    },
                    ensure_ascii=False,
                )
            )
        return 0
    if not rows:
        print("no API keys" + (f" for {wallet}" if wallet else ""))
        return 0
    table = [("ID", "NAME", "KEY", "WALLET", "CREATED", "LAST USED")]
    table += [(k.id, k.name, k.masked_key, owner, _when(k.created_at), _when(k.last_used_at)) for _, owner, k in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def revoke_key(args: argparse.Namespace) -> int:
    async def work(store: Any) -> bool:
        project_id = await store.api_key_project(args.key_id)
        return project_id is not None and await ApiKeys(store, now_ms).revoke(project_id, args.key_id)

    if not _run_on_store(args, work):
        raise CommandError(f"no working API key with id {args.key_id!r} here (see `livesessions keys list`)")
    print(f"revoked {args.key_id}; it and the peer tokens it issued stop working")
    return 0


def list_domains(args: argparse.Namespace) -> int:
    if args.wallet is not None and not WALLET_PATTERN.match(args.wallet):
        raise CommandError("--wallet must be 0x followed by 40 hexadecimal digits")
    wallet = args.wallet.lower() if args.wallet else None

    async def work(store: Any) -> list[tuple[str, str, list[str]]]:
        return list(await store.all_whitelisted_domains(wallet))

    rows = _run_on_store(args, work)
    if args.json:
        for project_id, owner, listed in rows:
            print(json.dumps({"projectId": project_id, "wallet": owner, "whitelistedDomains": listed}))
        return 0
    if not rows:
        print(f"no project for {wallet}" if wallet else "no project has whitelisted domains: any origin may join")
        return 0
    table = [("PROJECT", "WALLET", "DOMAINS")]
    table += [(project_id, owner, " ".join(listed) or "(none: any origin)") for project_id, owner, listed in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def set_domains(args: argparse.Namespace) -> int:
    from livesessions.auth.origins import BadDomains, normalise_domains

    if not WALLET_PATTERN.match(args.wallet):
        raise CommandError("--wallet must be 0x followed by 40 hexadecimal digits")
    try:
        domains = normalise_domains(args.domains)
    except BadDomains as exc:
        raise CommandError(
            "; ".join(why if index is None else f"{args.domains[index]!r}: {why}" for index, why in exc.problems)
        ) from None

    async def work(store: Any) -> str:
        project = await store.project_for_wallet(args.wallet, now_ms())
        await store.set_whitelisted_domains(project.project_id, domains)
        return str(project.project_id)

    project_id = _run_on_store(args, work)
    wallet = args.wallet.lower()
    if args.json:
        print(json.dumps({"projectId": project_id, "wallet": wallet, "whitelistedDomains": domains}))
    elif domains:
        print(f"project {project_id} (wallet {wallet}): peers may join from {' '.join(domains)} only")
    else:
        print(f"project {project_id} (wallet {wallet}): no whitelisted domains; any origin may join")
    return 0


def show_data_dir(args: argparse.Namespace) -> int:
    import sqlite3

    from livesessions.data_dir import holder_of

    settings = Settings(data_dir=_value(args, "data_dir"))
    path = settings.data_dir.resolve()
    info: dict[str, Any] = {"dataDir": str(path), "exists": path.is_dir(), "database": None}
    database = settings.database_path
    if database.exists():
        # Read-only: looking must not create or change anything.
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            counts = {
                table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("projects", "api_keys", "rooms", "sessions")
            }
        info["database"] = {"path": str(database.resolve()), "schemaVersion": version, **counts}
    info["server"] = holder_of(path)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"data directory  {path}" + ("" if info["exists"] else "  (does not exist)"))
    if info["database"] is None:
        print("database        none yet (made on first start)")
    else:
        db = info["database"]
        print(f"database        {db['path']} (schema version {db['schemaVersion']})")
        print(
            f"holds           {db['projects']} projects, {db['api_keys']} API keys, {db['rooms']} rooms, "
            f"{db['sessions']} sessions"
        )
    print(f"server          {'running, pid ' + info['server'] if info['server'] else 'not running'}")
    return 0


def print_openapi(args: argparse.Namespace) -> int:
    from livesessions.http.openapi import main as print_document

    print_document()
    return 0


# --- login --------------------------------------------------------------------


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
        answer = login(args.url, private_key, args.chain_id, args.name, args.public_url)
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
    if args.command != "serve":
        configure_logs("warning")
    try:
        code: int = args.run(args)
        return code
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
