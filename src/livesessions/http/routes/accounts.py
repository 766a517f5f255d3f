"""Wallet sign-in (EIP-4361) and the management of a project's API keys."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from livesessions.auth.api_keys import ApiKeys
from livesessions.auth.rate_limits import Limiter
from livesessions.auth.siwe import checksum
from livesessions.auth.wallet_sign_in import WalletSignIn
from livesessions.clock import Clock
from livesessions.domain.errors import Invalid, NotFound, TooMany
from livesessions.domain.records import ApiKeyRecord
from livesessions.http.core import Request
from livesessions.http.errors import ErrorMessage
from livesessions.http.params import OptionalInteger, OptionalText
from livesessions.http.responses import NO_CONTENT, Out, Response
from livesessions.http.routing import Operation, PathParam, Reply
from livesessions.http.validation import ValidationError

TAG = "accounts"
ADDRESS_PATTERN = "^0x[0-9a-fA-F]{40}$"
_ADDRESS_LINE = re.compile(ADDRESS_PATTERN)

ADDRESS = OptionalText(
    "address", "The wallet that will sign: the answer then holds the message to sign.", ADDRESS_PATTERN
)
CHAIN_ID = OptionalInteger(
    "chainId", "The chain the message names (with `address`; default: the first allowed).", 1, 2**53
)

Address = Annotated[str, msgspec.Meta(pattern=ADDRESS_PATTERN, description="An Ethereum address.")]
NewApiKey = Annotated[
    str,
    msgspec.Meta(pattern="^lsk_[A-Za-z0-9_-]+$", description="The key itself: shown only now, stored only as a hash."),
]
KeyId = Annotated[str, msgspec.Meta(pattern="^key_[0-9a-f]+$")]


class VerifyBody(msgspec.Struct):
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=8192, description="The EIP-4361 message, as signed.")]
    signature: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=200, description="Its personal_sign signature: 0x and 130 hex digits."),
    ]


class SignOutBody(msgspec.Struct):
    everywhere: Annotated[
        bool, msgspec.Meta(description="End every account session of the wallet, not only this one.")
    ] = False


class NewKeyBody(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class Nonce(Out):
    nonce: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9]{8,}$", description="Single-use; expires within minutes.")]
    message: (
        Annotated[
            str,
            msgspec.Meta(description="The EIP-4361 message for the wallet to sign (only when `address` was given)."),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class SignedIn(Out):
    """`apiKey` comes only on the wallet's first sign-in."""

    token: Annotated[
        str,
        msgspec.Meta(
            pattern="^lss_[A-Za-z0-9_-]+$",
            description="An account session for `Authorization: Bearer`; expires within the hour.",
        ),
    ]
    projectId: str
    address: Address
    apiKey: NewApiKey | msgspec.UnsetType = msgspec.UNSET


class ApiKeyList(Out):
    keys: list[ApiKeyRecord]


class NewKey(Out):
    id: KeyId
    name: str
    apiKey: NewApiKey


async def _limit(limiter: Limiter, *keys: str) -> None:
    for key in keys:
        wait = await limiter.acquire(key)
        if wait:
            raise TooMany("Too many sign-in attempts; try again later", wait)


def _client(request: Request) -> str:
    return f"client:{request.client_key}"


async def nonce(request: Request, sign_in: WalletSignIn, sign_in_limiter: Limiter) -> Nonce:
    await _limit(sign_in_limiter, _client(request))
    address = request.query.get(ADDRESS.name)  # given empty, still checked
    if address is None:
        return Nonce(nonce=await sign_in.new_nonce())
    # Checked before a nonce is stored: a bad request leaves nothing behind.
    if not _ADDRESS_LINE.match(address):
        raise Invalid("address must be 0x and 40 hex digits")
    chain_id = CHAIN_ID.read(request)
    if chain_id is None:
        chain_id = min(sign_in.policy.chain_ids)
    value = await sign_in.new_nonce()
    return Nonce(nonce=value, message=sign_in.message_for(value, checksum(address), chain_id))


async def verify(request: Request, sign_in: WalletSignIn, sign_in_limiter: Limiter, body: VerifyBody) -> SignedIn:
    lines = body.message.split("\n", 2)
    claimed = lines[1].lower() if len(lines) > 1 and _ADDRESS_LINE.match(lines[1]) else None
    await _limit(sign_in_limiter, _client(request), *([f"address:{claimed}"] if claimed else []))
    session, token, api_key = await sign_in.verify(body.message, body.signature)
    return SignedIn(
        token=token,
        projectId=session.project_id,
        address=session.address,
        apiKey=msgspec.UNSET if api_key is None else api_key,
    )


async def sign_out(request: Request, sign_in: WalletSignIn, body: SignOutBody) -> Response:
    await sign_in.sign_out(request.bearer_token or "", body.everywhere)
    return NO_CONTENT


async def list_keys(request: Request, api_keys: ApiKeys) -> ApiKeyList:
    return ApiKeyList(keys=await api_keys.list(request.project_id))


async def create_key(request: Request, api_keys: ApiKeys, clock: Clock, body: NewKeyBody) -> NewKey:
    key, record = await api_keys.create(request.project_id, body.name.strip() or "key", clock())
    return NewKey(id=record.id, name=record.name, apiKey=key)


async def revoke_key(request: Request, api_keys: ApiKeys) -> Response:
    if not await api_keys.revoke(request.project_id, request.path_params["keyId"]):
        raise NotFound("Key Not Found")
    return NO_CONTENT


TOO_MANY_SIGN_INS = Reply(
    "Too many sign-in attempts from this client (or for this address) in the last minute; "
    "retry after `Retry-After` seconds.",
    ErrorMessage,
    headers={
        "Retry-After": {
            "description": "Seconds to wait.",
            "required": True,
            "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        }
    },
)
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/api/v2/auth/nonce",
        nonce,
        "getNonce",
        "A nonce for a sign-in message (and the message, given an address)",
        TAG,
        auth="none",
        answer=Reply("A fresh nonce."),
        errors={
            400: Reply(
                "`address` is not an Ethereum address, or `chainId` is out of range.", ErrorMessage | ValidationError
            ),
            429: TOO_MANY_SIGN_INS,
        },
        query=(ADDRESS, CHAIN_ID),
    ),
    Operation(
        "POST",
        "/api/v2/auth/verify",
        verify,
        "verifySignIn",
        "Exchange a signed sign-in message for an account session",
        TAG,
        auth="none",
        answer=Reply("Signed in."),
        errors={
            400: Reply(
                "The body is invalid, or the message or signature is malformed.", ValidationError | ErrorMessage
            ),
            401: Reply("The signature, domain, URI, chain, times or nonce do not check out.", ErrorMessage),
            429: TOO_MANY_SIGN_INS,
        },
    ),
    Operation(
        "POST",
        "/api/v2/auth/logout",
        sign_out,
        "signOut",
        "End this account session (or, with `everywhere`, all of the wallet's)",
        TAG,
        auth="account",
        status=204,
        answer=Reply("Signed out: the token stops working at once. API keys are not affected."),
    ),
    Operation(
        "GET",
        "/api/v2/keys",
        list_keys,
        "listApiKeys",
        "The project's API keys (masked)",
        TAG,
        auth="account",
        answer=Reply("The keys that work."),
    ),
    Operation(
        "POST",
        "/api/v2/keys",
        create_key,
        "createApiKey",
        "A new API key for the project",
        TAG,
        auth="account",
        status=201,
        answer=Reply("The new key; shown only now."),
    ),
    Operation(
        "DELETE",
        "/api/v2/keys/{keyId}",
        revoke_key,
        "revokeApiKey",
        "Revoke one of the project's API keys",
        TAG,
        auth="account",
        status=204,
        answer=Reply("Revoked: the key stops working at once."),
        errors={404: Reply("No such key in the project.", ErrorMessage)},
        path_params=(PathParam("keyId"),),
    ),
)
