"""What a client address is counted by: IPv4 by the address, IPv6 by its /64."""

from __future__ import annotations

import pytest

from livesessions.auth.rate_limits import client_key
from livesessions.http.protocols import ClientLimiter


def test_ipv4_is_keyed_by_the_address() -> None:
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("203.0.113.7") != client_key("203.0.113.8")


@pytest.mark.parametrize(
    "address",
    [
        "2001:db8:1:2::1",
        "2001:db8:1:2:ffff:ffff:ffff:ffff",
        "2001:0db8:0001:0002:0000:0000:0000:0abc",
        "2001:DB8:1:2::",
    ],
)
def test_ipv6_is_keyed_by_its_64(address: str) -> None:
    assert client_key(address) == "2001:db8:1:2::/64"


def test_neighbouring_ipv6_networks_are_apart() -> None:
    assert client_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::1") == "::/64"


def test_ipv4_mapped_ipv6_is_the_ipv4_address() -> None:
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("::ffff:203.0.113.7") != client_key("::ffff:203.0.113.8")


def test_zone_is_ignored() -> None:
    assert client_key("fe80::1%eth0") == client_key("fe80::2") == "fe80::/64"


def test_what_is_not_an_address_is_kept() -> None:
    assert client_key("testclient") == "testclient"
    assert client_key("") == ""


def test_connection_cap_counts_an_ipv6_64_together() -> None:
    limiter = ClientLimiter(2)
    a, b, c, d = object(), object(), object(), object()
    assert limiter.acquire(a, "2001:db8:1:2::1")
    assert limiter.acquire(b, "2001:db8:1:2::2")
    # A third address in the same /64 is the same client; another /64 is not.
    assert not limiter.acquire(c, "2001:db8:1:2:abcd::9")
    assert limiter.acquire(d, "2001:db8:1:3::1")
    limiter.release(a)
    limiter.release(a)  # a second release is a no-op
    assert limiter.acquire(c, "2001:db8:1:2:abcd::9")
    assert not limiter.acquire(object(), "2001:db8:1:2::3")
