"""Identifiers handed to clients. All random, never derived from anything secret."""

from __future__ import annotations

import re
import secrets
import string

_LOWER = string.ascii_lowercase
_ALNUM = string.ascii_lowercase + string.digits

ROOM_ID_PATTERN = re.compile(r"^[a-z]{3}-[a-z]{4}-[a-z]{3}$")


def new_room_id() -> str:
    """A Huddle01-style room id: ``abc-defg-hij`` (26**10 possibilities)."""
    letters = "".join(secrets.choice(_LOWER) for _ in range(10))
    return f"{letters[:3]}-{letters[3:7]}-{letters[7:]}"


def is_room_id(value: str) -> bool:
    return ROOM_ID_PATTERN.match(value) is not None


def _random(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


SESSION_ID_PREFIX = "ses_"
PEER_ID_PREFIX = "peerId-"


def new_session_id() -> str:
    return _random(SESSION_ID_PREFIX, 20)


def new_peer_id() -> str:
    return _random(PEER_ID_PREFIX, 16)


def new_project_id() -> str:
    return _random("prj_", 16)
