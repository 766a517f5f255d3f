"""Routes about the service itself: health and readiness, token verification
keys, its API document and reference page, and the pages a person uses: the
dashboard of a project's live sessions, and the page that manages its API keys
(both signed in with a wallet)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated, Any, Literal

import msgspec

from livesessions import __version__
from livesessions.auth.peer_tokens import PeerTokenSigner
from livesessions.domain.ports import Presence, Store
from livesessions.http.core import Request
from livesessions.http.errors import ROUTE_NOT_FOUND, Abort, RouteNotFound
from livesessions.http.responses import Out, Response, json_response
from livesessions.http.routing import Handler, Operation, PathParam, Reply
from livesessions.telemetry import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from livesessions.telemetry import Telemetry

log = logging.getLogger(__name__)

TAG = "meta"
# A database slower than this to answer a trivial query is as good as down.
READINESS_TIMEOUT_S = 2.0
HTML = b"text/html; charset=utf-8"
JS = b"text/javascript; charset=utf-8"
CSS = b"text/css; charset=utf-8"
# The reference page runs only what this service serves: scripts and styles
# from here (Swagger UI sets inline styles), pictures from here or inline.
DOCS_POLICY = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    b"object-src 'none'; frame-ancestors 'none'"
)
# /docs/<name>: the file in livesessions.web, and its content type.
DOCS_ASSETS = {
    "docs.js": ("docs.js", JS),
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", JS),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", CSS),
}
# The dashboard runs only its own files from here, talks only to this service
# (fetch), and has no inline script or style: room and peer metadata on it
# come from whoever made the room or holds a peer token, and this policy keeps
# a mistake in showing them from running anything. (Its icon is an empty
# data: URL, so that the browser does not ask for one.)
DASHBOARD_POLICY = (
    b"default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    b"form-action 'self'; frame-ancestors 'none'"
)
# /assets/<name>: the pages' own scripts and style sheet. Revalidated on every
# load (no-cache), like the pages: a page and its scripts change together.
PAGE_ASSETS = {
    "dashboard.js": ("dashboard.js", JS),
    "dashboard.css": ("dashboard.css", CSS),
    "signin.js": ("signin.js", JS),
}
Base64Url = Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_-]+$")]


class Health(Out):
    ok: Literal[True]
    message: Annotated[str, msgspec.Meta(examples=[f"livesessions {__version__} is running"])]


class Alive(Out):
    """The process is up (and so is its event loop)."""

    ok: Literal[True]


class NotReady(Out):
    """What does not answer; the process is up but should get no traffic."""

    ok: Literal[False]
    failed: list[Literal["database", "presence"]]
    message: str


class JsonWebKey(Out):
    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: Base64Url
    y: Base64Url
    use: Literal["sig"]
    alg: Literal["ES256"]
    kid: Annotated[Base64Url, msgspec.Meta(description="RFC 7638 thumbprint of the key.")]


class JsonWebKeySet(Out):
    keys: Annotated[list[JsonWebKey], msgspec.Meta(min_length=1)]


class OpenAPIDocument(msgspec.Struct):
    """An OpenAPI 3.1 document (see the OpenAPI specification for its fields)."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


HEALTH = json_response(200, Health(ok=True, message=f"livesessions {__version__} is running"))
ALIVE = json_response(200, Alive(ok=True))


@functools.cache
def _web_file(name: str, content_type: bytes, cache_control: bytes, *extra: tuple[bytes, bytes]) -> Response:
    """A file of livesessions.web, read once, on first use."""
    body = resources.files("livesessions.web").joinpath(name).read_bytes()
    return Response(200, body, [(b"cache-control", cache_control), *extra], content_type)


async def get_health(request: Request) -> Response:
    return HEALTH


async def liveness(request: Request) -> Response:
    return ALIVE


async def readiness(request: Request, store: Store, presence: Presence) -> Response:
    failed: list[Literal["database", "presence"]] = []
    why = []
    checks: tuple[tuple[Literal["database", "presence"], Callable[[], Awaitable[None]]], ...] = (
        ("database", store.ping),
        ("presence", presence.ping),
    )
    for name, check in checks:
        try:
            await asyncio.wait_for(check(), READINESS_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is not answering
            log.warning("readiness: the %s did not answer: %r", name, exc)
            failed.append(name)
            why.append(f"the {name} did not answer ({type(exc).__name__})")
    if failed:
        return json_response(503, NotReady(ok=False, failed=failed, message="; ".join(why)))
    return ALIVE


async def get_metrics(request: Request, telemetry: Telemetry) -> Response:
    return Response(200, await telemetry.render(), [(b"cache-control", b"no-store")], PROMETHEUS_CONTENT_TYPE.encode())


async def get_jwks(request: Request, signer: PeerTokenSigner) -> Response:
    return _jwks(signer)


@functools.cache
def _jwks(signer: PeerTokenSigner) -> Response:
    """The key set, checked and encoded once: it never changes while serving."""
    return json_response(200, msgspec.convert(signer.jwks, JsonWebKeySet))


async def get_openapi(request: Request, api_document: Response) -> Response:
    return api_document


async def dashboard_page(request: Request) -> Response:
    return _web_file("dashboard.html", HTML, b"no-cache", (b"content-security-policy", DASHBOARD_POLICY))


async def connect_page(request: Request) -> Response:
    return _web_file("connect.html", HTML, b"no-cache")


async def docs_page(request: Request) -> Response:
    return _web_file("docs.html", HTML, b"no-cache", (b"content-security-policy", DOCS_POLICY))


async def docs_asset(request: Request) -> Response:
    return _asset(request, DOCS_ASSETS, b"public, max-age=3600")


async def page_asset(request: Request) -> Response:
    return _asset(request, PAGE_ASSETS, b"no-cache")


def _asset(request: Request, assets: dict[str, tuple[str, bytes]], cache_control: bytes) -> Response:
    found = assets.get(request.path_params["asset"])
    if found is None:
        raise Abort(ROUTE_NOT_FOUND)
    name, content_type = found
    return _web_file(name, content_type, cache_control)


def _page(path: str, handler: Handler, operation_id: str, summary: str) -> Operation:
    return Operation(
        "GET",
        path,
        handler,
        operation_id,
        summary,
        "accounts",
        auth="none",
        answer=Reply(
            "An HTML page.", media_types=("text/html",), headers={"Cache-Control": {"schema": {"const": "no-cache"}}}
        ),
    )


OPERATIONS: tuple[Operation, ...] = (
    _page(
        "/",
        dashboard_page,
        "dashboardPage",
        "The dashboard of a wallet's project: live sessions, rooms, recordings and webhooks",
    ),
    _page("/connect", connect_page, "connectPage", "The page where a person connects a wallet to manage API keys"),
    Operation(
        "GET",
        "/api/v2/sdk",
        get_health,
        "health",
        "Health check",
        TAG,
        auth="none",
        answer=Reply("The service is up.", Health),
    ),
    Operation(
        "GET",
        "/healthz",
        liveness,
        "liveness",
        "Whether the process is up",
        TAG,
        auth="none",
        answer=Reply("The process is up.", Alive),
        description="For a supervisor's liveness probe: answers as long as the process serves requests at all.",
    ),
    Operation(
        "GET",
        "/readyz",
        readiness,
        "readiness",
        "Whether the service can serve requests",
        TAG,
        auth="none",
        answer=Reply("The database answers, and presence (scaled out: Redis, and this node's lease).", Alive),
        errors={503: Reply("Something the service needs does not answer; `failed` names it.", NotReady)},
        description="For a load balancer's readiness probe: 200 while the database answers a trivial query "
        "and (scaled out) Redis answers and this node holds its lease.",
    ),
    Operation(
        "GET",
        "/metrics",
        get_metrics,
        "metrics",
        "Prometheus metrics",
        TAG,
        auth="none",
        answer=Reply("The service's metrics in Prometheus' text format.", media_types=("text/plain",)),
        description="Live rooms and peers, joins, leaves and refusals by reason, peers cut off, WebSocket "
        "messages in and out, HTTP requests by route and status with latency histograms, database write-queue "
        "depth and commit times, active recordings and livestreams, wallet sign-ins by outcome. Behind a "
        "public proxy, keep it for your monitoring (deploy/nginx.conf does).",
    ),
    Operation(
        "GET",
        "/jwks.json",
        get_jwks,
        "getJwks",
        "Public keys that verify peer tokens",
        TAG,
        auth="none",
        answer=Reply("A JSON Web Key Set.", JsonWebKeySet),
    ),
    Operation(
        "GET",
        "/openapi.json",
        get_openapi,
        "getOpenApi",
        "This document",
        TAG,
        auth="none",
        answer=Reply("The OpenAPI 3.1 document.", OpenAPIDocument),
    ),
    Operation(
        "GET",
        "/docs",
        docs_page,
        "docsPage",
        "This document as an interactive reference (Swagger UI)",
        TAG,
        auth="none",
        answer=Reply("An HTML page.", media_types=("text/html",)),
    ),
    Operation(
        "GET",
        "/docs/{asset}",
        docs_asset,
        "docsAsset",
        "A script or style sheet of the reference page",
        TAG,
        auth="none",
        answer=Reply("The file.", media_types=("text/javascript", "text/css")),
        errors={404: Reply("The page has no such file.", RouteNotFound)},
        path_params=(PathParam("asset", "The file's name.", "docs.js"),),
    ),
    Operation(
        "GET",
        "/assets/{asset}",
        page_asset,
        "pageAsset",
        "A script or style sheet of the dashboard and the connect page",
        "accounts",
        auth="none",
        answer=Reply("The file.", media_types=("text/javascript", "text/css")),
        errors={404: Reply("The pages have no such file.", RouteNotFound)},
        path_params=(PathParam("asset", "The file's name.", "dashboard.js"),),
    ),
)
