"""The connect-a-wallet page, end to end in headless Chromium, with an injected
EIP-1193 provider that signs with a key made in the test (test_dashboard.py
uses the same provider)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from support import Server, required

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from playwright.sync_api import Browser, Page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = required()

if not CHROMIUM and not REQUIRED:
    pytest.skip("Chromium is not installed (apt-get install chromium); the page test needs it", allow_module_level=True)

PROVIDER = """
window.ethereum = {
  isTestProvider: true,
  async request({ method, params }) {
    if (method === "eth_requestAccounts" || method === "eth_accounts") return [window.__testAddress];
    if (method === "eth_chainId") return "0x1";
    if (method === "personal_sign") return await window.__testSign(params[0], params[1]);
    throw new Error("unsupported method " + method);
  },
};
"""
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wallet_page(browser: Browser, account: LocalAccount) -> tuple[Page, list[str]]:
    """A page whose wallet (window.ethereum) is `account`, and the list that
    collects the messages it signs."""
    signed: list[str] = []

    def test_sign(hex_message: str, address: str) -> str:
        assert address.lower() == account.address.lower()
        text = bytes.fromhex(hex_message[2:]).decode()
        signed.append(text)
        signature = Account.sign_message(encode_defunct(text=text), account.key).signature
        return "0x" + signature.hex().removeprefix("0x")

    page = browser.new_page()
    page.expose_function("__testSign", test_sign)
    page.add_init_script(f"window.__testAddress = {account.address.lower()!r};" + PROVIDER)
    return page, signed


def test_a_person_connects_a_wallet_gets_a_key_and_revokes_it(server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Chromium is required here (LIVESESSIONS_REQUIRE_SERVICES or CI is set) but not installed"
    account = Account.create()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page, signed = wallet_page(browser, account)
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(server.base + "/connect")
            page.click("#connect")
            page.wait_for_selector("#new-key:not([hidden])", timeout=15_000)
            first_key = page.inner_text("#key-value")
            assert first_key.startswith("lsk_")
            assert "wants you to sign in with your Ethereum account:" in signed[0]
            assert account.address in signed[0]  # checksummed in the message
            assert f"Signed in as {account.address}" in page.inner_text("#status")
            page.wait_for_selector("#key-rows tr")
            assert page.locator("#key-rows tr").count() == 1

            page.click("#copy")
            # the click handler awaits the clipboard before it changes the label
            page.wait_for_function("document.querySelector('#copy').textContent !== 'Copy'", timeout=5_000)
            assert page.inner_text("#copy") in ("Copied", "Selected: press Ctrl+C")

            page.fill("#key-name", "from the browser")
            page.click("#create-form button")
            page.wait_for_function("document.querySelectorAll('#key-rows tr').length === 2")
            second_key = page.inner_text("#key-value")
            assert second_key.startswith("lsk_") and second_key != first_key
            page.screenshot(path=str(tmp_path / "connect.png"), full_page=True)

            ok = {"x-api-key": first_key}
            assert httpx.get(server.base + "/api/v2/sdk/live-sessions", headers=ok).status_code == 200
            page.locator("#key-rows tr").first.locator("button").click()
            page.wait_for_function("document.querySelectorAll('#key-rows tr').length === 1")
            assert "Revoked" in page.inner_text("#status")
            assert httpx.get(server.base + "/api/v2/sdk/live-sessions", headers=ok).status_code == 401
            assert (
                httpx.get(server.base + "/api/v2/sdk/live-sessions", headers={"x-api-key": second_key}).status_code
                == 200
            )

            token = page.evaluate("session")
            bearer = {"authorization": f"Bearer {token}"}
            assert httpx.get(server.base + "/api/v2/keys", headers=bearer).status_code == 200
            page.click("#sign-out")
            page.wait_for_selector("#keys", state="hidden")
            assert "Signed out" in page.inner_text("#status")
            assert httpx.get(server.base + "/api/v2/keys", headers=bearer).status_code == 401
            assert (
                httpx.get(server.base + "/api/v2/sdk/live-sessions", headers={"x-api-key": second_key}).status_code
                == 200
            )
        finally:
            browser.close()


# Both pages sign in with the same script (signin.js): the dashboard at / and this one.
@pytest.mark.parametrize("path", ["/", "/connect"])
def test_the_page_says_so_when_there_is_no_wallet(server: Server, path: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(server.base + path)
            page.click("#connect")
            assert "No wallet found" in page.inner_text("#status")
        finally:
            browser.close()
