"""Values used across the API's bodies, with what the document says of them."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from livesessions.domain.metadata import MAX_ROOM_METADATA_BYTES
from livesessions.domain.values import Count, EpochMillis, RoomId

__all__ = ["Count", "EpochMillis", "GivenRoomId", "RoomId", "RoomMetadata", "RoomMetadataInput"]

# A room id a client sends: anything else than one of the project's rooms is
# answered as an unknown room (a 404), never as invalid.
GivenRoomId = Annotated[str, msgspec.Meta(description="A room of the key's project; any other value is a 404.")]
RoomMetadata = Annotated[
    dict[str, Any],
    msgspec.Meta(description=f"The room's metadata: any JSON object, at most {MAX_ROOM_METADATA_BYTES} bytes as JSON."),
]
RoomMetadataInput = Annotated[
    str | dict[str, Any],
    msgspec.Meta(
        description="Room metadata as a JSON object, or a string holding one (as the official SDK sends "
        f"it). Stored as the object; at most {MAX_ROOM_METADATA_BYTES} bytes as JSON. A string that is "
        "not a JSON object, or anything larger, is a 400 validation failure."
    ),
]
