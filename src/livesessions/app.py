"""The ASGI application: HTTP routes, the peer WebSocket, and the lifespan
that recovers from the last run and keeps sessions tidy while serving."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from livesessions.auth import siwe
from livesessions.domain.errors import Refused, Unavailable
from livesessions.domain.values import NUL_REFUSED, holds_nul
from livesessions.http.core import ClientDisconnected, Request, Route, Router
from livesessions.http.errors import (
    BAD_API_KEY,
    INTERNAL_ERROR,
    SIGN_IN_FIRST,
    UNAVAILABLE,
    Abort,
    answer_refused,
    refusal,
    too_many,
)
from livesessions.http.openapi import openapi_document
from livesessions.http.responses import Receive, Response, Send, encode
from livesessions.http.routes import OPERATIONS
from livesessions.http.routes.live_sessions import LiveListings
from livesessions.http.routing import build_router
from livesessions.logs import context
from livesessions.loop_health import LagProbe
from livesessions.realtime.peer_socket import PeerSocket
from livesessions.realtime.protocol import CloseCode
from livesessions.services import Services

log = logging.getLogger(__name__)

KEY_OVER_LIMIT = "Too many requests for this API key; slow down"
ADDRESS_OVER_LIMIT = "Too many requests with a wrong API key or token from this address; slow down"
# How long shutdown waits for the maintenance loop to finish its step.
MAINTENANCE_STOP_S = 5.0
# How long events stay readable for a resuming stream client (at least), and
# delivery attempts in a webhook's log; pruned this often.
EVENT_REPLAY_MS = 24 * 3_600_000
DELIVERY_LOG_MS = 7 * 24 * 3_600_000
PRUNE_EVERY_S = 300.0
# The route label of requests no route matched (404/405).
UNMATCHED = "(unmatched)"


def build_app_router(services: Services) -> Router:
    """The router of every operation, each handler bound to what it needs: a
    member of `services`, or state the HTTP layer keeps for this app."""
    dependencies: dict[str, object] = {
        **{field.name: getattr(services, field.name) for field in dataclasses.fields(services)},
        "listings": LiveListings(),
        "api_document": Response(200, encode(openapi_document())),
    }
    return build_router(OPERATIONS, dependencies)


class LiveSessionsApp:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.router = build_app_router(services)
        self.peer_socket = PeerSocket(
            services.peer_tokens,
            services.rooms,
            services.keeper,
            services.membership,
            services.clock,
            services.settings.peer_message_rate,
            services.settings.peer_message_burst,
            (Unavailable, *services.outages),
            origins=services.whitelisted_domains,
        )
        self._maintenance: asyncio.Task[None] | None = None
        telemetry = services.telemetry
        self._lag_probe = LagProbe(services.settings.loop_probe_interval, telemetry.loop_lag, telemetry.loop_lag_max)
        self._stopping = asyncio.Event()
        self._preload: asyncio.Future[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            if scope["path"] == "/ws":
                await self.peer_socket(scope, receive, send)
            else:
                await send(
                    {
                        "type": "websocket.close",
                        "code": CloseCode.NO_SUCH_ENDPOINT,
                        "reason": "no WebSocket here; use /ws",
                    }
                )
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request = Request(scope, receive, self.services.settings.max_body_bytes)
        response: Response
        # Labels requests by route pattern, so the series stay few.
        pattern = UNMATCHED
        try:
            if holds_nul(scope["path"]):
                raise Abort(refusal(400, f"Bad path: {NUL_REFUSED}"))
            route, request.path_params = self.router.match(scope["method"], scope["path"])
            pattern = route.pattern
            response = await self._serve(route, request)
        except Abort as exc:
            response = exc.response
        except Refused as exc:
            response = answer_refused(exc)
        except ClientDisconnected:
            return
        except Exception as exc:
            if isinstance(exc, self.services.outages):
                # No answer rather than a wrong one (scale-out mode).
                log.warning(
                    "answered 503: a store is out of reach",
                    extra=context(method=scope["method"], path=scope["path"], error=type(exc).__name__),
                )
                response = UNAVAILABLE
            else:
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                response = INTERNAL_ERROR
        await response.send(send)
        self.services.telemetry.observe_http(scope["method"], pattern, response.status, time.perf_counter() - started)

    async def _serve(self, route: Route, request: Request) -> Response:
        if route.auth != "none":
            # An address that has sent too many wrong keys or tokens is not
            # heard until its budget refills: not even a right guess gets in.
            wait = await self.services.failed_auth_limiter.waiting(request.client_key)
            if wait:
                return too_many(ADDRESS_OVER_LIMIT, wait)
        auth = route.auth
        if auth == "key_or_account":
            # A browser page signed in with a wallet has no API key.
            auth = "account" if request.header(b"x-api-key") is None and request.bearer_token else "api_key"
        if auth == "api_key":
            found = await self.services.api_keys.project_for(request.header(b"x-api-key"))
            if found is None:
                return await self._refuse(request, BAD_API_KEY)
            request.project_id, request.key_id = found.project_id, found.key_id
            wait = await self.services.key_limiter.acquire(found.key_hash)
            if wait:
                return too_many(KEY_OVER_LIMIT, wait)
        elif auth == "account":
            request.account = await self.services.sign_in.session(request.bearer_token)
            if request.account is None:
                return await self._refuse(request, SIGN_IN_FIRST)
            request.project_id = request.account.project_id
        answer = await route.endpoint(request)
        return answer if route.encode_as is None else Response(route.encode_as, encode(answer))

    async def _refuse(self, request: Request, answer: Response) -> Response:
        """A wrong key or token: 401, or 429 once this address has had too many,
        so that keys cannot be guessed at speed."""
        wait = await self.services.failed_auth_limiter.acquire(request.client_key)
        return too_many(ADDRESS_OVER_LIMIT, wait) if wait else answer

    # --- lifespan -----------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        # Loaded beside serving, not before it (see siwe.preload).
        self._preload = asyncio.get_running_loop().run_in_executor(None, siwe.preload)
        await self.services.api_keys.refresh_revocations()
        policy = self.services.sign_in.policy
        log.info(
            "wallet sign-in messages must name this service",
            extra=context(url=self.services.settings.base_url, siwe_domain=policy.domain, siwe_uri=policy.uri),
        )
        for step in self.services.on_start:
            await step()
        self._maintenance = asyncio.create_task(self._maintain())
        self._lag_probe.start()

    async def shutdown(self) -> None:
        await self._lag_probe.stop()
        if self._maintenance is not None:
            # Asked to end, not cancelled mid-step: a store client can turn a
            # cancellation that lands inside its call into an error of its
            # own, which the loop would log and carry on from.
            self._stopping.set()
            _, late = await asyncio.wait({self._maintenance}, timeout=MAINTENANCE_STOP_S)
            for task in late:
                task.cancel()
                await asyncio.wait({task}, timeout=MAINTENANCE_STOP_S)
        await self.services.egress.stop_all()
        self.services.hub.close_all(CloseCode.GOING_AWAY, "server shutting down")
        await self.services.keeper.heartbeat()
        await self.services.api_keys.flush_last_used()
        await self.services.aclose()

    async def _maintain(self) -> None:
        """End sessions whose grace ran out, record that live ones still are,
        and take jobs back from media workers that went silent."""
        settings = self.services.settings
        tick = min(1.0, max(settings.grace_period / 4, 0.05))
        beats_per_heartbeat = max(1, round(settings.heartbeat_interval / tick))
        beats_per_lease_check = max(1, round(min(settings.worker_lease / 4, 1.0) / tick))
        beats_per_pruning = max(1, round(PRUNE_EVERY_S / tick))
        tick_count = 0
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), tick)
                return
            tick_count += 1
            try:
                await self.services.keeper.expire()
                if tick_count % beats_per_heartbeat == 0:
                    await self.services.keeper.heartbeat()
                    await self.services.api_keys.flush_last_used()
                    await self.services.api_keys.refresh_revocations()
                    await self.services.accounts.forget_expired_sign_ins(self.services.clock())
                if tick_count % beats_per_lease_check == 0:
                    await self.services.egress.release_silent_workers()
                if tick_count % beats_per_pruning == 0:
                    await self._prune_events()
            except Exception:
                log.exception("session maintenance failed")

    async def _prune_events(self) -> None:
        """Forget events no webhook waits for once they are older than a
        stream client could resume from, and old delivery attempts."""
        now = self.services.clock()
        keep_events_ms = max(self.services.settings.webhook_retry_for * 1000, EVENT_REPLAY_MS)
        await self.services.outbox.prune_events(now - int(keep_events_ms))
        await self.services.webhooks.prune_deliveries(now - DELIVERY_LOG_MS)


def create_app(services: Services) -> LiveSessionsApp:
    return LiveSessionsApp(services)
