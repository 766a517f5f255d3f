"""Whitelisted domains: the browser origins a project's peers may join from.

A project's list holds hosts, each with an optional port: `app.example.com`,
`localhost:3000`, `192.168.1.20`, `[::1]:8080`, kept in lower case. While the
list is not empty, a WebSocket join whose `Origin` header names a host outside
it is refused (close 4003); a join without `Origin` (a server or an app, not a
browser page) is not affected. Matching is exact and simple:

* an entry without a port admits its host on any port; an entry with a port
  admits only that port (an `Origin` without a port has its scheme's default:
  80 for http, 443 for https);
* no wildcards, and no implied subdomains: `example.com` does not admit
  `www.example.com`; list each host;
* an `Origin` that names no host (`null`, from a sandboxed frame or a file)
  is outside every non-empty list.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from livesessions.clock import Clock
from livesessions.domain.ports import Accounts

MAX_DOMAINS = 100
MAX_DOMAIN_CHARS = 253
# How long a join trusts the list it read (see WhitelistedDomains).
CACHE_TTL_MS = 5_000

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_PORT = re.compile(r"^:[0-9]{1,5}$")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class BadDomains(ValueError):
    """Entries of a list that are not hosts: (index in the list, why)."""

    def __init__(self, problems: list[tuple[int | None, str]]) -> None:
        super().__init__("; ".join(why if index is None else f"entry {index}: {why}" for index, why in problems))
        self.problems = problems


def normalise_domain(text: str) -> str:
    """One entry in its stored form (lower case, `host` or `host:port`); a
    ValueError saying what is wrong with it otherwise."""
    value = text.strip().lower()
    if not value:
        raise ValueError("empty: give a host such as app.example.com")
    if len(value) > MAX_DOMAIN_CHARS:
        raise ValueError(f"longer than {MAX_DOMAIN_CHARS} characters")
    if "://" in value:
        raise ValueError("give the host without a scheme: app.example.com, not https://app.example.com")
    if any(char in value for char in "/?#"):
        raise ValueError("give the host without a path: app.example.com, not app.example.com/page")
    if "*" in value:
        raise ValueError("wildcards are not supported: list each host")
    host, port = _host_and_port(value)
    return host if port is None else f"{host}:{port}"


def normalise_domains(values: Sequence[str]) -> list[str]:
    """A whole list in its stored form: each entry normalised, repeats dropped
    (first one kept), at most MAX_DOMAINS. BadDomains names every bad entry."""
    problems: list[tuple[int | None, str]] = []
    if len(values) > MAX_DOMAINS:
        problems.append((None, f"at most {MAX_DOMAINS} domains"))
    domains: dict[str, None] = {}
    for index, value in enumerate(values):
        try:
            domains[normalise_domain(value)] = None
        except ValueError as exc:
            problems.append((index, str(exc)))
    if problems:
        raise BadDomains(problems)
    return list(domains)


def _host_and_port(value: str) -> tuple[str, int | None]:
    if value.startswith("["):
        end = value.find("]")
        try:
            host = f"[{ipaddress.IPv6Address(value[1:end]).compressed}]" if end > 0 else ""
        except ValueError:
            host = ""
        if not host:
            raise ValueError("not an IPv6 address in brackets, such as [::1]")
        rest = value[end + 1 :]
    else:
        host, colon, port_text = value.partition(":")
        if ":" in port_text:
            raise ValueError("an IPv6 address goes in brackets: [::1] or [::1]:3000")
        if not _HOST_NAME.match(host) or not host.isascii():
            raise ValueError(
                "not a host name: letters, digits and hyphens in dot-separated labels "
                "(an international name in its xn-- form), optionally :port"
            )
        rest = colon + port_text
    if not rest:
        return host, None
    port = int(rest[1:]) if _PORT.match(rest) else 0
    if not 1 <= port <= 65535:
        raise ValueError("a port is :1 to :65535 after the host, such as localhost:3000")
    return host, port


def origin_host(origin: str) -> tuple[str, int | None] | None:
    """(host, port) of an `Origin` header in the form entries are kept in;
    None if it names no host."""
    try:
        parts = urlsplit(origin.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    host = host.removesuffix(".")
    if ":" in host:
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            return None
    return host, port if port is not None else _DEFAULT_PORTS.get(parts.scheme.lower())


def origin_header(scope: Mapping[str, Any]) -> str | None:
    """The `Origin` header of an ASGI request (a browser sends one with every
    WebSocket), or None without one."""
    for name, value in scope.get("headers") or ():
        if name == b"origin":
            return bytes(value).decode("latin-1")
    return None


@dataclass(frozen=True, slots=True)
class _Policy:
    """A list, made ready for checking an `Origin` against."""

    any_port: frozenset[str]
    with_port: frozenset[str]

    @classmethod
    def of(cls, domains: Iterable[str]) -> _Policy:
        listed = list(domains)
        return cls(frozenset(d for d in listed if not _has_port(d)), frozenset(d for d in listed if _has_port(d)))

    def admits(self, origin: str | None) -> bool:
        if origin is None or not (self.any_port or self.with_port):
            return True
        found = origin_host(origin)
        if found is None:
            return False
        host, port = found
        return host in self.any_port or (port is not None and f"{host}:{port}" in self.with_port)


def _has_port(domain: str) -> bool:
    return not domain.endswith("]") and ":" in domain


def admits(domains: Iterable[str], origin: str | None) -> bool:
    """Does a list admit a join with this `Origin` header (None: none sent)?"""
    return _Policy.of(domains).admits(origin)


class WhitelistedDomains:
    """The projects' lists, and the check of a joining peer's `Origin`.

    Joins read the list through a small per-project cache, each entry trusted
    for CACHE_TTL_MS, rather than from the database: joins come in bursts (a
    whole class at nine o'clock) and a list changes rarely, so a read per
    project every few seconds is enough, and concurrent joins share one read.
    A change through this object (the API on this node) takes effect at once;
    one made elsewhere (another node, the command line on the same database)
    within CACHE_TTL_MS, which no push between nodes would be worth. Joins
    without an `Origin` never look at the list."""

    def __init__(self, accounts: Accounts, clock: Clock, ttl_ms: int = CACHE_TTL_MS, max_cached: int = 10_000):
        self._accounts = accounts
        self._clock = clock
        self._ttl_ms = ttl_ms
        self._max_cached = max_cached
        self._cache: dict[str, tuple[int, asyncio.Task[_Policy]]] = {}

    async def get(self, project_id: str) -> list[str]:
        return await self._accounts.whitelisted_domains(project_id)

    async def set(self, project_id: str, domains: list[str]) -> list[str]:
        """Store a list already normalised (normalise_domains)."""
        await self._accounts.set_whitelisted_domains(project_id, domains)
        self._cache.pop(project_id, None)
        return domains

    async def admits(self, project_id: str, origin: str | None) -> bool:
        if origin is None:
            return True
        return (await self._policy(project_id)).admits(origin)

    async def _policy(self, project_id: str) -> _Policy:
        now = self._clock()
        cached = self._cache.get(project_id)
        if cached is None or cached[0] <= now:
            if len(self._cache) >= self._max_cached:
                self._prune(now)
            task = asyncio.create_task(self._read(project_id))
            cached = self._cache[project_id] = (now + self._ttl_ms, task)
            task.add_done_callback(lambda done: self._loaded(project_id, done))
        # Shielded: a join that gives up does not cancel the read others await.
        return await asyncio.shield(cached[1])

    async def _read(self, project_id: str) -> _Policy:
        return _Policy.of(await self._accounts.whitelisted_domains(project_id))

    def _loaded(self, project_id: str, task: asyncio.Task[_Policy]) -> None:
        # A failed read (the database out of reach) is not kept: the next join tries again.
        if task.cancelled() or task.exception() is not None:
            cached = self._cache.get(project_id)
            if cached is not None and cached[1] is task:
                del self._cache[project_id]

    def _prune(self, now: int) -> None:
        for project_id in [p for p, (expires, _) in self._cache.items() if expires <= now]:
            del self._cache[project_id]
        if len(self._cache) >= self._max_cached:
            self._cache.clear()
