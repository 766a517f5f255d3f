"""Getting an API key by connecting a wallet: nonces, the checks on a signed
EIP-4361 message, and the short-lived account sessions that manage keys."""

from __future__ import annotations

import hashlib
import logging
import secrets
import string
from dataclasses import dataclass

from livesessions.auth.api_keys import ApiKeys
from livesessions.auth.siwe import SiweError, SiweMessage, format_time, parse_message, parse_time, recover_signer
from livesessions.clock import Clock
from livesessions.domain.errors import Invalid, Refused, Unauthorized
from livesessions.domain.ports import Accounts
from livesessions.logs import context
from livesessions.telemetry import Telemetry

log = logging.getLogger(__name__)

_NONCE_ALPHABET = string.ascii_letters + string.digits
STATEMENT = "Sign in to livesessions to get an API key for your project."


@dataclass(frozen=True, slots=True)
class SignInPolicy:
    # What the message must name: this service as configured. Never taken
    # from a request's Host, or a phishing site could have its victims sign
    # messages for itself and replay them here with its own Host header.
    domain: str
    uri: str
    chain_ids: frozenset[int] = frozenset({1})
    nonce_ttl_ms: int = 5 * 60_000
    session_ttl_ms: int = 60 * 60_000
    clock_skew_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class AccountSession:
    project_id: str
    address: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class WalletSignIn:
    def __init__(
        self, accounts: Accounts, api_keys: ApiKeys, clock: Clock, policy: SignInPolicy, telemetry: Telemetry
    ) -> None:
        self.accounts = accounts
        self.api_keys = api_keys
        self.clock = clock
        self.policy = policy
        self.telemetry = telemetry

    async def new_nonce(self) -> str:
        nonce = "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(24))
        await self.accounts.add_nonce(nonce, self.clock() + self.policy.nonce_ttl_ms)
        return nonce

    def message_for(self, nonce: str, address: str, chain_id: int) -> str:
        """The message a wallet at `address` should sign, for clients that would
        rather not build it (a browser page has no EIP-55 checksum at hand)."""
        return SiweMessage(
            domain=self.policy.domain,
            address=address,
            statement=STATEMENT,
            uri=self.policy.uri,
            chain_id=chain_id,
            nonce=nonce,
            issued_at=format_time(self.clock()),
        ).text()

    async def verify(self, text: str, signature: str) -> tuple[AccountSession, str, str | None]:
        """Check a signed message; (session, session token, first API key or None)."""
        try:
            session, token, api_key = await self._verify(text, signature)
        except Refused as exc:
            self.telemetry.sign_ins.labels("refused").inc()
            log.info("sign-in refused", extra=context(reason=exc.message))
            raise
        self.telemetry.sign_ins.labels("first" if api_key else "succeeded").inc()
        log.info(
            "signed in", extra=context(project=session.project_id, address=session.address, first=api_key is not None)
        )
        return session, token, api_key

    async def _verify(self, text: str, signature: str) -> tuple[AccountSession, str, str | None]:
        try:
            message = parse_message(text)
            signer = recover_signer(text, signature)
        except SiweError as exc:
            raise Invalid(str(exc)) from None
        domain, uri = self.policy.domain, self.policy.uri
        if signer != message.address:
            raise Unauthorized("the signature was not made by the message's address")
        if message.domain != domain:
            raise Unauthorized(f"the message is for domain {message.domain!r}, not this service ({domain!r})")
        if message.uri != uri and not message.uri.startswith(uri + "/"):
            raise Unauthorized(f"the message's URI {message.uri!r} is not this service ({uri!r})")
        if message.version != "1":
            raise Unauthorized(f"unsupported message version {message.version!r}: only 1 is")
        if message.chain_id not in self.policy.chain_ids:
            allowed = ", ".join(str(c) for c in sorted(self.policy.chain_ids))
            raise Unauthorized(f"chain id {message.chain_id} is not allowed here (allowed: {allowed})")
        self._check_times(message)
        now = self.clock()
        if not await self.accounts.consume_nonce(message.nonce, now):
            raise Unauthorized("the nonce is unknown, expired or already used: ask for a new one")

        project = await self.accounts.project_for_wallet(message.address, now)
        api_key = None
        if await self.accounts.first_sign_in(project.project_id, now):
            api_key, _ = await self.api_keys.create(project.project_id, "first key", now)
        token = "lss_" + secrets.token_urlsafe(32)
        await self.accounts.add_account_session(
            _hash(token), project.project_id, project.wallet_address, now + self.policy.session_ttl_ms
        )
        return AccountSession(project.project_id, message.address), token, api_key

    def _check_times(self, message: SiweMessage) -> None:
        now, skew = self.clock(), self.policy.clock_skew_ms
        try:
            issued_at = parse_time(message.issued_at)
            expires = parse_time(message.expiration_time) if message.expiration_time else None
            not_before = parse_time(message.not_before) if message.not_before else None
        except SiweError as exc:
            raise Invalid(str(exc)) from None
        if issued_at > now + skew:
            raise Unauthorized("the message is issued in the future")
        if issued_at < now - self.policy.nonce_ttl_ms - skew:
            raise Unauthorized("the message is too old: sign a new one")
        if expires is not None and expires <= now:
            raise Unauthorized("the message has expired")
        if not_before is not None and not_before > now + skew:
            raise Unauthorized("the message is not valid yet (Not Before is in the future)")

    async def session(self, token: str | None) -> AccountSession | None:
        if not token or len(token) > 256:
            return None
        found = await self.accounts.account_session(_hash(token), self.clock())
        return AccountSession(*found) if found else None

    async def sign_out(self, token: str, everywhere: bool) -> None:
        """End this account session, or every session of its wallet.

        Account sessions are not tied to API keys: revoking keys (even the
        last one) leaves the owner signed in to make new ones."""
        await self.accounts.end_account_sessions(_hash(token), everywhere)
