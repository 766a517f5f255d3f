"""The OpenAPI 3.1 document served at /openapi.json.

It describes every HTTP route the app registers, with the exact shapes the
handlers answer with, so that a tool (tests/test_openapi.py runs schemathesis
against a real server) can hold the service to it. Response objects are closed
(`additionalProperties: false`) wherever the code builds them field by field;
room metadata, which is the caller's own JSON object, stays open.

The document is plain data, built once when the app starts.
"""

from __future__ import annotations

from typing import Any

from livesessions import __version__
from livesessions.config import Settings
from livesessions.domain.egress import EGRESS_TYPES
from livesessions.domain.metadata import MAX_PEER_METADATA_BYTES, MAX_ROOM_METADATA_BYTES
from livesessions.domain.permissions import ROLES
from livesessions.http.routes import egress, history, live_sessions, peer_tokens, rooms, workers

Schema = dict[str, Any]

SDK = "/api/v2/sdk"
V1 = "/api/v1"
JSON = "application/json"
API_KEY_SCHEME = "apiKey"
ACCOUNT_SCHEME = "accountSession"
ROOM_ID_PATTERN = r"^[a-z]{3}-[a-z]{4}-[a-z]{3}$"
MAX_BODY_BYTES = Settings().max_body_bytes

# Bounds the handlers put on their paging parameters (see the route modules).
ROOMS_PAGE_DEFAULT = 10
ROOMS_PAGE_CURSOR_MAX = 10**9
SESSIONS_PAGE_DEFAULT = 20
SESSIONS_CURSOR_MAX = 2**62
RECORDINGS_PAGE_DEFAULT = 20
WORKER_JOBS_PAGE_DEFAULT = 50
WORKER_JOBS_PAGE_MAX = 500
# What SQLite can store; the worker API takes no larger size.
SQLITE_INTEGER_MAX = 2**63 - 1

DESCRIPTION = f"""\
A self-hosted, wire-compatible implementation of Huddle01's server-side v2 SDK
REST API (the Live Sessions API and what it depends on).

* Every route under `{SDK}` and `{V1}` needs the `x-api-key` header, except
  the health check `GET {SDK}` and recording downloads (their links are
  signed and expire). A missing or unknown key is answered with 401; a key
  over its rate limit with 429 and `Retry-After`.
* API keys come from a wallet sign-in (EIP-4361, Sign-In with Ethereum):
  `GET /api/v2/auth/nonce`, sign the message with the wallet, `POST
  /api/v2/auth/verify`. Its `token` (`Authorization: Bearer`) manages the
  project's keys at `/api/v2/keys` for a while. A person can do this in a
  browser at `/connect`.
* `{V1}/recording/*` is Huddle01's recorder API; `{V1}/workers/*` is where
  external media workers take the audio/video part of recording and livestream
  jobs. A livestream is watched as Server-Sent Events at `/live/{{playbackId}}`.
* Times are integers: epoch milliseconds.
* Room ids look like `abc-defg-hij`. A malformed room id is not a 400: it is
  answered exactly like a room that does not exist (or belongs to another
  project), with the route's 404.
* Bodies are JSON (`Content-Type: application/json`, otherwise 415), at most
  {MAX_BODY_BYTES} bytes (otherwise 413). A missing or malformed JSON body is
  400 `{{"ok": false, "message"}}`; a body or query parameter that fails
  validation is 400 `{{"success": false, "error": {{"issues": [...]}}}}`
  (zod-style issues).
* A path that matches no route is 404 `{{"ok": false, "message": "Not Found"}}`;
  a known path with another method is 405 `{{"ok": false, "message": "Method Not Allowed"}}`
  with an `Allow` header (components `RouteNotFound`, `MethodNotAllowed`).

Peers join rooms over a WebSocket at `/ws?token=<peer token>` (a token from
`POST {SDK}/create-peer-token`; its signature is checked with the keys at
`GET /jwks.json`). That WebSocket is not described here: JSON text frames
`joined`, `peer-joined`, `peer-left`, `data`, `metadata-updated` from the server;
`data`, `update-metadata`, `leave` from the peer; refused joins close with 4001
(bad or expired token), 4003 (room locked), 4004 (room not found) or 4029 (room full).
"""


# --- schema building blocks ---------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def closed(properties: dict[str, Schema], optional: tuple[str, ...] = (), **extra: Any) -> Schema:
    """An object with exactly these properties; all required but `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
        **extra,
    }


def request_object(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    """A request body object: unknown fields are ignored by the service, not refused."""
    return {"type": "object", "properties": properties, "required": list(required), **extra}


def const(value: Any) -> Schema:
    return {"const": value}


def nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


def array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def string(description: str | None = None, **extra: Any) -> Schema:
    return {"type": "string", **({"description": description} if description else {}), **extra}


def integer(description: str | None = None, **extra: Any) -> Schema:
    return {"type": "integer", **({"description": description} if description else {}), **extra}


def boolean(description: str | None = None) -> Schema:
    return {"type": "boolean", **({"description": description} if description else {})}


def optional_bool(description: str | None = None) -> Schema:
    """A boolean a caller may also send as null (meaning: not given)."""
    return {"type": ["boolean", "null"], **({"description": description} if description else {})}


EPOCH_MS = ref("EpochMillis")
COUNT = integer(minimum=0)


def schemas() -> dict[str, Schema]:
    return {
        **shared_schemas(),
        **error_schemas(),
        **meta_schemas(),
        **live_session_schemas(),
        **room_schemas(),
        **history_schemas(),
        **peer_token_schemas(),
        **egress_schemas(),
        **account_schemas(),
    }


def shared_schemas() -> dict[str, Schema]:
    """Values used across the API."""
    return {
        "EpochMillis": integer("A time, in milliseconds since the Unix epoch.", minimum=0),
        "RoomId": string("A room id as the service hands them out.", pattern=ROOM_ID_PATTERN,
                         examples=["abc-defg-hij"]),
        "RoomMetadata": {
            "type": "object",
            "description": f"The room's metadata: any JSON object, at most {MAX_ROOM_METADATA_BYTES} bytes as JSON.",
        },
        "RoomMetadataInput": {
            "description": "Room metadata as a JSON object, or a string holding one (as the official SDK "
            f"sends it). Stored as the object; at most {MAX_ROOM_METADATA_BYTES} bytes as JSON. "
            "A string that is not a JSON object, or anything larger, is a 400 validation failure.",
            "oneOf": [
                {"type": "object"},
                string(contentMediaType=JSON, contentSchema={"type": "object"}),
            ],
        },
    }


def error_schemas() -> dict[str, Schema]:
    """Every error body the service answers with."""
    return {
        "ErrorMessage": closed(
            {"ok": const(False), "message": string("What went wrong.")},
            description="A request problem: malformed JSON, missing body, wrong content type, "
            "oversize body, unknown path or method.",
        ),
        "RouteNotFound": closed({"ok": const(False), "message": const("Not Found")}),
        "Unauthorized": closed(
            {"ok": const(False), "message": const("Incorrect or no API key provided"), "validated": const(False)}
        ),
        "ValidationIssue": closed(
            {
                "code": string("A zod issue code: invalid_type, invalid_enum_value, too_small, too_big, custom."),
                "expected": string(),
                "received": string(),
                "path": array({"type": ["string", "integer"]}),
                "message": string(),
            },
            optional=("expected", "received"),
        ),
        "ValidationError": closed(
            {
                "success": const(False),
                "error": closed({"issues": array(ref("ValidationIssue"), minItems=1)}),
            },
            description="The request body or a query parameter failed validation.",
        ),
        "RoomNotFound": closed({"message": const("Room Not Found")}),
        "SessionNotFound": closed({"message": const("Session Not Found")}),
        "LiveSessionNotFound": closed(
            {"ok": const(False), "message": const("No live sessions found for this room id")}
        ),
        "LiveRoomNotFound": closed({"ok": const(False), "message": const("Session Not Found")}),
        "RecordingNotFound": closed({"ok": const(False), "message": const("Recording Not Found")}),
        "LivestreamNotFound": closed({"ok": const(False), "message": const("Livestream Not Found")}),
        "LivestreamEnded": closed({"ok": const(False), "message": const("This livestream has ended")}),
        "JobNotFound": closed({"ok": const(False), "message": const("Job Not Found")}),
    }


def meta_schemas() -> dict[str, Schema]:
    """Health, the token verification keys, this document."""
    return {
        "Health": closed({"ok": const(True), "message": string(examples=[f"livesessions {__version__} is running"])}),
        "JsonWebKey": closed(
            {
                "kty": const("EC"),
                "crv": const("P-256"),
                "x": string(pattern="^[A-Za-z0-9_-]+$"),
                "y": string(pattern="^[A-Za-z0-9_-]+$"),
                "use": const("sig"),
                "alg": const("ES256"),
                "kid": string("RFC 7638 thumbprint of the key.", pattern="^[A-Za-z0-9_-]+$"),
            }
        ),
        "JsonWebKeySet": closed({"keys": array(ref("JsonWebKey"), minItems=1)}),
        "OpenAPIDocument": {"type": "object", "required": ["openapi", "info", "paths"]},
    }


def live_session_schemas() -> dict[str, Schema]:
    """The Live Sessions API."""
    return {
        "LiveSession": closed(
            {
                "roomId": ref("RoomId"),
                "startTime": EPOCH_MS,
                "currentPeerCount": integer("Peers connected now, bots not counted.", minimum=1),
                "livestreamCount": COUNT,
                "recordingCount": COUNT,
            },
            description="A room that is live now (at least one peer other than bots connected).",
        ),
        "LiveSessionList": closed(
            {
                "liveSessions": array(ref("LiveSession")),
                "nextCursor": nullable(string("Pass as `cursor` for the next page.", pattern="^[A-Za-z0-9_-]+$")),
            },
            optional=("nextCursor",),
            description="`nextCursor` is present only when query parameters were given "
            "(a paged request); null on the last page.",
        ),
        "LiveSessionOne": closed(
            {
                "liveSessions": {
                    "oneOf": [array(ref("LiveSession"), minItems=1, maxItems=1), ref("LiveSession")],
                    "description": "A one-item list; a single object when the request has an "
                    "`x-sdk-version` header (what the official server SDK expects).",
                }
            }
        ),
        "LivePeer": closed({"peerId": string(), "joinTime": EPOCH_MS, "metadata": string()}),
        "LiveParticipants": closed(
            {"count": integer(minimum=1), "participants": array(ref("LivePeer"), minItems=1)},
            description="`count` is the number of `participants`: the peers connected now, bots not counted.",
        ),
    }


def room_schemas() -> dict[str, Schema]:
    """Rooms and their metadata."""
    return {
        "Room": closed(
            {
                "roomId": ref("RoomId"),
                "createdAt": EPOCH_MS,
                "roomLocked": boolean(),
                "metadata": nullable(ref("RoomMetadata")),
            }
        ),
        "RoomDetails": closed(
            {"roomId": ref("RoomId"), "roomLocked": boolean(), "metadata": nullable(ref("RoomMetadata"))}
        ),
        "RoomPage": closed(
            {
                "rooms": array(ref("Room"), maxItems=rooms.MAX_PAGE, description="Newest first."),
                "pageSize": integer(minimum=1, maximum=rooms.MAX_PAGE),
                "current": integer("This page's number (from 1).", minimum=1),
                "nextCursor": nullable(integer(minimum=2)),
                "prevCursor": nullable(integer(minimum=1)),
                "count": integer("How many rooms the project has.", minimum=0),
            }
        ),
        "CreateRoomRequest": request_object(
            {
                "roomLocked": boolean("A locked room admits no new peers except admins (default false)."),
                "metadata": {"oneOf": [ref("RoomMetadataInput"), {"type": "null"}]},
            }
        ),
        "RoomCreated": closed(
            {"message": const("Room Created Successfully"), "data": closed({"roomId": ref("RoomId")})}
        ),
        "MetadataRequest": request_object({"metadata": ref("RoomMetadataInput")}, required=("metadata",)),
        "MetadataResponse": closed({"metadata": ref("RoomMetadata")}),
        "RoomValidation": closed({"ok": const(True), "validated": boolean("Whether the project has this room.")}),
    }


def history_schemas() -> dict[str, Schema]:
    """Past and present sessions, participants, totals."""
    return {
        "SessionRecord": closed(
            {"sessionId": string(), "startTime": EPOCH_MS, "endTime": nullable(EPOCH_MS)},
            description="`endTime` is null while the session goes on.",
        ),
        "SessionPage": closed(
            {
                "sessions": array(ref("SessionRecord"), maxItems=history.MAX_PAGE, description="Newest first."),
                "nextCursor": nullable(integer("Pass as `cursor` for the next page.", minimum=1)),
            }
        ),
        "Participant": closed(
            {"peerId": string(), "joinTime": EPOCH_MS, "exitTime": EPOCH_MS, "metadata": string()},
            optional=("exitTime",),
            description="`exitTime` is present only once the peer has left.",
        ),
        "ParticipantList": closed({"participants": array(ref("Participant"))}),
        "Metrics": closed(
            {
                "totalSessions": COUNT,
                "totalDuration": integer("Milliseconds, live sessions counted up to now.", minimum=0),
                "totalUsers": COUNT,
                "recordingCount": COUNT,
                "livestreamCount": COUNT,
            }
        ),
    }


def peer_token_schemas() -> dict[str, Schema]:
    """create-peer-token."""
    return {
        "Role": {"enum": list(ROLES), "description": "`bot` peers (recorders, agents) are not counted as peers."},
        "ProduceSources": request_object({name: optional_bool() for name in ("cam", "mic", "screen")}),
        "Permissions": request_object(
            {
                "admin": optional_bool(),
                "canConsume": optional_bool(),
                "canProduce": optional_bool(),
                "canProduceSources": {"oneOf": [ref("ProduceSources"), {"type": "null"}]},
                "canSendData": optional_bool(),
                "canRecvData": optional_bool(),
                "canUpdateMetadata": optional_bool(),
            },
            description="Laid over the role's default permissions; null or absent means the default.",
        ),
        "TokenOptions": request_object(
            {
                "maxPeersAllowed": {"type": ["integer", "null"], "minimum": 1, "maximum": 100_000},
                "roomLocked": optional_bool("Lock the room when this peer joins."),
            }
        ),
        "CreatePeerTokenRequest": request_object(
            {
                "roomId": string("A room of the key's project; any other value is a 404."),
                "role": {"oneOf": [ref("Role"), {"type": "null"}], "description": "Default `speaker`."},
                "permissions": {"oneOf": [ref("Permissions"), {"type": "null"}]},
                "metadata": {
                    "description": f"Peer metadata, kept as text (at most {MAX_PEER_METADATA_BYTES} bytes "
                    "UTF-8); an object is JSON-encoded.",
                    "oneOf": [string(maxLength=MAX_PEER_METADATA_BYTES), {"type": "object"}, {"type": "null"}],
                },
                "options": {"oneOf": [ref("TokenOptions"), {"type": "null"}]},
                "ttl": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": peer_tokens.MAX_TTL_S,
                    "description": f"Seconds the token is valid (default {peer_tokens.DEFAULT_TTL_S}).",
                },
            },
            required=("roomId",),
        ),
        "PeerToken": closed(
            {"token": string("An ES256 JWT; verify with GET /jwks.json.",
                             pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")}
        ),
    }


def account_schemas() -> dict[str, Schema]:
    address = string("An Ethereum address.", pattern="^0x[0-9a-fA-F]{40}$")
    api_key = string("The key itself: shown only now, stored only as a hash.", pattern="^lsk_[A-Za-z0-9_-]+$")
    key_id = string(pattern="^key_[0-9a-f]+$")
    return {
        "Nonce": closed(
            {
                "nonce": string("Single-use; expires within minutes.", pattern="^[A-Za-z0-9]{8,}$"),
                "message": string("The EIP-4361 message for the wallet to sign (only when `address` was given)."),
            },
            optional=("message",),
        ),
        "VerifyRequest": request_object(
            {
                "message": string("The EIP-4361 message, as signed.", minLength=1, maxLength=8192),
                "signature": string("Its personal_sign signature: 0x and 130 hex digits.", minLength=1,
                                    maxLength=200),
            },
            required=("message", "signature"),
        ),
        "SignedIn": closed(
            {
                "token": string("An account session for `Authorization: Bearer`; expires within the hour.",
                                pattern="^lss_[A-Za-z0-9_-]+$"),
                "projectId": string(),
                "address": address,
                "apiKey": api_key,
            },
            optional=("apiKey",),
            description="`apiKey` comes only on the wallet's first sign-in.",
        ),
        "SignInFirst": closed(
            {"ok": const(False), "message": const(
                "Sign in first: this needs 'Authorization: Bearer <token>' from /api/v2/auth/verify")}
        ),
        "ApiKeyInfo": closed(
            {
                "id": key_id,
                "name": string(),
                "maskedKey": string("The key's first and last characters."),
                "createdAt": EPOCH_MS,
                "lastUsedAt": nullable(EPOCH_MS),
            }
        ),
        "ApiKeyList": closed({"keys": array(ref("ApiKeyInfo"))}),
        "NewKeyRequest": request_object({"name": string(minLength=1, maxLength=100)}, required=("name",)),
        "SignOutRequest": request_object(
            {"everywhere": {"type": "boolean", "description": "End every account session of the wallet."}},
            required=(),
        ),
        "NewKey": closed({"id": key_id, "name": string(), "apiKey": api_key}),
        "KeyNotFound": closed({"ok": const(False), "message": const("Key Not Found")}),
    }


def egress_schemas() -> dict[str, Schema]:
    kind = ref("EgressType")
    job_id = string("A job id.", pattern="^job_[0-9a-f]+$")
    worker_id = string(minLength=1, maxLength=128)
    return {
        "EgressType": {"enum": list(EGRESS_TYPES)},
        "MediaStatus": {"enum": list(workers.STATUSES),
                        "description": "The media part of a job, as external workers see it."},
        "StartEgressRequest": request_object(
            {
                "roomId": string("A room of the key's project; any other value is a 404."),
                "token": string("A peer token for this room (from create-peer-token)."),
                "type": {**kind, "default": "recording"},
                "rtmpUrls": array(string(minLength=1, maxLength=2048), maxItems=16,
                                  description="Where a livestream should also go (kept for media workers)."),
            },
            required=("roomId", "token"),
        ),
        "EgressStarted": closed(
            {
                "msg": {"enum": [f"{t.capitalize()} started" for t in EGRESS_TYPES]},
                "id": job_id,
                "playbackUrl": string("Where viewers watch a livestream (livestreams only).", format="uri"),
            },
            optional=("playbackUrl",),
        ),
        "StopEgressRequest": request_object(
            {
                "roomId": string("A room of the key's project; any other value is a 404."),
                "type": {"oneOf": [kind, {"type": "null"}],
                         "description": "Which job to stop; needed only when both kinds are active."},
            },
            required=("roomId",),
        ),
        "EgressStopped": closed({"msg": const("Stopped"), "type": kind, "id": job_id}),
        "EgressStatus": {
            "oneOf": [
                closed({"status": const("stopped")}),
                closed(
                    {
                        "status": const("ongoing"),
                        "type": kind,
                        "startTime": EPOCH_MS,
                        "id": job_id,
                        "playbackUrl": string("Present while a livestream is active.", format="uri"),
                    },
                    optional=("playbackUrl",),
                    description="`type`, `startTime` and `id` are those of the job that started first.",
                ),
            ]
        },
        "Recording": closed(
            {
                "id": job_id,
                "recordingUrl": string("A signed download link of the timeline recording; it expires.",
                                       format="uri"),
                "recordingSize": integer("Bytes.", minimum=0),
                "mediaUrl": string("Where a media worker put the audio/video file."),
                "mediaSize": integer("Bytes.", minimum=0),
                "failedReason": string("Why the recording ended early: its storage failed (disk full or stalled)."),
                "failedAt": EPOCH_MS,
            },
            optional=("mediaUrl", "mediaSize", "failedReason", "failedAt"),
            dependentRequired={"mediaUrl": ["mediaSize"], "mediaSize": ["mediaUrl"],
                               "failedReason": ["failedAt"], "failedAt": ["failedReason"]},
            description="`mediaUrl` and `mediaSize` are present once a media worker has completed the job; "
            "`failedReason` and `failedAt` once the recording failed.",
        ),
        "RecordingPage": closed(
            {
                "recordings": array(ref("Recording"), maxItems=egress.MAX_PAGE, description="Newest first."),
                "nextCursor": nullable(integer("Pass as `cursor` for the next page.", minimum=1)),
            }
        ),
        "WorkerJob": closed(
            {
                "id": job_id,
                "roomId": ref("RoomId"),
                "sessionId": string(),
                "type": kind,
                "active": boolean("Whether the recording or livestream is still going on."),
                "startedAt": EPOCH_MS,
                "stoppedAt": nullable(EPOCH_MS),
                "rtmpUrls": array(string()),
                "mediaStatus": ref("MediaStatus"),
                "workerId": nullable(string()),
                "leaseExpiresAt": nullable(EPOCH_MS),
                "progress": integer(minimum=0, maximum=100),
                "progressMessage": nullable(string()),
                "mediaLocation": nullable(string()),
                "mediaSize": nullable(integer(minimum=0)),
            }
        ),
        "WorkerJobList": closed({"jobs": array(ref("WorkerJob"))}),
        "WorkerJobReply": closed({"job": ref("WorkerJob")}),
        "ClaimRequest": request_object({"workerId": worker_id}, required=("workerId",)),
        "ProgressRequest": request_object(
            {
                "workerId": worker_id,
                "progress": integer("Percent done.", minimum=0, maximum=100),
                "message": {"type": ["string", "null"], "maxLength": 1024},
            },
            required=("workerId", "progress"),
        ),
        "CompleteRequest": request_object(
            {
                "workerId": worker_id,
                "location": string("Where the media file is.", minLength=1, maxLength=2048),
                "size": integer("Bytes.", minimum=0, maximum=SQLITE_INTEGER_MAX),
            },
            required=("workerId", "location", "size"),
        ),
    }


# --- responses and parameters --------------------------------------------------


def json_content(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def reply(description: str, schema: Schema, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": json_content(schema), **extra}


def response_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def one_of(*names: str) -> Schema:
    return {"oneOf": [ref(name) for name in names]} if len(names) > 1 else ref(names[0])


def responses() -> dict[str, Any]:
    return {
        "Unauthorized": reply("Missing or unknown `x-api-key`.", ref("Unauthorized")),
        "BadQuery": reply("A required query parameter is missing or one is out of range.", ref("ValidationError")),
        "BadBody": reply(
            "The body failed validation, is not JSON, or (where a body is required) is empty.",
            one_of("ValidationError", "ErrorMessage"),
        ),
        "BadQueryOrBody": reply(
            "A query parameter or the body is invalid, or the body is not JSON or is missing.",
            one_of("ValidationError", "ErrorMessage"),
        ),
        "PayloadTooLarge": reply(f"The body is larger than {MAX_BODY_BYTES} bytes.", ref("ErrorMessage")),
        "UnsupportedMediaType": reply("A body was sent without `Content-Type: application/json`.",
                                      ref("ErrorMessage")),
        "RouteNotFound": reply("No route has this path.", ref("RouteNotFound")),
        "TooManyRequests": reply(
            "The API key made more requests than its rate limit allows; retry after `Retry-After` seconds.",
            closed({"ok": const(False), "message": const("Too many requests for this API key; slow down")}),
            headers={"Retry-After": retry_after_header()},
        ),
        "TooManySignIns": reply(
            "Too many sign-in attempts from this client (or for this address) in the last minute.",
            closed({"ok": const(False), "message": const("Too many sign-in attempts; try again later")}),
            headers={"Retry-After": retry_after_header()},
        ),
        "SignInFirst": reply(
            "No valid account session: sign in with a wallet first.",
            ref("SignInFirst"),
            headers={"WWW-Authenticate": {"required": True, "schema": const("Bearer")}},
        ),
        "MethodNotAllowed": reply(
            "The path exists, but not with this method.",
            closed({"ok": const(False), "message": const("Method Not Allowed")}),
            headers={"Allow": {"description": "The methods the path has.", "schema": string()}},
        ),
    }


def retry_after_header() -> dict[str, Any]:
    return {"description": "Seconds to wait.", "required": True, "schema": string(pattern="^[1-9][0-9]*$")}


def not_found(description: str, name: str, *, path_param: bool) -> dict[str, Any]:
    """A 404; for routes with a path parameter, also the router's own 404 (for a
    value that, decoded, changes the path's shape, such as one holding a `/`)."""
    return reply(description, one_of(name, "RouteNotFound") if path_param else ref(name))


def path_room_id() -> dict[str, Any]:
    return {
        "name": "roomId",
        "in": "path",
        "required": True,
        "description": "A room id (`abc-defg-hij`). A malformed one is answered like an unknown room.",
        "schema": string(),
        "example": "abc-defg-hij",
    }


def query(name: str, schema: Schema, description: str, required: bool = False, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema,
            **extra}


def optional_query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    """An optional query parameter that, given empty (`?limit=`), counts as not given."""
    return query(name, schema, description, allowEmptyValue=True)


def query_room_id(description: str = "The room's id.") -> dict[str, Any]:
    return query("roomId", string(minLength=1), description, required=True, example="abc-defg-hij")


def limit(default: int | None, maximum: int, what: str) -> dict[str, Any]:
    schema = integer(minimum=1, maximum=maximum, **({"default": default} if default is not None else {}))
    return optional_query("limit", schema, f"How many {what} a page holds.")


def json_body(schema_name: str, required: bool) -> dict[str, Any]:
    return {"required": required, "content": json_content(ref(schema_name))}


# --- operations ---------------------------------------------------------------


def operation(
    operation_id: str,
    summary: str,
    tag: str,
    ok: tuple[str, dict[str, Any]],
    *,
    errors: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    auth: str | None = API_KEY_SCHEME,
    description: str | None = None,
) -> dict[str, Any]:
    """An operation; `auth` names the security scheme it needs (None: open).
    The answers every such operation can give are added: 400/413/415 where
    there is a body, 401 (and 429 for API keys) where there is a scheme."""
    status, success = ok
    answers: dict[str, Any] = {status: success, **(errors or {})}
    if body is not None:
        answers.setdefault("400", response_ref("BadBody"))
        answers["413"] = response_ref("PayloadTooLarge")
        answers["415"] = response_ref("UnsupportedMediaType")
    if auth == API_KEY_SCHEME:
        answers.setdefault("401", response_ref("Unauthorized"))
        answers["429"] = response_ref("TooManyRequests")
    elif auth == ACCOUNT_SCHEME:
        answers.setdefault("401", response_ref("SignInFirst"))
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": [{auth: []}] if auth else [],
        "responses": dict(sorted(answers.items())),
    }
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    return op


def link(operation_id: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": parameters}


def meta_paths() -> dict[str, Any]:
    return {
        SDK: {
            "get": operation(
                "health", "Health check", "meta", ("200", reply("The service is up.", ref("Health"))),
                auth=None,
            )
        },
        "/jwks.json": {
            "get": operation(
                "getJwks", "Public keys that verify peer tokens", "meta",
                ("200", reply("A JSON Web Key Set.", ref("JsonWebKeySet"))),
                auth=None,
            )
        },
        "/openapi.json": {
            "get": operation(
                "getOpenApi", "This document", "meta",
                ("200", reply("The OpenAPI 3.1 document.", ref("OpenAPIDocument"))),
                auth=None,
            )
        },
    }


def live_session_paths() -> dict[str, Any]:
    return {
        f"{SDK}/live-sessions": {
            "get": operation(
                "listLiveSessions", "Live rooms of the project", "live sessions",
                ("200", reply("Live rooms, oldest session first.", ref("LiveSessionList"))),
                errors={"400": response_ref("BadQuery")},
                parameters=[
                    limit(None, live_sessions.MAX_PAGE, "live rooms"),
                    optional_query("cursor", string(),
                                   "`nextCursor` of the previous page (opaque; anything else is a 400)."),
                ],
                description="Without query parameters every live room is listed and there is no "
                "`nextCursor`; with any, the list is paged and `nextCursor` is given.",
            )
        },
        f"{SDK}/live-sessions/{{roomId}}": {
            "get": operation(
                "getLiveSession", "One live room", "live sessions",
                ("200", reply("The room is live.", ref("LiveSessionOne"))),
                errors={"404": not_found("The room is not live (or unknown).", "LiveSessionNotFound",
                                         path_param=True)},
                parameters=[
                    path_room_id(),
                    {
                        "name": "x-sdk-version",
                        "in": "header",
                        "required": False,
                        "description": "Sent by the official server SDK; when present `liveSessions` "
                        "is one object instead of a one-item list.",
                        "schema": string(),
                    },
                ],
            )
        },
        f"{SDK}/live-sessions/participants/{{roomId}}": {
            "get": operation(
                "getLiveParticipants", "Peers in a live room", "live sessions",
                ("200", reply("The peers connected now (bots excluded).", ref("LiveParticipants"))),
                errors={"404": not_found("The room is not live (or unknown).", "LiveRoomNotFound",
                                         path_param=True)},
                parameters=[path_room_id()],
            )
        },
    }


def room_paths() -> dict[str, Any]:
    room_links = {
        "getRoomDetails": link("getRoomDetails", roomId="$response.body#/data/roomId"),
        "getRoomMetadata": link("getRoomMetadata", roomId="$response.body#/data/roomId"),
        "updateRoomMetadata": link("updateRoomMetadata", roomId="$response.body#/data/roomId"),
        "getSessionDetails": link("getSessionDetails", roomId="$response.body#/data/roomId"),
        "validateRoom": link("validateRoom", roomId="$response.body#/data/roomId"),
    }
    room_gone = not_found("No such room in the project.", "RoomNotFound", path_param=True)
    room_gone_query = not_found("No such room in the project.", "RoomNotFound", path_param=False)

    def metadata_ops(suffix: str, parameter: dict[str, Any], gone: dict[str, Any]) -> dict[str, Any]:
        bad = {"400": response_ref("BadQueryOrBody")} if parameter["in"] == "query" else {}
        read_bad = {"400": response_ref("BadQuery")} if parameter["in"] == "query" else {}
        return {
            "get": operation(
                f"getRoomMetadata{suffix}", "A room's metadata", "rooms",
                ("200", reply("The metadata ({} when none was set).", ref("MetadataResponse"))),
                errors={"404": gone, **read_bad},
                parameters=[parameter],
            ),
            "post": operation(
                f"updateRoomMetadata{suffix}", "Replace a room's metadata", "rooms",
                ("200", reply("The metadata now stored.", ref("MetadataResponse"))),
                errors={"404": gone, **bad},
                parameters=[parameter],
                body=json_body("MetadataRequest", required=True),
                description="The room is looked up before the body is read: an unknown room is a 404 "
                "whatever the body.",
            ),
        }

    return {
        f"{SDK}/rooms/create-room": {
            "post": operation(
                "createRoom", "Create a room", "rooms",
                ("201", reply("The room was created.", ref("RoomCreated"), links=room_links)),
                body=json_body("CreateRoomRequest", required=False),
                description="An empty body creates an unlocked room without metadata.",
            )
        },
        f"{SDK}/rooms/get-rooms": {
            "get": operation(
                "getRooms", "The project's rooms, a page at a time", "rooms",
                ("200", reply("A page of rooms, newest first.", ref("RoomPage"))),
                errors={"400": response_ref("BadQuery")},
                parameters=[
                    limit(ROOMS_PAGE_DEFAULT, rooms.MAX_PAGE, "rooms"),
                    optional_query("cursor", integer(minimum=1, maximum=ROOMS_PAGE_CURSOR_MAX, default=1),
                          "The page number, from 1."),
                ],
            )
        },
        f"{SDK}/rooms/room-details/{{roomId}}": {
            "get": operation(
                "getRoomDetails", "One room", "rooms",
                ("200", reply("The room.", ref("RoomDetails"))),
                errors={"404": room_gone},
                parameters=[path_room_id()],
            )
        },
        f"{SDK}/rooms/metadata/{{roomId}}": metadata_ops("", path_room_id(), room_gone),
        f"{SDK}/rooms/metadata": metadata_ops("ByQuery", query_room_id(), room_gone_query),
        f"{SDK}/validate-room": {
            "get": operation(
                "validateRoom", "Whether a room exists in the project", "rooms",
                ("200", reply("`validated` tells whether the project has the room.", ref("RoomValidation"))),
                errors={"400": response_ref("BadQuery")},
                parameters=[query_room_id()],
            )
        },
    }


def history_paths() -> dict[str, Any]:
    participants = operation(
        "getParticipantList", "Who took part in a session", "session history",
        ("200", reply("Every stint of every peer, in join order.", ref("ParticipantList"))),
        errors={
            "400": response_ref("BadQuery"),
            "404": not_found("No such session in the project.", "SessionNotFound", path_param=False),
        },
        parameters=[query("sessionId", string(minLength=1), "The session's id.", required=True)],
    )
    return {
        f"{SDK}/rooms/session-details": {
            "get": operation(
                "getSessionDetails", "A room's sessions", "session history",
                ("200", reply("A page of the room's sessions, newest first.", ref("SessionPage"))),
                errors={
                    "400": response_ref("BadQuery"),
                    "404": not_found("No such room in the project.", "RoomNotFound", path_param=False),
                },
                parameters=[
                    query_room_id(),
                    limit(SESSIONS_PAGE_DEFAULT, history.MAX_PAGE, "sessions"),
                    optional_query("cursor", integer(minimum=1, maximum=SESSIONS_CURSOR_MAX),
                          "`nextCursor` of the previous page."),
                ],
            )
        },
        f"{SDK}/rooms/participant-list": {"get": participants},
        f"{SDK}/rooms/participant-lists": {
            "get": {**participants, "operationId": "getParticipantLists",
                    "summary": "Who took part in a session (alias of participant-list)"}
        },
        f"{SDK}/metrics": {
            "get": operation(
                "getMetrics", "The project's totals", "session history",
                ("200", reply("Totals over every session of the project.", ref("Metrics"))),
            )
        },
    }


def peer_token_paths() -> dict[str, Any]:
    return {
        f"{SDK}/create-peer-token": {
            "post": operation(
                "createPeerToken", "A token that lets one peer join one room", "peers",
                ("200", reply("A signed peer token, for `/ws?token=`.", ref("PeerToken"))),
                errors={"404": not_found("No such room in the project.", "RoomNotFound", path_param=False)},
                body=json_body("CreatePeerTokenRequest", required=True),
            )
        },
    }


def egress_paths() -> dict[str, Any]:
    room_gone = not_found("No such room in the project.", "RoomNotFound", path_param=False)
    refused = reply("The room is not live (only a live room can be recorded or streamed), or a job of "
                    "this type is already active.", ref("ErrorMessage"))
    return {
        f"{V1}/recording/start": {
            "post": operation(
                "startRecording", "Start a recording or a livestream of a live room", "recordings",
                ("200", reply("The job started.", ref("EgressStarted"))),
                errors={
                    "401": reply("Missing or unknown `x-api-key`, or the peer token is invalid or not for "
                                 "this room.", one_of("Unauthorized", "ErrorMessage")),
                    "404": room_gone,
                    "409": refused,
                },
                body=json_body("StartEgressRequest", required=True),
            )
        },
        f"{V1}/recording/stop": {
            "post": operation(
                "stopRecording", "Stop a room's recording or livestream", "recordings",
                ("200", reply("The job stopped.", ref("EgressStopped"))),
                errors={
                    "404": reply("No such room in the project, or nothing of that type is active in it.",
                                 one_of("RoomNotFound", "ErrorMessage")),
                    "409": reply("Both a recording and a livestream are active and `type` was not given.",
                                 ref("ErrorMessage")),
                },
                body=json_body("StopEgressRequest", required=True),
            )
        },
        f"{V1}/recording/status": {
            "get": operation(
                "getRecordingStatus", "Whether a room is being recorded or streamed", "recordings",
                ("200", reply("The room's egress now.", ref("EgressStatus"))),
                errors={"400": response_ref("BadQuery"), "404": room_gone},
                parameters=[query_room_id()],
            )
        },
        f"{SDK}/recordings": {
            "get": operation(
                "listRecordings", "Finished recordings of the project", "recordings",
                ("200", reply("A page of finished recordings, newest first.", ref("RecordingPage"))),
                errors={"400": response_ref("BadQuery")},
                parameters=[
                    optional_query("sessionId", string(), "Only this session's recordings."),
                    limit(RECORDINGS_PAGE_DEFAULT, egress.MAX_PAGE, "recordings"),
                    optional_query("cursor", integer(minimum=1, maximum=SESSIONS_CURSOR_MAX),
                           "`nextCursor` of the previous page."),
                ],
            )
        },
        f"{V1}/recordings/{{jobId}}/download": {
            "get": operation(
                "downloadRecording", "Download a recording (a signed link from the recordings list)",
                "recordings",
                (
                    "200",
                    {
                        "description": "The room's timeline as JSON Lines: one "
                        '`{"t": <epoch ms>, "event": <message as peers got it>}` a line.',
                        "headers": {
                            "Content-Disposition": {"schema": string(pattern="^attachment; ")},
                            "Content-Length": {"schema": integer(minimum=0)},
                        },
                        "content": {"application/x-ndjson": {"schema": string()}},
                    },
                ),
                errors={
                    "400": response_ref("BadQuery"),
                    "403": reply("The link is not valid or has expired.", ref("ErrorMessage")),
                    "404": not_found("No such finished recording.", "RecordingNotFound", path_param=True),
                },
                parameters=[
                    {"name": "jobId", "in": "path", "required": True, "schema": string()},
                    optional_query("expires", integer(minimum=0, maximum=2**62),
                           "When the link stops working, epoch seconds (part of the signed link)."),
                    query("signature", string(), "The link's signature."),
                ],
                auth=None,
            )
        },
        "/live/{playbackId}": {
            "get": operation(
                "watchLivestream", "Watch a livestream", "recordings",
                (
                    "200",
                    {
                        "description": "Server-Sent Events: each `data:` is a message of the room's timeline "
                        "as peers get it; `event: end` when the livestream ends; comments keep it alive.",
                        "content": {"text/event-stream": {"schema": string()}},
                    },
                ),
                errors={
                    "404": not_found("No such livestream.", "LivestreamNotFound", path_param=True),
                    "410": reply("The livestream has ended.", ref("LivestreamEnded")),
                },
                parameters=[{"name": "playbackId", "in": "path", "required": True, "schema": string(),
                             "description": "The last part of a livestream's `playbackUrl`."}],
                auth=None,
            )
        },
    }


def worker_paths() -> dict[str, Any]:
    job_id = {"name": "jobId", "in": "path", "required": True, "schema": string()}
    refused = reply("The job is claimed by another worker, finished, or no longer claimable; or this "
                    "worker does not hold it (its lease may have run out).", ref("ErrorMessage"))
    missing = not_found("No such job in the project.", "JobNotFound", path_param=True)

    def step(name: str, summary: str, body: str) -> dict[str, Any]:
        return {
            "post": operation(
                f"{name}WorkerJob", summary, "workers",
                ("200", reply("The job now.", ref("WorkerJobReply"))),
                errors={"404": missing, "409": refused},
                parameters=[job_id],
                body=json_body(body, required=True),
            )
        }

    return {
        f"{V1}/workers/jobs": {
            "get": operation(
                "listWorkerJobs", "Jobs whose media part is in a given state", "workers",
                ("200", reply("Jobs, oldest first.", ref("WorkerJobList"))),
                errors={"400": response_ref("BadQuery")},
                parameters=[
                    query("status", {**ref("MediaStatus"), "default": "pending"}, "The media state to list."),
                    limit(WORKER_JOBS_PAGE_DEFAULT, WORKER_JOBS_PAGE_MAX, "jobs"),
                ],
            )
        },
        f"{V1}/workers/jobs/{{jobId}}/claim": step(
            "claim", "Claim a job's media part (a lease, renewed by progress reports)", "ClaimRequest"),
        f"{V1}/workers/jobs/{{jobId}}/progress": step(
            "progress", "Report progress on a claimed job (renews the lease)", "ProgressRequest"),
        f"{V1}/workers/jobs/{{jobId}}/complete": step(
            "complete", "Report a claimed job's media file done", "CompleteRequest"),
    }


def account_paths() -> dict[str, Any]:
    page = {
        "get": operation(
            "connectPage", "The page where a person connects a wallet to get an API key", "accounts",
            (
                "200",
                {
                    "description": "An HTML page.",
                    "headers": {"Cache-Control": {"schema": const("no-cache")}},
                    "content": {"text/html": {"schema": string()}},
                },
            ),
            auth=None,
        )
    }
    return {
        "/": page,
        "/connect": {"get": {**page["get"], "operationId": "connectPageAlias"}},
        "/api/v2/auth/nonce": {
            "get": operation(
                "getNonce", "A nonce for a sign-in message (and the message, given an address)", "accounts",
                ("200", reply("A fresh nonce.", ref("Nonce"))),
                errors={
                    "400": reply("`address` is not an Ethereum address, or `chainId` is out of range.",
                                 one_of("ErrorMessage", "ValidationError")),
                    "429": response_ref("TooManySignIns"),
                },
                parameters=[
                    query("address", string(pattern="^0x[0-9a-fA-F]{40}$"),
                          "The wallet that will sign: the answer then holds the message to sign."),
                    optional_query("chainId", integer(minimum=1, maximum=2**53),
                                   "The chain the message names (with `address`; default: the first allowed)."),
                ],
                auth=None,
            )
        },
        "/api/v2/auth/verify": {
            "post": operation(
                "verifySignIn", "Exchange a signed sign-in message for an account session", "accounts",
                ("200", reply("Signed in.", ref("SignedIn"))),
                errors={
                    "400": reply("The body is invalid, or the message or signature is malformed.",
                                 one_of("ValidationError", "ErrorMessage")),
                    "401": reply("The signature, domain, URI, chain, times or nonce do not check out.",
                                 ref("ErrorMessage")),
                    "429": response_ref("TooManySignIns"),
                },
                body=json_body("VerifyRequest", required=True),
                auth=None,
            )
        },
        "/api/v2/auth/logout": {
            "post": operation(
                "signOut", "End this account session (or, with `everywhere`, all of the wallet's)", "accounts",
                ("204", {"description": "Signed out: the token stops working at once. API keys are not affected."}),
                body=json_body("SignOutRequest", required=False),
                auth=ACCOUNT_SCHEME,
            )
        },
        "/api/v2/keys": {
            "get": operation(
                "listApiKeys", "The project's API keys (masked)", "accounts",
                ("200", reply("The keys that work.", ref("ApiKeyList"))),
                auth=ACCOUNT_SCHEME,
            ),
            "post": operation(
                "createApiKey", "A new API key for the project", "accounts",
                ("201", reply("The new key; shown only now.", ref("NewKey"))),
                body=json_body("NewKeyRequest", required=True),
                auth=ACCOUNT_SCHEME,
            ),
        },
        "/api/v2/keys/{keyId}": {
            "delete": operation(
                "revokeApiKey", "Revoke one of the project's API keys", "accounts",
                ("204", {"description": "Revoked: the key stops working at once."}),
                errors={"404": not_found("No such key in the project.", "KeyNotFound", path_param=True)},
                parameters=[{"name": "keyId", "in": "path", "required": True, "schema": string()}],
                auth=ACCOUNT_SCHEME,
            )
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "livesessions",
            "version": __version__,
            "summary": "Self-hosted, wire-compatible Huddle01 Live Sessions API",
            "description": DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "live sessions", "description": "Which rooms are live, since when, and who is inside."},
            {"name": "rooms", "description": "Create and read rooms and their metadata."},
            {"name": "session history", "description": "Past and present sessions and their participants."},
            {"name": "peers", "description": "Tokens that admit peers to rooms."},
            {"name": "recordings", "description": "Recordings and livestreams of live rooms."},
            {"name": "workers", "description": "External media workers take the audio/video part of jobs."},
            {"name": "accounts", "description": "Wallet sign-in and the project's API keys."},
            {"name": "meta", "description": "The service itself."},
        ],
        "paths": {
            **meta_paths(),
            **live_session_paths(),
            **room_paths(),
            **history_paths(),
            **peer_token_paths(),
            **egress_paths(),
            **worker_paths(),
            **account_paths(),
        },
        "components": {
            "schemas": schemas(),
            "responses": responses(),
            "securitySchemes": {
                API_KEY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "A project API key (from a wallet sign-in or `livesessions keys create`).",
                },
                ACCOUNT_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The short-lived `token` of a wallet sign-in (POST /api/v2/auth/verify).",
                },
            },
        },
    }
