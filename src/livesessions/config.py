"""Service settings, declared once.

Each field of `Settings` is a setting: its default, its help text and how to
read it from text live in the field's declaration, and from that the command
line makes a flag (`grace_period` → `--grace-period`) and an environment
variable (`LIVESESSIONS_GRACE_PERIOD`) for it. A flag beats the environment,
which beats the default. Tests build `Settings(...)` directly.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "LIVESESSIONS_"


# --- how settings are read from text (a flag's or a variable's value) ------


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise ValueError(f"must be greater than 0: {text!r}")
    return value


def non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise ValueError(f"must be 0 or more: {text!r}")
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None


def positive_int(text: str) -> int:
    value = _whole(text)
    if value <= 0:
        raise ValueError(f"must be greater than 0: {text!r}")
    return value


def count(text: str) -> int:
    value = _whole(text)
    if value < 0:
        raise ValueError(f"must be 0 or more: {text!r}")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise ValueError(f"not a port number: {text!r}")
    return value


def chain_ids(text: str) -> frozenset[int]:
    try:
        ids = frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"not a comma-separated list of numbers: {text!r}") from None
    if not ids or min(ids) < 1:
        raise ValueError("chain ids are positive numbers")
    return ids


def public_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"must be an http(s) URL such as https://live.example.com: {text!r}")
    return text.rstrip("/")


def address_list(text: str) -> tuple[str, ...]:
    addresses = tuple(part.strip() for part in text.split(",") if part.strip())
    for address in addresses:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ValueError(f"not an IP address or network: {address!r}") from None
    return addresses


def choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"one of {', '.join(options)}, not {text!r}")
        return text

    parse.__name__ = "choice"
    return parse


def flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")


def database_url(text: str) -> str:
    if urlsplit(text).scheme not in ("postgres", "postgresql"):
        raise ValueError(f"not a postgresql:// URL: {text!r}")
    return text


def redis_url(text: str) -> str:
    if urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"not a redis://, rediss:// or unix:// URL: {text!r}")
    return text


def setting(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = str,
    metavar: str | None = None,
    name: str | None = None,
) -> Any:
    """Declare a setting: `help` may use %(default)s."""
    return field(default=default, metadata={"help": help, "parse": parse, "metavar": metavar, "name": name})


@dataclass(frozen=True, slots=True)
class Setting:
    """A setting as the command line sees it."""

    attr: str
    flag: str
    env: str
    default: Any
    help: str
    parse: Callable[[str], Any]
    metavar: str | None


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = setting(
        Path("livesessions-data"),
        "where the SQLite database, the token signing key and recordings live (created on first start)",
        Path,
        "DIR",
    )
    recordings_path: Path | None = setting(
        None,
        "where the built-in recorder writes its files, e.g. on a volume of their own (default: DATA_DIR/recordings)",
        Path,
        "DIR",
        name="recordings-dir",
    )
    database_url: str | None = setting(
        None,
        "scale-out mode: the PostgreSQL database every node keeps durable state in, postgresql://… "
        "(give --redis-url too; default: none, the embedded SQLite store in DATA_DIR)",
        database_url,
        "URL",
    )
    redis_url: str | None = setting(
        None,
        "scale-out mode: the Redis that holds who is live and carries room events between nodes, "
        "redis://… (give --database-url too; default: none, presence in this process)",
        redis_url,
        "URL",
    )
    node_lease: float = setting(
        5.0,
        "scale-out mode: a node that has not renewed its lease in Redis for this long is taken for dead "
        "and its peers are removed by the other nodes (it renews it every fifth of this)",
        positive,
        "SECONDS",
    )
    host: str = setting("127.0.0.1", "address to listen on", metavar="ADDRESS")
    port: int = setting(8080, "port to listen on", port, "PORT")
    public_url: str | None = setting(
        None,
        "the address clients reach the service at: what wallet sign-in messages must name, and the base "
        "of the links it hands out; set it behind a proxy (default: http://HOST:PORT as listened on; never "
        "taken from request headers)",
        public_url,
        "URL",
    )
    trusted_proxies: tuple[str, ...] = setting(
        (),
        "comma-separated addresses or networks of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto headers are believed (default: none)",
        address_list,
        "ADDRESSES",
    )
    grace_period: float = setting(
        10.0,
        "a room whose last peer left keeps its session (same sessionId and startTime) if someone rejoins "
        "within this many seconds",
        positive,
        "SECONDS",
    )
    ping_interval: float = setting(10.0, "how often peers are pinged", positive, "SECONDS")
    ws_compression: bool = setting(
        False,
        "negotiate permessage-deflate with peers that offer it (off by default: it costs ~45 KiB of memory a "
        "peer and compresses every message once per receiver; the messages are small)",
        flag,
        "yes|no",
    )
    ping_timeout: float = setting(
        10.0,
        "a peer that does not answer a ping within this time is removed (so a silent or unreadable "
        "peer is gone within the interval plus this)",
        positive,
        "SECONDS",
    )
    heartbeat_interval: float = setting(
        15.0,
        "how often live sessions are marked alive in history (after a crash they are closed no earlier "
        "than this), and keys revoked by another process on the same database are picked up",
        positive,
        "SECONDS",
    )
    worker_lease: float = setting(
        30.0, "a media worker silent for this long loses its claimed job to the queue", positive, "SECONDS"
    )
    download_link_ttl: float = setting(3600.0, "how long a recording's download link works", positive, "SECONDS")
    rate_limit: float = setting(
        100.0, "requests a second each API key may make on average; 0 turns the limit off", non_negative, "PER_SECOND"
    )
    rate_burst: float = setting(
        200.0, "how many requests an API key may make at once above its rate", positive, "REQUESTS"
    )
    sign_ins_per_minute: float = setting(
        20.0, "wallet sign-in attempts allowed per minute, per wallet and per client address", positive, "N"
    )
    failed_auths_per_minute: float = setting(
        60.0,
        "requests with a wrong API key or account token allowed per minute from one client address, then 429",
        positive,
        "N",
    )
    siwe_domain: str | None = setting(
        None, "the domain sign-in messages must name (default: the host and port of the public URL)", metavar="HOST"
    )
    siwe_uri: str | None = setting(None, "the URI sign-in messages must name (default: the public URL)", metavar="URL")
    chain_ids: frozenset[int] = setting(
        frozenset({1}), "comma-separated chain ids sign-in messages may name (default: 1)", chain_ids, "IDS"
    )
    max_body_bytes: int = setting(64 * 1024, "largest request body accepted (413 past it)", positive_int, "BYTES")
    max_ws_frame_bytes: int = setting(
        64 * 1024, "largest WebSocket message accepted from a peer (closed with 1009 past it)", positive_int, "BYTES"
    )
    peer_message_rate: float = setting(
        50.0, "messages a second each peer may send over its WebSocket on average", positive, "PER_SECOND"
    )
    peer_message_burst: float = setting(
        200.0,
        "how many messages a peer may send at once above its rate; past that they are dropped, and a "
        "peer that keeps sending is disconnected with code 4008",
        positive,
        "MESSAGES",
    )
    max_header_bytes: int = setting(
        16 * 1024, "longest request line plus headers accepted; longer ones get 414 or 431", positive_int, "BYTES"
    )
    read_timeout: float = setting(
        10.0,
        "a client must send a request's headers within this time, and may not pause longer while sending a body",
        positive,
        "SECONDS",
    )
    max_connections_per_client: int = setting(
        256, "open connections allowed from one client address (trusted proxies are exempt); 0: no cap", count, "N"
    )
    webhook_retry_for: float = setting(
        86400.0,
        "a webhook event its endpoint keeps refusing is retried (2 s after the first failure, then doubling, at "
        "most 5 minutes apart) for this long after it happened, then given up",
        positive,
        "SECONDS",
    )
    allow_private_webhook_urls: bool = setting(
        False,
        "let webhooks target loopback, private, link-local and multicast addresses (off: such URLs are refused "
        "when registered and again when delivering, after DNS resolution)",
        flag,
        "yes|no",
    )
    webhook_sealing_key_file: Path | None = setting(
        None,
        "a file of 32 random bytes that encrypts the API keys kept for signing webhook deliveries (default: made "
        "in DATA_DIR, or scaled out kept in PostgreSQL beside what it encrypts; give every node the same file to "
        "keep it out of the database)",
        Path,
        "FILE",
    )
    event_stream_buffer: int = setting(
        1000,
        "events a live event stream client may fall behind by before it is sent `overflow` and disconnected",
        positive_int,
        "EVENTS",
    )
    loop_probe_interval: float = setting(
        0.1,
        "how often the event loop's lateness is sampled for the livesessions_event_loop_lag_seconds metric "
        "(0 turns it off)",
        non_negative,
        "SECONDS",
    )
    log_level: str = setting("info", "how much the service logs", choice("debug", "info", "warning", "error"), "LEVEL")
    log_format: str = setting("text", "text lines, or JSON lines for log shippers", choice("text", "json"), "FORMAT")
    access_log: bool = setting(False, "log every HTTP request (off by default: it costs throughput)", flag, "yes|no")

    @property
    def base_url(self) -> str:
        """Where clients reach this service (see public_url)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def scaled_out(self) -> bool:
        """Durable state in PostgreSQL and presence in Redis (both URLs given)."""
        return self.database_url is not None

    def check_mode(self) -> None:
        """Raise ValueError unless the URLs name one mode: both, or neither."""
        if (self.database_url is None) != (self.redis_url is None):
            given, missing = (
                ("--database-url", "--redis-url") if self.database_url else ("--redis-url", "--database-url")
            )
            raise ValueError(
                f"{given} without {missing}: scale-out mode needs both (PostgreSQL for durable state, "
                "Redis for presence); give neither for the embedded default"
            )

    @property
    def database_path(self) -> Path:
        return self.data_dir / "livesessions.sqlite3"

    @property
    def signing_key_path(self) -> Path:
        return self.data_dir / "peer-token-key.pem"

    @property
    def link_secret_path(self) -> Path:
        return self.data_dir / "link-signing.key"

    @property
    def webhook_sealing_key_path(self) -> Path:
        return self.data_dir / "webhook-sealing.key"

    @property
    def recordings_dir(self) -> Path:
        return self.recordings_path or self.data_dir / "recordings"


def declared() -> list[Setting]:
    """Every setting, with its flag and environment variable."""
    found = []
    for item in fields(Settings):
        flag_name = item.metadata["name"] or item.name.replace("_", "-")
        found.append(
            Setting(
                attr=item.name,
                flag="--" + flag_name,
                env=ENV_PREFIX + flag_name.replace("-", "_").upper(),
                default=item.default,
                help=item.metadata["help"],
                parse=item.metadata["parse"],
                metavar=item.metadata["metavar"],
            )
        )
    return found


def describe_default(value: Any) -> str:
    """A default as a person would type it."""
    if isinstance(value, (tuple, frozenset)):
        return ",".join(str(v) for v in sorted(value)) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
