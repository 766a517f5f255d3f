"""Which URLs a webhook may call.

A webhook URL is chosen by whoever holds an API key, and the service calls
it from inside the operator's network: without a check it would let a key
holder reach loopback services, a cloud metadata endpoint or the LAN. So the
host is resolved and every address it resolves to must be public, at
registration and again before each delivery (DNS may change in between);
the delivery then connects to the very address that was checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(ValueError):
    """The URL may not be called; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    # the path and query, as sent on the request line
    path: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse(url: str) -> Target:
    """The URL's parts, or TargetRefused for anything but a plain http(s) URL."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise TargetRefused("url holds spaces or control characters")
    if not url.isascii():
        raise TargetRefused("url must be ASCII: percent-encode its path, write its host in punycode (xn--…)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("url must start with http:// or https://")
    if not parts.hostname:
        raise TargetRefused("url has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("url must not hold a user name or password")
    if parts.fragment:
        raise TargetRefused("url must not hold a #fragment")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port if port is not None else (443 if parts.scheme == "https" else 80),
        path=path,
    )


# IPv6 prefixes that carry an IPv4 address a gateway may reach: NAT64 (the
# well-known prefix; the local-use one is refused outright), and the deprecated
# IPv4-compatible form.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def is_forbidden(address: IPAddress) -> bool:
    """Loopback, private, link-local, site-local, multicast, unspecified or
    otherwise not globally reachable. An IPv6 address that embeds an IPv4 one
    (mapped, NAT64, 6to4, Teredo) is judged by that IPv4 address too."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64 or address in _IPV4_COMPATIBLE or address.is_site_local:
            return True
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(inner is not None and is_forbidden(inner) for inner in embedded):
            return True
        if address.ipv4_mapped is not None:
            return False  # judged by its IPv4 address alone
    return not address.is_global or address.is_multicast or address.is_unspecified


async def resolve(target: Target, allow_private: bool) -> list[IPAddress]:
    """The addresses to connect to; TargetRefused if the host does not resolve
    or (unless `allow_private`) any of its addresses is not public."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError) as exc:
            raise TargetRefused(f"url host {target.host!r} does not resolve: {exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise TargetRefused(f"url host {target.host!r} does not resolve")
    if not allow_private:
        refused = [a for a in addresses if is_forbidden(a)]
        if refused:
            raise TargetRefused(
                f"url host {target.host!r} resolves to {refused[0]}, a loopback, private, link-local or multicast "
                "address (the server must run with --allow-private-webhook-urls to call such addresses)"
            )
    return addresses
