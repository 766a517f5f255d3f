"""The dashboard at `/`, end to end in headless Chromium: a wallet signs in
(the provider of test_connect_page.py), and the live table follows peers that
join and leave over real WebSockets, without a reload; the chart, the rooms,
the recordings and the webhooks show what the service has. A screenshot is
kept: under the test's tmp_path, and in $LIVESESSIONS_TEST_ARTIFACTS when set."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from eth_account import Account
from test_connect_page import BROWSER_ARGS, CHROMIUM, wallet_page

from support import Peer, Project, Server

if TYPE_CHECKING:
    from playwright.sync_api import Page, Request

WAIT_MS = 15_000
HOOK_URL = "http://127.0.0.1:9/hook"  # nothing listens there: every delivery fails, which the page shows
# Whether the live table's row of a room shows this many peers ('' when it has no row).
PEERS_SHOWN = """([room, shown]) => {
  const cell = document.querySelector(`#live-rows tr[data-room-id="${room}"] td.peers`);
  return (cell ? cell.textContent : "") === shown;
}"""


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Webhooks to loopback are refused unless the service allows them.
    server = Server(tmp_path_factory.mktemp("dashboard") / "data", **{"allow-private-webhook-urls": "yes"}).start()
    yield server
    server.stop()


def wait_for_peers(page: Page, room: str, shown: str) -> None:
    page.wait_for_function(PEERS_SHOWN, arg=[room, shown], timeout=WAIT_MS)


def keep(screenshot: Path) -> None:
    """Copies the screenshot where CI collects test artifacts, if it does."""
    where = os.environ.get("LIVESESSIONS_TEST_ARTIFACTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(where) / screenshot.name)


def test_the_dashboard_follows_peers_live_and_shows_the_project(dashboard_server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Chromium is required here (LIVESESSIONS_REQUIRE_SERVICES or CI is set) but not installed"
    server = dashboard_server
    peers: list[Peer] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page, _ = wallet_page(browser, Account.create())
            requested: list[Request] = []
            page.on("request", lambda request: requested.append(request))  # (a bound builtin cannot be a handler)
            problems: list[str] = []
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))

            answer = page.goto(server.base + "/")
            assert answer is not None and answer.ok
            policy = answer.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "connect-src 'self'" in policy
            page.click("#connect")
            # A first sign-in shows the project's first key, here as on /connect.
            page.wait_for_selector("#new-key:not([hidden])", timeout=WAIT_MS)
            project = Project(server, page.inner_text("#key-value"))
            page.wait_for_selector("#dashboard:not([hidden])", timeout=WAIT_MS)
            page.wait_for_selector("#stream-state.up", timeout=WAIT_MS)  # the event stream is open
            assert page.is_visible("#live-empty")
            # Gone if the page reloads: checked at the end.
            page.evaluate("window.__sameDocument = true")

            hook = project.post("/api/v2/sdk/webhooks", json={"url": HOOK_URL, "name": "from the dashboard test"})
            assert hook.status_code == 201, hook.text
            room = project.create_room(metadata={"title": "<img src=x onerror=alert(1)> standup"})

            peers.append(project.join(room, metadata='{"displayName": "<b>Ada</b>"}'))
            wait_for_peers(page, room, "1")
            peers.append(project.join(room))
            wait_for_peers(page, room, "2")

            # The chart: an hour, a point a minute, the last one the live total.
            # Predicates as functions: the page's policy forbids the eval() Playwright polls a bare expression with.
            page.wait_for_function(
                "() => document.querySelector('#chart-line').points.numberOfItems === 61", timeout=WAIT_MS
            )
            page.wait_for_function(
                "() => document.querySelector('#chart-summary').textContent.startsWith('now 2,')", timeout=WAIT_MS
            )

            # A recording counts in the live row while it runs, and is listed, downloadable, once it ends.
            started = project.post(
                "/api/v1/recording/start", json={"roomId": room, "token": project.token(room), "type": "recording"}
            )
            assert started.status_code == 200, started.text
            page.wait_for_selector(f'#live-rows tr[data-room-id="{room}"] td.recordings:text-is("1")', timeout=WAIT_MS)
            assert project.post("/api/v1/recording/stop", json={"roomId": room}).status_code == 200
            download = page.wait_for_selector("#recording-rows a", timeout=WAIT_MS)
            assert download is not None
            link = download.get_attribute("href")
            assert link is not None and httpx.get(link, timeout=10).status_code == 200

            # The webhook, reloaded after the events it is sent, with its last delivery (a failed one).
            page.wait_for_function(
                "url => [...document.querySelectorAll('#webhook-rows td.url')].some(td => td.textContent === url)",
                arg=HOOK_URL,
                timeout=WAIT_MS,
            )
            page.wait_for_function(
                "() => (document.querySelector('#webhook-rows td.delivery')?.textContent ?? 'none yet') !== 'none yet'",
                timeout=WAIT_MS,
            )

            # The room, opened: its session and both peers in it, metadata shown as text.
            page.click(f'#room-list details[data-room-id="{room}"] summary', timeout=WAIT_MS)
            view = f'#room-list details[data-room-id="{room}"]'
            page.wait_for_function(
                f"() => document.querySelectorAll('{view} .sessions td.peer').length === 2", timeout=WAIT_MS
            )
            assert page.inner_text(f"{view} .title") == "<img src=x onerror=alert(1)> standup"
            assert "<b>Ada</b>" in page.inner_text(f"{view} .sessions")
            assert page.locator("img").count() == 0

            screenshot = tmp_path / "dashboard.png"
            page.screenshot(path=str(screenshot), full_page=True)
            keep(screenshot)

            peers.pop().leave()
            wait_for_peers(page, room, "1")
            peers.pop().leave()
            # The room leaves the list at once when its last peer leaves.
            wait_for_peers(page, room, "")
            assert page.is_visible("#live-empty")

            assert problems == []
            # Everything the page loaded came from the service itself.
            urls = [request.url for request in requested]
            assert urls and all(url.startswith(server.base + "/") for url in urls), urls

            # The service goes away and comes back: the page reconnects by
            # itself, resuming after the last event it had, and goes on.
            server.stop()
            page.wait_for_selector("#stream-state.down", timeout=WAIT_MS)
            server.start()
            peers.append(project.join(room))
            wait_for_peers(page, room, "1")
            resumed = [r for r in requested if r.url.endswith("/live-sessions/events")][-1]
            assert resumed.headers.get("last-event-id", "").startswith("evt_")
            assert page.evaluate("window.__sameDocument") is True
        finally:
            for peer in peers:
                peer.close()
            browser.close()
