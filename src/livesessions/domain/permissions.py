"""Peer roles and the permissions each carries by default (Huddle01's defaults)."""

from __future__ import annotations

from typing import Any

ROLES = ("host", "coHost", "speaker", "listener", "guest", "bot")

# Recorders and agents join as bots: they never count as peers of a session.
BOT_ROLE = "bot"

# Exactly Huddle01's server SDK (npm @huddle01/server-sdk 2.6.2, dist/auth:
# DEFAULT_PERMISSIONS and ROLE_PERMISSIONS), so that a plain-HTTP caller that
# leaves out `permissions` gets the same peer as through the SDK or on Huddle01.
DEFAULT_PERMISSIONS: dict[str, Any] = {
    "admin": False,
    "canConsume": True,
    "canProduce": True,
    "canProduceSources": {"cam": True, "mic": True, "screen": True},
    "canRecvData": True,
    "canSendData": True,
    "canUpdateMetadata": True,
}
_NO_SOURCES = {"cam": False, "mic": False, "screen": False}

ROLE_PERMISSIONS: dict[str, dict[str, Any]] = {
    "host": {**DEFAULT_PERMISSIONS, "admin": True},
    "coHost": {**DEFAULT_PERMISSIONS, "admin": True},
    "listener": {**DEFAULT_PERMISSIONS, "canProduce": False, "canProduceSources": _NO_SOURCES},
    "speaker": {**DEFAULT_PERMISSIONS, "canProduceSources": {"cam": False, "mic": True, "screen": True}},
    # A bot consumes media and nothing else, so an invisible member cannot
    # message or impersonate anyone unless its token's permissions say so.
    "bot": {
        **DEFAULT_PERMISSIONS,
        "canProduce": False,
        "canProduceSources": _NO_SOURCES,
        "canRecvData": False,
        "canSendData": False,
        "canUpdateMetadata": False,
    },
    "guest": DEFAULT_PERMISSIONS,
}

# A custom role's name, as the SDK allows it: 1 to 20 characters (and here no
# control characters).
CUSTOM_ROLE_PATTERN = r"^[^\x00-\x1f\x7f]{1,20}$"


def resolve_permissions(role: str | None, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The role's defaults (DEFAULT_PERMISSIONS for a custom role or none) with
    any explicitly given permission laid over them."""
    base = ROLE_PERMISSIONS.get(role or "", DEFAULT_PERMISSIONS)
    merged = {**base, "canProduceSources": dict(base["canProduceSources"])}
    for key, value in (overrides or {}).items():
        if key == "canProduceSources":
            merged["canProduceSources"].update(value)
        else:
            merged[key] = value
    return merged
