"""The HTTP layer: a small ASGI toolkit, the routes, and the OpenAPI document."""
