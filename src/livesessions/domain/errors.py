"""The one error the domain raises for a request it cannot do: the HTTP layer
answers it as `{"ok": false, "message": …}` with its status."""

from __future__ import annotations


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
