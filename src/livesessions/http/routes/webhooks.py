"""Webhooks: register an endpoint for a project's room events, see how its
deliveries went, send it a test event."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from livesessions.clock import Clock
from livesessions.config import Settings
from livesessions.domain import events
from livesessions.domain.errors import Conflict, NotFound
from livesessions.domain.ports import WebhookRegistry
from livesessions.domain.webhooks import WEBHOOK_ID_PATTERN, Webhook, WebhookState, new_webhook_id
from livesessions.http.core import Request
from livesessions.http.errors import ErrorMessage
from livesessions.http.fields import EpochMillis
from livesessions.http.params import PAGE_CURSOR, Integer
from livesessions.http.responses import NO_CONTENT, Out, Response
from livesessions.http.routing import Operation, PathParam, Reply
from livesessions.http.validation import ValidationFailed, issue
from livesessions.webhooks.dispatcher import Dispatcher
from livesessions.webhooks.sealing import Sealer
from livesessions.webhooks.targets import MAX_URL_LENGTH, TargetRefused, parse, resolve

TAG = "webhooks"
BASE = "/api/v2/sdk/webhooks"
# A project registers at most this many.
MAX_WEBHOOKS = 20
MAX_NAME = 100
MAX_PAGE = 100
NOT_FOUND = "Webhook Not Found"

EventName = Literal[events.EVENT_NAMES]  # type: ignore[valid-type]
WebhookId = Annotated[str, msgspec.Meta(pattern=WEBHOOK_ID_PATTERN.pattern, examples=["whk_0123456789abcdefABCD"])]
WEBHOOK_ID = PathParam("webhookId", "The webhook's id (`whk_…`).", "whk_0123456789abcdefABCD")
LIMIT = Integer("limit", "How many attempts a page holds.", 20, 1, MAX_PAGE)

EVENTS_DESCRIPTION = (
    "The events to send; all of them when absent. `x-livesessions-sequence` numbers all of a room's events, so a "
    "webhook that subscribed to some sees gaps."
)


class NewWebhook(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_URL_LENGTH,
            description="An http(s) URL; one that resolves to a loopback, private, link-local or multicast address "
            "is refused unless the server runs with --allow-private-webhook-urls.",
        ),
    ]
    name: Annotated[str, msgspec.Meta(max_length=MAX_NAME, description="A label (default: the URL's host).")] = ""
    events: Annotated[list[EventName], msgspec.Meta(min_length=1, max_length=len(events.EVENT_NAMES))] | None = None


class WebhookOut(Out):
    id: WebhookId
    name: str
    url: str
    events: list[EventName]
    status: Literal["active", "disabled"]
    createdAt: EpochMillis


class Created(Out):
    webhook: WebhookOut


class LastDeliveryOut(Out):
    at: EpochMillis
    eventId: str
    responseStatus: int | None
    error: str | msgspec.UnsetType = msgspec.UNSET


class ListedWebhook(Out):
    id: WebhookId
    name: str
    url: str
    events: list[EventName]
    status: Literal["active", "disabled"]
    createdAt: EpochMillis
    pending: Annotated[int, msgspec.Meta(ge=0, description="Events queued and not yet delivered or given up.")]
    lastDelivery: LastDeliveryOut | None


class WebhookList(Out):
    webhooks: list[ListedWebhook]


class DeliveryOut(Out):
    eventId: str
    event: str
    roomId: Annotated[str | None, msgspec.Meta(description="null for a test event.")]
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    at: EpochMillis
    responseStatus: int | None
    error: Annotated[
        str | None,
        msgspec.Meta(description="Why the attempt failed (`given up after …` once retries ran out); null on success."),
    ]


class DeliveryPage(Out):
    deliveries: Annotated[list[DeliveryOut], msgspec.Meta(max_length=MAX_PAGE, description="Newest first.")]
    nextCursor: Annotated[int, msgspec.Meta(ge=1, description="Pass as `cursor` for the next page.")] | None


class TestSent(Out):
    eventId: str


def _out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=webhook.id,
        name=webhook.name,
        url=webhook.url,
        events=list(webhook.events) if webhook.events is not None else list(events.EVENT_NAMES),
        status=webhook.status,
        createdAt=webhook.created_at,
    )


def _listed(state: WebhookState) -> ListedWebhook:
    base = _out(state.webhook)
    last = state.last_delivery
    return ListedWebhook(
        **msgspec.structs.asdict(base),
        pending=state.pending,
        lastDelivery=None
        if last is None
        else LastDeliveryOut(
            at=last.at,
            eventId=last.event_id,
            responseStatus=last.response_status,
            error=last.error if last.error is not None else msgspec.UNSET,
        ),
    )


async def create_webhook(
    request: Request, webhooks: WebhookRegistry, sealer: Sealer, settings: Settings, clock: Clock, body: NewWebhook
) -> Created:
    try:
        target = parse(body.url)
        await resolve(target, settings.allow_private_webhook_urls)
    except TargetRefused as exc:
        raise ValidationFailed([issue(["url"], str(exc))]) from None
    if len(await webhooks.list_webhooks(request.project_id)) >= MAX_WEBHOOKS:
        raise Conflict(f"A project may register at most {MAX_WEBHOOKS} webhooks; delete one first")
    api_key = request.header(b"x-api-key") or ""
    webhook_id = new_webhook_id()
    webhook = Webhook(
        id=webhook_id,
        project_id=request.project_id,
        key_id=request.key_id,
        name=body.name or target.host,
        url=body.url,
        events=list(dict.fromkeys(body.events)) if body.events is not None else None,
        sealed_key=sealer.seal(api_key, webhook_id),
        status="active",
        created_at=clock(),
    )
    await webhooks.add_webhook(webhook)
    return Created(webhook=_out(webhook))


async def list_webhooks(request: Request, webhooks: WebhookRegistry) -> WebhookList:
    return WebhookList(webhooks=[_listed(state) for state in await webhooks.list_webhooks(request.project_id)])


def _webhook_id(request: Request) -> str:
    webhook_id = request.path_params["webhookId"]
    if not WEBHOOK_ID_PATTERN.match(webhook_id):
        raise NotFound(NOT_FOUND)
    return webhook_id


async def delete_webhook(request: Request, webhooks: WebhookRegistry) -> Response:
    if not await webhooks.delete_webhook(request.project_id, _webhook_id(request)):
        raise NotFound(NOT_FOUND)
    return NO_CONTENT


async def webhook_deliveries(request: Request, webhooks: WebhookRegistry) -> DeliveryPage:
    webhook_id = _webhook_id(request)
    limit = LIMIT.read(request)
    before = PAGE_CURSOR.read(request) or None
    found = await webhooks.webhook_deliveries(request.project_id, webhook_id, before, limit)
    if found is None:
        raise NotFound(NOT_FOUND)
    entries, next_cursor = found
    return DeliveryPage(
        deliveries=[
            DeliveryOut(
                eventId=e.event_id,
                event=e.event,
                roomId=e.room_id or None,
                attempt=e.attempt,
                at=e.at,
                responseStatus=e.response_status,
                error=e.error,
            )
            for e in entries
        ],
        nextCursor=next_cursor,
    )


async def send_test_event(
    request: Request, webhooks: WebhookRegistry, dispatcher: Dispatcher, clock: Clock
) -> TestSent:
    webhook_id = _webhook_id(request)
    now = clock()
    payload = events.webhook_test(webhook_id, now)
    event_id = await webhooks.queue_test_event(request.project_id, webhook_id, payload, now)
    if event_id is None:
        if await webhooks.webhook(request.project_id, webhook_id) is None:
            raise NotFound(NOT_FOUND)
        raise Conflict("The webhook is disabled (its API key was revoked, or its endpoint answered 410)")
    dispatcher.wake()
    return TestSent(eventId=event_id)


WEBHOOK_NOT_FOUND = Reply("No such webhook in this project.", ErrorMessage)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        BASE,
        create_webhook,
        "createWebhook",
        "Register a webhook",
        TAG,
        status=201,
        answer=Reply(
            "Registered. Deliveries are signed with the API key of this request (`huddle01-signature`), as "
            "Huddle01's WebhookReceiver expects; revoking that key disables the webhook."
        ),
        errors={409: Reply(f"The project already has {MAX_WEBHOOKS} webhooks.", ErrorMessage)},
        description=EVENTS_DESCRIPTION,
    ),
    Operation(
        "GET",
        BASE,
        list_webhooks,
        "listWebhooks",
        "The project's webhooks, with what is pending and how the last attempt went",
        TAG,
        auth="key_or_account",
    ),
    Operation(
        "DELETE",
        f"{BASE}/{{webhookId}}",
        delete_webhook,
        "deleteWebhook",
        "Delete a webhook (what is pending for it is dropped)",
        TAG,
        auth="key_or_account",
        status=204,
        answer=Reply("Deleted.", None, media_types=()),
        errors={404: WEBHOOK_NOT_FOUND},
        path_params=(WEBHOOK_ID,),
    ),
    Operation(
        "GET",
        f"{BASE}/{{webhookId}}/deliveries",
        webhook_deliveries,
        "listWebhookDeliveries",
        "The webhook's delivery attempts, newest first",
        TAG,
        auth="key_or_account",
        errors={404: WEBHOOK_NOT_FOUND},
        query=(LIMIT, PAGE_CURSOR),
        path_params=(WEBHOOK_ID,),
    ),
    Operation(
        "POST",
        f"{BASE}/{{webhookId}}/test",
        send_test_event,
        "testWebhook",
        "Send the webhook a `webhook:test` event now",
        TAG,
        answer=Reply("Queued ahead of nothing: it is sent at once, signed like every delivery."),
        errors={
            404: WEBHOOK_NOT_FOUND,
            409: Reply("The webhook is disabled.", ErrorMessage),
        },
        path_params=(WEBHOOK_ID,),
    ),
)
