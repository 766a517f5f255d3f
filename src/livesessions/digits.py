"""Numbers written in decimal, as protocols mean them: ASCII 0-9 only.

`str.isdigit()` and `int()` also take other scripts' digits (`١`, `１`) and
`isdigit()` even superscripts (`¹`) that `int()` then rejects, so neither is
a check on text from outside.
"""

from __future__ import annotations

import re

DECIMAL = re.compile(r"[0-9]+")


def parse_decimal(text: str, max_digits: int = 20) -> int | None:
    """The value of `text` if it is 1 to `max_digits` ASCII digits, else None.

    The length bound keeps int() away from absurdly long digit strings."""
    if len(text) > max_digits or DECIMAL.fullmatch(text) is None:
        return None
    return int(text)
