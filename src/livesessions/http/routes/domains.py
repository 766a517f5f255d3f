"""Whitelisted domains: the browser origins a project's peers may join from,
read with an API key (Huddle01's route) and managed by the project's owner."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from livesessions.auth.origins import MAX_DOMAIN_CHARS, MAX_DOMAINS, BadDomains, WhitelistedDomains, normalise_domains
from livesessions.http.core import Request
from livesessions.http.responses import Out
from livesessions.http.routing import Operation, Reply
from livesessions.http.validation import ValidationFailed, issue

Domain = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_DOMAIN_CHARS,
        description="A host, optionally with a port: `app.example.com`, `localhost:3000`, `[::1]:8080`. "
        "No scheme, no path, no wildcard; kept in lower case. Without a port it admits the host on any port.",
        examples=["app.example.com", "localhost:3000"],
    ),
]
Domains = Annotated[
    list[Domain],
    msgspec.Meta(
        max_length=MAX_DOMAINS,
        description="While not empty, a WebSocket join whose `Origin` header names a host outside the list is "
        "closed with 4003; joins without an `Origin` (servers) are not affected. Empty: any origin.",
    ),
]

DESCRIPTION = (
    "Matching is exact: `example.com` does not admit `www.example.com`; an entry without a port admits its host on "
    "any port, one with a port only that port (an `Origin` without a port has its scheme's default, 80 or 443). "
    "A change through this API takes effect at once on the node that made it, and within 5 seconds on the others."
)


class DomainsBody(msgspec.Struct):
    whitelistedDomains: Domains


class ProjectDomains(Out):
    whitelistedDomains: Domains


class SdkDomains(Out):
    ok: Literal[True]
    whitelistedDomains: Domains


async def sdk_domains(request: Request, whitelisted_domains: WhitelistedDomains) -> SdkDomains:
    return SdkDomains(ok=True, whitelistedDomains=await whitelisted_domains.get(request.project_id))


async def project_domains(request: Request, whitelisted_domains: WhitelistedDomains) -> ProjectDomains:
    return ProjectDomains(whitelistedDomains=await whitelisted_domains.get(request.project_id))


async def set_project_domains(
    request: Request, whitelisted_domains: WhitelistedDomains, body: DomainsBody
) -> ProjectDomains:
    try:
        domains = normalise_domains(body.whitelistedDomains)
    except BadDomains as exc:
        raise ValidationFailed(
            [
                issue(["whitelistedDomains"], why, "too_big")
                if index is None
                else issue(["whitelistedDomains", index], why)
                for index, why in exc.problems
            ]
        ) from None
    return ProjectDomains(whitelistedDomains=await whitelisted_domains.set(request.project_id, domains))


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/api/v2/sdk/get-whitelisted-domains",
        sdk_domains,
        "getWhitelistedDomains",
        "The project's whitelisted domains: the browser origins its peers may join from",
        "peers",
        answer=Reply("The list, in the order it was set (empty: any origin)."),
        description=DESCRIPTION,
    ),
    Operation(
        "GET",
        "/api/v2/project/whitelisted-domains",
        project_domains,
        "getProjectWhitelistedDomains",
        "The project's whitelisted domains (for its owner)",
        "accounts",
        auth="account",
        answer=Reply("The list, in the order it was set (empty: any origin)."),
        description=DESCRIPTION,
    ),
    Operation(
        "PUT",
        "/api/v2/project/whitelisted-domains",
        set_project_domains,
        "setProjectWhitelistedDomains",
        "Replace the project's whitelisted domains (an empty list clears them)",
        "accounts",
        auth="account",
        answer=Reply("The list as stored: lower case, repeats dropped, ports as given."),
        description=DESCRIPTION,
    ),
)
