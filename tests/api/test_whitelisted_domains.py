"""Whitelisted domains: Huddle01's `get-whitelisted-domains`, the owner's
routes that manage the list, and the `Origin` check on WebSocket joins (the
app in this process; the command line: e2e/test_operating.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from eth_account import Account

from livesessions.auth.origins import CACHE_TTL_MS
from livesessions.auth.siwe import SiweMessage, format_time
from support import LocalApp, LocalSocket, Project, sign

ACCOUNT_ROUTE = "/api/v2/project/whitelisted-domains"
SDK_ROUTE = "/api/v2/sdk/get-whitelisted-domains"


@dataclass
class Owner:
    """A wallet signed in: its project's API key, and a client with its account session."""

    project: Project
    project_id: str
    account: httpx.Client

    def put(self, domains: Any) -> httpx.Response:
        return self.account.put(ACCOUNT_ROUTE, json={"whitelistedDomains": domains})

    def stored(self) -> list[str]:
        response = self.account.get(ACCOUNT_ROUTE)
        assert response.status_code == 200, response.text
        return response.json()["whitelistedDomains"]


@pytest.fixture
def server(make_app: Callable[..., LocalApp]) -> LocalApp:
    return make_app(sign_ins_per_minute=10_000)


def sign_in(server: LocalApp) -> Owner:
    account = Account.create()
    nonce = server.http.get("/api/v2/auth/nonce").json()["nonce"]
    text = SiweMessage(
        domain=f"127.0.0.1:{server.port}",
        address=account.address,
        uri=server.base,
        chain_id=1,
        nonce=nonce,
        issued_at=format_time(int(time.time() * 1000)),
        statement="Sign in",
    ).text()
    response = server.http.post("/api/v2/auth/verify", json={"message": text, "signature": sign(text, account.key)})
    assert response.status_code == 200, response.text
    signed_in = response.json()
    client = server.client(headers={"authorization": f"Bearer {signed_in['token']}"})
    return Owner(Project(server, signed_in["apiKey"]), signed_in["projectId"], client)


@pytest.fixture
def owner(server: LocalApp) -> Owner:
    return sign_in(server)


def refusal(server: LocalApp, token: str, origin: str) -> tuple[int | None, str | None]:
    return LocalSocket(server, token, headers={"Origin": origin}).wait_closed()


def test_the_owner_sets_the_list_and_the_sdk_route_reads_it(owner: Owner) -> None:
    assert owner.stored() == []
    assert owner.project.get(SDK_ROUTE).json() == {"ok": True, "whitelistedDomains": []}

    response = owner.put(["App.Example.com", "localhost:3000", "app.example.com", " [0:0::1]:8080 ", "10.0.0.7"])
    assert response.status_code == 200, response.text
    stored = ["app.example.com", "localhost:3000", "[::1]:8080", "10.0.0.7"]  # lower case, once each, in order
    assert response.json() == {"whitelistedDomains": stored}
    assert owner.stored() == stored
    sdk = owner.project.get(SDK_ROUTE)
    assert sdk.status_code == 200 and sdk.json() == {"ok": True, "whitelistedDomains": stored}

    cleared = owner.put([])
    assert cleared.status_code == 200 and cleared.json() == {"whitelistedDomains": []}
    assert owner.project.get(SDK_ROUTE).json()["whitelistedDomains"] == []
    full = [f"host{n}.example.com" for n in range(100)]
    assert owner.put(full).json()["whitelistedDomains"] == full


@pytest.mark.parametrize(
    ("domains", "path", "says"),
    [
        (["https://app.example.com"], ["whitelistedDomains", 0], "without a scheme"),
        (["ok.example.com", "app.example.com/page"], ["whitelistedDomains", 1], "without a path"),
        (["*.example.com"], ["whitelistedDomains", 0], "wildcards"),
        (["localhost:0"], ["whitelistedDomains", 0], "port"),
        (["localhost:99999"], ["whitelistedDomains", 0], "port"),
        (["::1"], ["whitelistedDomains", 0], "brackets"),
        (["bad_host.example.com"], ["whitelistedDomains", 0], "not a host name"),
        (["münchen.example"], ["whitelistedDomains", 0], "xn--"),
        ([""], ["whitelistedDomains", 0], "empty"),
        (["a" * 254], ["whitelistedDomains", 0], "253"),
        ([f"h{n}.example.com" for n in range(101)], ["whitelistedDomains"], "100"),
        (["ok.example.com", 7], ["whitelistedDomains", 1], "Expected string"),
        ("app.example.com", ["whitelistedDomains"], "Expected array"),
        (None, ["whitelistedDomains"], "Expected array"),
    ],
)
def test_a_bad_list_is_a_400_naming_the_entry_and_changes_nothing(
    owner: Owner, domains: Any, path: list[Any], says: str
) -> None:
    assert owner.put(["kept.example.com"]).status_code == 200
    response = owner.put(domains)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False
    issue = body["error"]["issues"][0]
    assert issue["path"] == path and says in issue["message"], issue
    assert owner.stored() == ["kept.example.com"]


def test_every_bad_entry_is_named_and_bodies_that_are_not_lists_are_refused(owner: Owner) -> None:
    response = owner.put(["good.example.com", "http://a.example.com", "b.example.com:x"])
    assert [issue["path"] for issue in response.json()["error"]["issues"]] == [
        ["whitelistedDomains", 1],
        ["whitelistedDomains", 2],
    ]
    missing = owner.account.put(ACCOUNT_ROUTE, json={})
    assert missing.status_code == 400
    assert missing.json()["error"]["issues"][0]["path"] == ["whitelistedDomains"]
    broken = owner.account.put(ACCOUNT_ROUTE, content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["ok"] is False
    wrong_type = owner.account.put(ACCOUNT_ROUTE, content=b"{}", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415
    assert owner.stored() == []


def test_the_routes_need_their_own_credentials(server: LocalApp, owner: Owner) -> None:
    anonymous = server.http
    for response in (
        anonymous.get(ACCOUNT_ROUTE),
        anonymous.put(ACCOUNT_ROUTE, json={"whitelistedDomains": ["evil.example.com"]}),
        # an API key is not an account session, and the reverse
        owner.project.get(ACCOUNT_ROUTE),
        owner.project.http.put(ACCOUNT_ROUTE, json={"whitelistedDomains": ["evil.example.com"]}),
        anonymous.get(ACCOUNT_ROUTE, headers={"authorization": "Bearer lss_not-a-session"}),
    ):
        assert response.status_code == 401, response.text
        assert response.json()["ok"] is False
    assert anonymous.get(SDK_ROUTE).json() == {
        "ok": False,
        "message": "Incorrect or no API key provided",
        "validated": False,
    }
    assert owner.account.get(SDK_ROUTE).status_code == 401
    assert owner.stored() == []


def test_another_project_s_list_is_invisible_and_does_not_apply_to_it(server: LocalApp) -> None:
    mine, theirs = sign_in(server), sign_in(server)
    assert mine.put(["app.example.com"]).status_code == 200
    assert theirs.stored() == []
    assert theirs.project.get(SDK_ROUTE).json()["whitelistedDomains"] == []
    room = theirs.project.create_room()
    peer = theirs.project.join(room, headers={"Origin": "https://evil.example.com"})
    assert theirs.project.live_counts() == {room: 1}
    peer.close()
    assert mine.stored() == ["app.example.com"]


def test_joins_from_origins_outside_the_list_are_refused_with_4003(server: LocalApp, owner: Owner) -> None:
    project = owner.project
    room = project.create_room()
    assert owner.put(["app.example.com", "localhost:3000", "example.org:443"]).status_code == 200

    for origin in (
        "https://evil.example.com",
        "https://example.com",  # no implied parent or subdomains
        "https://www.app.example.com",
        "http://localhost:3001",  # the entry names a port: only that one
        "http://localhost",
        "http://example.org",  # port 80, not 443
        "null",  # a sandboxed frame or a file names no host
        "not an origin",
    ):
        assert refusal(server, project.token(room), origin) == (4003, "origin not allowed"), origin
    # Admins too: the list is about where the page comes from, not who the peer is.
    assert refusal(server, project.token(room, role="host"), "https://evil.example.com")[0] == 4003
    assert project.live() == []

    admitted = [
        project.join(room, headers={"Origin": origin})
        for origin in (
            "https://app.example.com",
            "http://APP.example.com:8080",  # an entry without a port: any port
            "http://localhost:3000",
            "https://example.org",
        )
    ]
    # A join without an Origin (a server, not a browser) is not affected.
    admitted.append(project.join(room))
    assert project.live_counts() == {room: len(admitted)}
    for peer in admitted:
        peer.close()

    metrics = server.http.get("/metrics").text
    assert 'livesessions_join_refusals_total{reason="origin-not-allowed"} 9.0' in metrics

    # Cleared: every origin may join again, at once on this node.
    assert owner.put([]).status_code == 200
    project.join(room, headers={"Origin": "https://evil.example.com"}).close()


def test_joins_read_the_list_through_a_short_cache(
    server: LocalApp, owner: Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Joins do not read the database each: the list is kept per project for a
    few seconds. A change through the API applies at once; one made around it
    (another node, the command line) within those seconds."""
    store = server.services.accounts
    reads: list[str] = []
    real_read = store.whitelisted_domains

    async def counted(project_id: str) -> list[str]:
        reads.append(project_id)
        return await real_read(project_id)

    monkeypatch.setattr(store, "whitelisted_domains", counted)
    project = owner.project
    room = project.create_room()
    assert owner.put(["app.example.com"]).status_code == 200
    peers = [project.join(room, headers={"Origin": "https://app.example.com"}) for _ in range(5)]
    assert refusal(server, project.token(room), "https://evil.example.com")[0] == 4003
    peers.append(project.join(room))  # no Origin: the list is not looked at
    assert len(reads) == 1

    # Changed through the API: the cached list is dropped at once.
    assert owner.put(["evil.example.com"]).status_code == 200
    peers.append(project.join(room, headers={"Origin": "https://evil.example.com"}))
    # Changed around this node (as `livesessions domains set` does): seen once the cache runs out.
    server.run(store.set_whitelisted_domains(owner.project_id, ["app.example.com"]))
    peers.append(project.join(room, headers={"Origin": "https://evil.example.com"}))
    server.clock.advance(CACHE_TTL_MS / 1000 + 0.1)
    assert refusal(server, project.token(room), "https://evil.example.com")[0] == 4003
    peers.append(project.join(room, headers={"Origin": "https://app.example.com"}))
    assert project.live_counts() == {room: len(peers)}
    for peer in peers:
        peer.close()
