"""Routes about the service itself: health, token verification keys, its API
document, and the page where a person connects a wallet."""

from __future__ import annotations

from importlib import resources

from livesessions import __version__
from livesessions.http.core import JSONResponse, Request, Response, Router
from livesessions.http.openapi import openapi_document
from livesessions.services import Services


def register(router: Router, services: Services) -> None:
    health = JSONResponse({"ok": True, "message": f"livesessions {__version__} is running"})
    jwks = JSONResponse(services.signer.jwks)
    openapi = JSONResponse(openapi_document())

    async def get_health(request: Request) -> Response:
        return health

    async def get_jwks(request: Request) -> Response:
        return jwks

    async def get_openapi(request: Request) -> Response:
        return openapi

    page = Response(200, resources.files("livesessions.web").joinpath("connect.html").read_bytes(),
                    [(b"cache-control", b"no-cache")], b"text/html; charset=utf-8")

    async def get_page(request: Request) -> Response:
        return page

    router.add("GET", "/", get_page, auth="none")
    router.add("GET", "/connect", get_page, auth="none")
    router.add("GET", "/api/v2/sdk", get_health, auth="none")
    router.add("GET", "/jwks.json", get_jwks, auth="none")
    router.add("GET", "/openapi.json", get_openapi, auth="none")
