"""A string that refuses to be printed.

Secret option values travel through the registry and into connectors wrapped
in :class:`Secret`, so an accidental ``repr``, f-string, log line, exception
or JSON dump shows ``***`` instead of the value. Only ``reveal()`` gives the
plain text, at the single place a client library needs it.
"""

from __future__ import annotations

from typing import Any

MASK = "***"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled or serialised")


def reveal(value: Any) -> Any:
    """The plain value of a Secret, or the value unchanged (for options that may be either)."""
    return value.reveal() if isinstance(value, Secret) else value


def redacted(value: Any) -> Any:
    """A JSON-safe copy of an option tree with every Secret masked (for catalogs and listings)."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value
