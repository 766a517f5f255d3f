"""create-peer-token: a signed JWT that lets one peer join one room."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from livesessions.domain.ids import is_room_id, new_peer_id
from livesessions.domain.metadata import MetadataError, peer_metadata_text
from livesessions.domain.permissions import resolve_permissions
from livesessions.http.core import JSONResponse, Request, Response, Router
from livesessions.http.routes.rooms import room_not_found
from livesessions.http.validation import ValidationFailed, issue
from livesessions.services import Services

DEFAULT_TTL_S = 4 * 3600
MAX_TTL_S = 30 * 24 * 3600

Role = Literal["host", "coHost", "speaker", "listener", "guest", "bot"]


class Sources(msgspec.Struct, omit_defaults=True):
    cam: bool | None = None
    mic: bool | None = None
    screen: bool | None = None


class PermissionsBody(msgspec.Struct, omit_defaults=True):
    admin: bool | None = None
    canConsume: bool | None = None
    canProduce: bool | None = None
    canProduceSources: Sources | None = None
    canSendData: bool | None = None
    canRecvData: bool | None = None
    canUpdateMetadata: bool | None = None


class TokenOptions(msgspec.Struct, omit_defaults=True):
    maxPeersAllowed: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    roomLocked: bool | None = None


class CreatePeerTokenBody(msgspec.Struct):
    roomId: str
    role: Role | None = None
    permissions: PermissionsBody | None = None
    metadata: str | dict[str, Any] | None = None
    options: TokenOptions | None = None
    ttl: Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_S)] | None = None


def register(router: Router, services: Services) -> None:
    async def create_peer_token(request: Request) -> Response:
        body = await request.json_as(CreatePeerTokenBody)
        try:
            metadata = peer_metadata_text(body.metadata)
        except MetadataError as exc:
            raise ValidationFailed([issue(["metadata"], str(exc), "too_big")]) from None
        if not is_room_id(body.roomId) or await services.store.get_room(request.project_id, body.roomId) is None:
            raise room_not_found()
        overrides = msgspec.to_builtins(body.permissions) if body.permissions else None
        role = body.role or "speaker"
        claims = {
            "peerId": new_peer_id(),
            "roomId": body.roomId,
            "projectId": request.project_id,
            "keyId": request.key_id,
            "role": role,
            "permissions": resolve_permissions(role, overrides),
            "metadata": metadata,
        }
        if body.options is not None:
            claims["options"] = msgspec.to_builtins(body.options)
        token = services.signer.issue(claims, services.clock() // 1000, body.ttl or DEFAULT_TTL_S)
        return JSONResponse({"token": token})

    router.add("POST", "/api/v2/sdk/create-peer-token", create_peer_token)
