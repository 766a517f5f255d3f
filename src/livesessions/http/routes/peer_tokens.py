"""create-peer-token: a signed JWT that lets one peer join one room."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from livesessions.auth.peer_tokens import PeerTokenSigner
from livesessions.clock import Clock
from livesessions.domain.ids import new_peer_id
from livesessions.domain.metadata import MAX_PEER_METADATA_BYTES, MetadataError, peer_metadata_text
from livesessions.domain.permissions import CUSTOM_ROLE_PATTERN, ROLES, resolve_permissions
from livesessions.domain.ports import Rooms
from livesessions.http.core import Request
from livesessions.http.fields import GivenRoomId
from livesessions.http.responses import Out
from livesessions.http.routes.rooms import NO_SUCH_ROOM, find_room
from livesessions.http.routing import Operation, Reply
from livesessions.http.validation import ValidationFailed, issue

DEFAULT_TTL_S = 4 * 3600
# A join link's token, as Huddle01's join-room-token gives it.
JOIN_LINK_TTL_S = 30 * 60
MAX_TTL_S = 30 * 24 * 3600

BuiltInRole = Literal["host", "coHost", "speaker", "listener", "guest", "bot"]
CustomRole = Annotated[
    str,
    msgspec.Meta(
        pattern=CUSTOM_ROLE_PATTERN,
        description="A custom role (1 to 20 characters): only with `permissions`, laid over the defaults.",
    ),
]
Role = Annotated[
    BuiltInRole | CustomRole,
    msgspec.Meta(
        description="A built-in role, with Huddle01's permissions for it unless `permissions` says otherwise "
        "(`bot` peers — recorders, agents — are not counted as peers), or a custom role with `permissions`."
    ),
]


class Sources(msgspec.Struct, omit_defaults=True):
    cam: bool | None = None
    mic: bool | None = None
    screen: bool | None = None


class PermissionsBody(msgspec.Struct, omit_defaults=True):
    """Laid over the role's default permissions; null or absent means the default."""

    admin: bool | None = None
    canConsume: bool | None = None
    canProduce: bool | None = None
    canProduceSources: Sources | None = None
    canSendData: bool | None = None
    canRecvData: bool | None = None
    canUpdateMetadata: bool | None = None


class TokenOptions(msgspec.Struct, omit_defaults=True):
    maxPeersAllowed: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    roomLocked: Annotated[bool, msgspec.Meta(description="Lock the room when this peer joins.")] | None = None


class CreatePeerTokenBody(msgspec.Struct):
    roomId: GivenRoomId
    role: Annotated[Role | None, msgspec.Meta(description="Default `speaker`.")] = None
    permissions: PermissionsBody | None = None
    metadata: Annotated[
        str | dict[str, Any] | None,
        msgspec.Meta(
            description=f"Peer metadata, kept as text (at most {MAX_PEER_METADATA_BYTES} bytes UTF-8); an "
            "object is JSON-encoded."
        ),
    ] = None
    options: TokenOptions | None = None
    ttl: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_S)] | None,
        msgspec.Meta(description=f"Seconds the token is valid (default {DEFAULT_TTL_S})."),
    ] = None


class PeerToken(Out):
    token: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
            description="An ES256 JWT; verify with GET /jwks.json.",
        ),
    ]


class JoinRoomTokenBody(msgspec.Struct):
    roomId: GivenRoomId
    displayName: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    userType: Annotated[Literal["host", "guest"], msgspec.Meta(description="Default `guest`.")] = "guest"
    avatarUrl: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$", max_length=2048)] | None = None
    guestAsHost: Annotated[bool, msgspec.Meta(description="A guest with a host's permissions.")] = False


async def join_room_token(
    request: Request, rooms: Rooms, signer: PeerTokenSigner, clock: Clock, body: JoinRoomTokenBody
) -> PeerToken:
    """A token for a join link: a host or a guest, named and pictured by its
    metadata, for half an hour."""
    profile = {
        name: value for name, value in (("displayName", body.displayName), ("avatarUrl", body.avatarUrl)) if value
    }
    try:
        metadata = peer_metadata_text(profile or None)
    except MetadataError as exc:
        raise ValidationFailed([issue(["displayName"], str(exc))]) from None
    await find_room(rooms, request.project_id, body.roomId)
    as_host = body.userType == "host" or body.guestAsHost
    claims = {
        "peerId": new_peer_id(),
        "roomId": body.roomId,
        "projectId": request.project_id,
        "keyId": request.key_id,
        "role": body.userType,
        "permissions": resolve_permissions("host" if as_host else "guest", None),
        "metadata": metadata,
    }
    return PeerToken(token=signer.issue(claims, clock() // 1000, JOIN_LINK_TTL_S))


async def create_peer_token(
    request: Request, rooms: Rooms, signer: PeerTokenSigner, clock: Clock, body: CreatePeerTokenBody
) -> PeerToken:
    try:
        metadata = peer_metadata_text(body.metadata)
    except MetadataError as exc:
        raise ValidationFailed([issue(["metadata"], str(exc), "too_big")]) from None
    if body.role is not None and body.role not in ROLES:
        if not re.fullmatch(CUSTOM_ROLE_PATTERN, body.role):
            raise ValidationFailed([issue(["role"], "a custom role is 1 to 20 characters, none of them control")])
        if body.permissions is None:
            why = f"Permissions must be provided for custom role: {body.role}"
            raise ValidationFailed([issue(["permissions"], why)])
    await find_room(rooms, request.project_id, body.roomId)
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
    return PeerToken(token=signer.issue(claims, clock() // 1000, body.ttl or DEFAULT_TTL_S))


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/api/v2/sdk/create-peer-token",
        create_peer_token,
        "createPeerToken",
        "A token that lets one peer join one room",
        "peers",
        answer=Reply("A signed peer token, for `/ws?token=`."),
        errors={404: NO_SUCH_ROOM},
    ),
    Operation(
        "POST",
        "/api/v2/sdk/join-room-token",
        join_room_token,
        "joinRoomToken",
        "A token for a join link: a host or a guest, for 30 minutes",
        "peers",
        answer=Reply(
            "A signed peer token, for `/ws?token=`: role `host` or `guest` (with a host's permissions when "
            '`guestAsHost`), metadata `{"displayName", "avatarUrl"}` as given, valid 30 minutes.'
        ),
        errors={404: NO_SUCH_ROOM},
    ),
)
