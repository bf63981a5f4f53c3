"""Validation of the nested option maps (``retry``, ``circuitBreaker``, ``timeout``).

The registry validates top-level options; nested maps arrive as plain dicts.
They are validated here with the same :class:`OptionSchema` machinery so a
mistake reads like any other option error, with the nested key in the path
(``...sink.retry.maxAttempts: invalid value ...``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fluxion_flows.errors import OptionError, PathPart
from fluxion_flows.spi import OptionSchema


def validate_map(schema: OptionSchema, raw: Mapping[str, Any], path: Sequence[PathPart]) -> dict[str, Any]:
    """Typed values of a nested map, defaults applied; unknown keys rejected naming the valid ones."""
    values, _ = schema.validate(raw, path=path)
    return values


def check(condition: bool, problem: str, path: Sequence[PathPart]) -> None:
    """Raise an OptionError at ``path`` unless ``condition`` holds (range checks after typing)."""
    if not condition:
        raise OptionError(problem, path=path)
