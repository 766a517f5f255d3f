"""Service settings: one frozen object built by the command line or by tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: Path("livesessions-data"))
    # Where the built-in recorder writes its files; None: <data_dir>/recordings.
    recordings_path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    # A room whose last peer left may be rejoined within this many seconds and
    # keep its session (same sessionId and startTime).
    grace_period: float = 10.0
    # WebSocket keep-alive: a peer that does not answer a ping within
    # ping_timeout is dropped, so a silent peer is gone within their sum.
    ping_interval: float = 10.0
    ping_timeout: float = 10.0
    # How often live sessions record "still alive" so that a crash can be
    # closed at a time no older than this.
    heartbeat_interval: float = 15.0
    # A media worker that claimed a job and then says nothing for this long
    # loses the claim; the job goes back to the queue.
    worker_lease: float = 30.0
    # How long a recording's download link works.
    download_link_ttl: float = 3600.0
    # The address clients reach this service at: what wallet sign-in
    # messages must name, and the base of the links it hands out (playback
    # and download URLs). Never taken from request headers, which a client
    # chooses. Unset: http://<host>:<port> as listened on.
    public_url: str | None = None
    # Addresses of reverse proxies whose X-Forwarded-For / -Proto headers are
    # believed (to learn a client's address); nobody else's are.
    trusted_proxies: tuple[str, ...] = ()
    # Requests per second each API key may make on average, in bursts of up
    # to rate_burst; 0 turns the limit off.
    rate_limit: float = 100.0
    rate_burst: float = 200.0
    # Sign-in attempts (nonces and verifications) per minute, per wallet
    # address and per client address.
    sign_ins_per_minute: float = 20.0
    # What signed sign-in messages must name; None: from public_url.
    siwe_domain: str | None = None
    siwe_uri: str | None = None
    # Requests with a wrong API key or account token, per minute and per
    # client address, before that address is answered 429.
    failed_auths_per_minute: float = 60.0
    chain_ids: frozenset[int] = frozenset({1})
    max_body_bytes: int = 64 * 1024
    max_ws_frame_bytes: int = 64 * 1024
    # Messages a peer may send a second on average over its WebSocket, in
    # bursts of up to peer_message_burst. Past that its messages are dropped
    # (it is told once); a peer that keeps going is disconnected.
    peer_message_rate: float = 50.0
    peer_message_burst: float = 200.0
    # The request line plus headers may not be longer than this (431/414).
    max_header_bytes: int = 16 * 1024
    # A client gets this long to send a request's headers in full, and may
    # not fall silent for longer while sending a body.
    read_timeout: float = 10.0
    # Open connections (HTTP and WebSocket) from one client address.
    max_connections_per_client: int = 256

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
    def database_path(self) -> Path:
        return self.data_dir / "livesessions.sqlite3"

    @property
    def signing_key_path(self) -> Path:
        return self.data_dir / "peer-token-key.pem"

    @property
    def link_secret_path(self) -> Path:
        return self.data_dir / "link-signing.key"

    @property
    def recordings_dir(self) -> Path:
        return self.recordings_path or self.data_dir / "recordings"
