"""Wallet sign-in (EIP-4361) and the management of a project's API keys."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from livesessions.auth.rate_limits import retry_after
from livesessions.auth.siwe import checksum
from livesessions.http import params
from livesessions.http.core import HTTPError, JSONResponse, Request, Response, Router, error_message
from livesessions.services import Services

_ADDRESS_LINE = re.compile(r"^0x[0-9a-fA-F]{40}$")


class VerifyBody(msgspec.Struct):
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
    signature: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class SignOutBody(msgspec.Struct):
    # End every account session of the wallet, not only this one.
    everywhere: bool = False


class NewKeyBody(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


def register(router: Router, services: Services) -> None:
    sign_in = services.sign_in
    limiter = services.sign_in_limiter

    def limit(*keys: str) -> None:
        for key in keys:
            wait = limiter.acquire(key)
            if wait:
                raise HTTPError(429, {"ok": False, "message": "Too many sign-in attempts; try again later"},
                                [(b"retry-after", retry_after(wait).encode())])

    def client(request: Request) -> str:
        return f"client:{request.client_address}"

    async def nonce(request: Request) -> Response:
        limit(client(request))
        value = await sign_in.new_nonce()
        answer = {"nonce": value}
        address = request.query.get("address")
        if address is not None:
            if not _ADDRESS_LINE.match(address):
                raise error_message(400, "address must be 0x and 40 hex digits")
            chain_id = params.integer(request, "chainId", min(sign_in.policy.chain_ids), 1, 2**53)
            assert chain_id is not None
            answer["message"] = sign_in.message_for(value, checksum(address), chain_id)
        return JSONResponse(answer)

    async def verify(request: Request) -> Response:
        body = await request.json_as(VerifyBody)
        lines = body.message.split("\n", 2)
        claimed = lines[1].lower() if len(lines) > 1 and _ADDRESS_LINE.match(lines[1]) else None
        limit(client(request), *([f"address:{claimed}"] if claimed else []))
        session, token, api_key = await sign_in.verify(body.message, body.signature)
        answer = {"token": token, "projectId": session.project_id, "address": session.address}
        if api_key is not None:
            answer["apiKey"] = api_key
        return JSONResponse(answer)

    async def sign_out(request: Request) -> Response:
        body = await request.json_as(SignOutBody, empty_ok=True)
        await sign_in.sign_out(request.bearer_token or "", body.everywhere)
        return Response(204, b"")

    async def list_keys(request: Request) -> Response:
        return JSONResponse({"keys": await services.api_keys.list(request.project_id)})

    async def create_key(request: Request) -> Response:
        body = await request.json_as(NewKeyBody)
        key, record = await services.api_keys.create(request.project_id, body.name.strip() or "key", services.clock())
        return JSONResponse({"id": record.id, "name": record.name, "apiKey": key}, 201)

    async def revoke_key(request: Request) -> Response:
        if not await services.api_keys.revoke(request.project_id, request.path_params["keyId"]):
            raise HTTPError(404, {"ok": False, "message": "Key Not Found"})
        return Response(204, b"")

    router.add("GET", "/api/v2/auth/nonce", nonce, auth="none")
    router.add("POST", "/api/v2/auth/verify", verify, auth="none")
    router.add("POST", "/api/v2/auth/logout", sign_out, auth="account")
    router.add("GET", "/api/v2/keys", list_keys, auth="account")
    router.add("POST", "/api/v2/keys", create_key, auth="account")
    router.add("DELETE", "/api/v2/keys/{keyId}", revoke_key, auth="account")
