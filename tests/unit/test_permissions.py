"""Role defaults and per-token overrides of peer permissions."""

from __future__ import annotations

from livesessions.domain.permissions import DEFAULT_PERMISSIONS, ROLE_PERMISSIONS, resolve_permissions

ALL = {"cam": True, "mic": True, "screen": True}
NONE = {"cam": False, "mic": False, "screen": False}


def test_the_role_table_is_huddle01_s_sdk_table() -> None:
    """npm @huddle01/server-sdk 2.6.2, dist/auth ROLE_PERMISSIONS, field by field."""
    expected = {
        # admin, consume, produce, sources, recv, send, metadata
        "host": (True, True, True, ALL, True, True, True),
        "coHost": (True, True, True, ALL, True, True, True),
        "speaker": (False, True, True, {"cam": False, "mic": True, "screen": True}, True, True, True),
        "listener": (False, True, False, NONE, True, True, True),
        "guest": (False, True, True, ALL, True, True, True),
        "bot": (False, True, False, NONE, False, False, False),
    }
    fields = (
        *("admin", "canConsume", "canProduce", "canProduceSources"),
        *("canRecvData", "canSendData", "canUpdateMetadata"),
    )
    for role, values in expected.items():
        table = ROLE_PERMISSIONS[role]
        assert tuple(table[f] for f in fields) == values, role
        assert set(table) == set(DEFAULT_PERMISSIONS), role


def test_no_role_or_a_custom_role_starts_from_the_sdk_defaults() -> None:
    assert resolve_permissions(None, None) == DEFAULT_PERMISSIONS
    assert resolve_permissions("moderator", {"admin": True}) == {**DEFAULT_PERMISSIONS, "admin": True}


def test_overrides_are_laid_over_and_never_change_the_table() -> None:
    assert resolve_permissions("bot", {"canSendData": True})["canSendData"] is True
    assert resolve_permissions("speaker", {"canProduceSources": {"cam": True}})["canProduceSources"] == ALL
    assert ROLE_PERMISSIONS["bot"]["canSendData"] is False
    assert ROLE_PERMISSIONS["speaker"]["canProduceSources"]["cam"] is False
