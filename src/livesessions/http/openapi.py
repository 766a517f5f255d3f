"""The OpenAPI 3.1 document, generated from the route tables.

Every schema in it comes from the msgspec Structs the handlers decode bodies
into and encode answers from (`msgspec.json.schema_components`); every
operation from its declaration in livesessions.http.routes; the answers any
operation can give (a bad body, a missing key, a rate limit, the router's own
404) are added here by what the operation takes and who may call it. What is
left is prose. `python -m livesessions.http.openapi` prints it (the copy in
docs/openapi.json is that output).
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from collections.abc import Iterable
from typing import Any

import msgspec

from livesessions import __version__
from livesessions.config import Settings
from livesessions.http.errors import BadApiKey, ErrorMessage, MethodNotAllowed, RouteNotFound, SignInFirst
from livesessions.http.routes import OPERATIONS
from livesessions.http.routing import Operation, Reply
from livesessions.http.validation import ValidationError
from livesessions.realtime.protocol import CLOSE_MEANING, SERVER_TYPES, TYPES

Document = dict[str, Any]

SDK = "/api/v2/sdk"
V1 = "/api/v1"
JSON = "application/json"
API_KEY_SCHEME = "apiKey"
ACCOUNT_SCHEME = "accountSession"
MAX_BODY_BYTES = Settings().max_body_bytes


def _types(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _close_codes() -> str:
    return "; ".join(f"{int(code)} {meaning}" for code, meaning in CLOSE_MEANING.items())


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
  {MAX_BODY_BYTES} bytes by default (`--max-body-bytes`; otherwise 413). A missing or malformed JSON body is
  400 `{{"ok": false, "message"}}`; a body or query parameter that fails
  validation is 400 `{{"success": false, "error": {{"issues": [...]}}}}`
  (zod-style issues).
* A path that matches no route is 404 `{{"ok": false, "message": "Not Found"}}`;
  a known path with another method is 405 `{{"ok": false, "message": "Method Not Allowed"}}`
  with an `Allow` header (components `RouteNotFound`, `MethodNotAllowed`).
* `GET /healthz` answers while the process is up; `GET /readyz` while the
  database answers too (503 otherwise). This document is also a page, `/docs`.
* Scaled out (many nodes on one PostgreSQL and one Redis), any node answers
  every route as if every peer were connected to it; while Redis or
  PostgreSQL cannot be reached, routes answer 503 `{{"ok": false, "message"}}`
  with `Retry-After` rather than a wrong count, and a joining peer is closed
  with 1013.

Peers join rooms over a WebSocket at `/ws?token=<peer token>` (a token from
`POST {SDK}/create-peer-token`; its signature is checked with the keys at
`GET /jwks.json`). That WebSocket is not described here: JSON text frames
{_types(SERVER_TYPES)} from the server; {_types(TYPES)} from the peer. Close codes:
{_close_codes()}.
"""

TAGS = (
    ("live sessions", "Which rooms are live, since when, and who is inside."),
    ("rooms", "Create and read rooms and their metadata."),
    ("session history", "Past and present sessions and their participants."),
    ("peers", "Tokens that admit peers to rooms."),
    ("recordings", "Recordings and livestreams of live rooms."),
    ("workers", "External media workers take the audio/video part of jobs."),
    ("accounts", "Wallet sign-in and the project's API keys."),
    ("meta", "The service itself."),
)

RETRY_AFTER = {
    "description": "Seconds to wait.",
    "required": True,
    "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
}

# Answers that operations share, by name (components/responses), and when
# each applies: added by `_answers` to every operation they concern.
BAD_QUERY = Reply("A required query parameter is missing or one is out of range.", ValidationError)
BAD_BODY = Reply(
    "The body failed validation, is not JSON, or (where a body is required) is empty.", ValidationError | ErrorMessage
)
BAD_QUERY_OR_BODY = Reply(
    "A query parameter or the body is invalid, or the body is not JSON or is missing.", ValidationError | ErrorMessage
)
TOO_LARGE = Reply(f"The body is larger than {MAX_BODY_BYTES} bytes.", ErrorMessage)
NOT_JSON = Reply("A body was sent without `Content-Type: application/json`.", ErrorMessage)
NO_API_KEY = Reply("Missing or unknown `x-api-key`.", BadApiKey)
TOO_MANY = Reply(
    "The API key made more requests than its rate limit allows; retry after `Retry-After` seconds.",
    ErrorMessage,
    headers={"Retry-After": RETRY_AFTER},
)
UNAVAILABLE = Reply(
    "Scale-out mode only: Redis or PostgreSQL cannot be reached right now, so no answer is given rather than a "
    "wrong one; nothing was changed. Retry after `Retry-After` seconds.",
    ErrorMessage,
    headers={"Retry-After": RETRY_AFTER},
)
SIGN_IN = Reply(
    "No valid account session: sign in with a wallet first.",
    SignInFirst,
    headers={"WWW-Authenticate": {"required": True, "schema": {"const": "Bearer"}}},
)
KEY_OR_SIGN_IN = Reply(
    "Neither a known `x-api-key` nor (without one) a valid account session (`Authorization: Bearer`).",
    BadApiKey | SignInFirst,
)
NO_ROUTE = Reply("No route has this path (a path parameter holding a `/` changes the path's shape).", RouteNotFound)
NOT_ALLOWED = Reply(
    "The path exists, but not with this method.",
    MethodNotAllowed,
    headers={"Allow": {"description": "The methods the path has.", "schema": {"type": "string"}}},
)
SHARED = {
    "BadQuery": BAD_QUERY,
    "BadBody": BAD_BODY,
    "BadQueryOrBody": BAD_QUERY_OR_BODY,
    "PayloadTooLarge": TOO_LARGE,
    "UnsupportedMediaType": NOT_JSON,
    "Unauthorized": NO_API_KEY,
    "TooManyRequests": TOO_MANY,
    "SignInFirst": SIGN_IN,
    "RouteNotFound": NO_ROUTE,
    "MethodNotAllowed": NOT_ALLOWED,
}
_SHARED_NAMES = {id(reply): name for name, reply in SHARED.items()}
_PLACEHOLDER = re.compile(r"\{([^}]+)\}")


def openapi_document(operations: tuple[Operation, ...] = OPERATIONS) -> Document:
    schemas = _Schemas(_body_types(operations))
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "livesessions",
            "version": __version__,
            "summary": "Self-hosted, wire-compatible Huddle01 Live Sessions API",
            "description": DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [{"name": name, "description": description} for name, description in TAGS],
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "responses": {name: _reply(reply, schemas) for name, reply in SHARED.items()},
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


def document_text(document: Document) -> str:
    """The document as written to docs/openapi.json."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


class _Schemas:
    """JSON Schemas of body types, all generated in one go so that each Struct
    is one component, referred to wherever it is used."""

    def __init__(self, types: list[Any]) -> None:
        generated, self.components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
        self._by_type: dict[Any, Document] = dict(zip(types, generated, strict=True))

    def of(self, kind: Any) -> Document:
        """A type's schema; a union of answers is any of its members' (they
        may overlap: the router's 404 is also an ErrorMessage)."""
        members = _members(kind)
        if len(members) == 1:
            return self._by_type[kind]
        return {"anyOf": [self._by_type[member] for member in members]}


def _body_types(operations: Iterable[Operation]) -> list[Any]:
    found: dict[Any, None] = {}  # ordered, without repeats
    replies = [*SHARED.values()]
    for operation in operations:
        if operation.body is not None:
            found[operation.body] = None
        if operation.returns is not None:
            found.update(dict.fromkeys(_members(operation.returns)))
        replies.extend(operation.errors.values())
    for reply in replies:
        if reply.body is not None:
            found.update(dict.fromkeys(_members(reply.body)))
    return list(found)


def _operation(operation: Operation, schemas: _Schemas) -> Document:
    schemes: dict[str, list[Document]] = {
        "api_key": [{API_KEY_SCHEME: []}],
        "account": [{ACCOUNT_SCHEME: []}],
        "key_or_account": [{API_KEY_SCHEME: []}, {ACCOUNT_SCHEME: []}],
        "none": [],
    }
    security = schemes[operation.auth]
    document: Document = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "security": security,
        "responses": _answers(operation, schemas),
    }
    if operation.description:
        document["description"] = operation.description
    parameters = [*_path_parameters(operation), *(param.document() for param in operation.query), *operation.headers]
    if parameters:
        document["parameters"] = parameters
    if operation.body is not None:
        document["requestBody"] = {
            "required": operation.body_required,
            "content": {JSON: {"schema": schemas.of(operation.body)}},
        }
    return document


def _answers(operation: Operation, schemas: _Schemas) -> Document:
    """The operation's own answers, and those it gives by what it takes
    (a query, a body, path parameters) and who may call it."""
    success = Reply(
        operation.answer.description,
        operation.returns,
        operation.answer.media_types,
        operation.answer.headers,
        operation.answer.links,
    )
    answers: dict[int, Reply] = {operation.status: success, **operation.errors}
    implied: dict[int, Reply] = {}
    if operation.query and operation.body is not None:
        implied[400] = BAD_QUERY_OR_BODY
    elif operation.query:
        implied[400] = BAD_QUERY
    elif operation.body is not None:
        implied[400] = BAD_BODY
    if operation.body is not None:
        implied[413] = TOO_LARGE
        implied[415] = NOT_JSON
    if "{" in operation.path:
        implied[404] = NO_ROUTE
    if operation.auth in ("api_key", "key_or_account"):
        implied[401] = NO_API_KEY if operation.auth == "api_key" else KEY_OR_SIGN_IN
        implied[429] = TOO_MANY
    elif operation.auth == "account":
        implied[401] = SIGN_IN
    if operation.auth != "none":
        implied[503] = UNAVAILABLE
    for status, reply in implied.items():
        answers[status] = _merge(answers[status], reply) if status in answers else reply
    return {str(status): _answer(answers[status], schemas) for status in sorted(answers)}


def _merge(own: Reply, implied: Reply) -> Reply:
    """An operation's own answer with a status, widened by what every such
    operation may also answer with it."""
    return Reply(
        own.description, _union(own.body, implied.body), own.media_types, {**implied.headers, **own.headers}, own.links
    )


def _union(first: Any, second: Any) -> Any:
    members = [*_members(first), *(kind for kind in _members(second) if kind not in _members(first))]
    union = members[0]
    for kind in members[1:]:
        union = union | kind
    return union


def _members(kind: Any) -> tuple[Any, ...]:
    """The types of a union of answers (msgspec takes no union of untagged Structs)."""
    return typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)


def _answer(reply: Reply, schemas: _Schemas) -> Document:
    """A shared answer by reference; any other in full."""
    name = _SHARED_NAMES.get(id(reply))
    return {"$ref": f"#/components/responses/{name}"} if name else _reply(reply, schemas)


def _reply(reply: Reply, schemas: _Schemas) -> Document:
    document: Document = {"description": reply.description}
    if reply.headers:
        document["headers"] = dict(reply.headers)
    if reply.body is not None or reply.media_types != ("application/json",):
        document["content"] = {
            media_type: {"schema": schemas.of(reply.body) if media_type == JSON else {"type": "string"}}
            for media_type in reply.media_types
        }
    if reply.links:
        document["links"] = dict(reply.links)
    return document


def _path_parameters(operation: Operation) -> list[Document]:
    declared = {param.name: param for param in operation.path_params}
    parameters = []
    for name in _PLACEHOLDER.findall(operation.path):
        parameter: Document = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        param = declared.get(name)
        if param is not None and param.description:
            parameter["description"] = param.description
        if param is not None and param.example:
            parameter["example"] = param.example
        parameters.append(parameter)
    return parameters


def main() -> None:
    sys.stdout.write(document_text(openapi_document()))


if __name__ == "__main__":
    main()
