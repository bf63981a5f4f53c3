"""Retry with Resilience4j semantics, specialised for HTTP.

``maxAttempts`` counts the first call (3 means one call and two retries).
The wait before retry *n* is ``waitDuration * multiplier**(n-1)``, spread by
``randomizationFactor`` (jitter, so many sinks recovering together do not
hit the endpoint in lockstep) and capped by ``maxWaitDuration``. A 429 or
503 carrying ``Retry-After`` (seconds or an HTTP date) waits what the server
asked for instead, capped by the same maximum.

What is retried: ``retryOn`` lists status codes (``503``, or a class like
``5xx``) and exception type names (``ConnectError``, ``TimeoutException``,
or the aliases ``timeout`` and ``connection``). The two kinds are separate
lists: giving only status codes keeps the default exception types, and the
other way round. ``ignore`` removes entries (and wins over ``retryOn``).
Named instances (``retryInstance``) share settings and counters per process.
"""

from __future__ import annotations

import email.utils
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fluxion_flows.connectors.http._settings import check, validate_map
from fluxion_flows.errors import OptionError, PathPart
from fluxion_flows.spi import ConnectorOption, OptionSchema, OptionType

DEFAULT_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
DEFAULT_RETRY_EXCEPTIONS = frozenset({"TimeoutException", "NetworkError", "RemoteProtocolError"})
RETRY_AFTER_STATUSES = frozenset({429, 503})
EXCEPTION_ALIASES = {
    "timeout": "TimeoutException",
    "timeouts": "TimeoutException",
    "connection": "TransportError",
    "connect": "ConnectError",
    "network": "NetworkError",
}
_STATUS_CLASS = re.compile(r"^([1-5])xx$", re.IGNORECASE)
_EXCEPTION_NAME = re.compile(r"^[A-Za-z_][\w.]*$")

RETRY_SCHEMA = OptionSchema(
    options=[
        ConnectorOption("maxAttempts", OptionType.INT, default=3, description="attempts including the first"),
        ConnectorOption("waitDuration", OptionType.DURATION, default=0.5, description="first retry wait"),
        ConnectorOption(
            "multiplier",
            OptionType.FLOAT,
            default=2.0,
            aliases=("exponentialBackoffMultiplier",),
            description="growth of the wait per retry (1 = constant)",
        ),
        ConnectorOption(
            "randomizationFactor",
            OptionType.FLOAT,
            default=0.5,
            aliases=("jitter",),
            description="wait spread: +-factor*wait",
        ),
        ConnectorOption(
            "maxWaitDuration",
            OptionType.DURATION,
            default=30.0,
            aliases=("maxWait", "exponentialMaxWaitDuration"),
            description="cap for backoff and Retry-After waits",
        ),
        ConnectorOption("retryOn", OptionType.LIST, description="status codes / classes and exception types"),
        ConnectorOption("ignore", OptionType.LIST, aliases=("ignoreExceptions",), description="not retried"),
        ConnectorOption("honourRetryAfter", OptionType.BOOL, default=True, aliases=("honorRetryAfter",)),
    ]
)


@dataclass(frozen=True)
class RetrySettings:
    """Validated retry configuration."""

    max_attempts: int = 3
    wait_duration: float = 0.5
    multiplier: float = 2.0
    randomization_factor: float = 0.5
    max_wait: float = 30.0
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    retry_exceptions: frozenset[str] = DEFAULT_RETRY_EXCEPTIONS
    ignore_statuses: frozenset[int] = frozenset()
    ignore_exceptions: frozenset[str] = frozenset()
    honour_retry_after: bool = True

    @classmethod
    def from_map(cls, raw: Mapping[str, Any], path: Sequence[PathPart] = ("retry",)) -> RetrySettings:
        values = validate_map(RETRY_SCHEMA, raw, path)
        check(values["maxAttempts"] >= 1, "`maxAttempts` must be at least 1", (*path, "maxAttempts"))
        check(values["multiplier"] >= 1.0, "`multiplier` must be at least 1", (*path, "multiplier"))
        factor = values["randomizationFactor"]
        check(0.0 <= factor < 1.0, "`randomizationFactor` must be in [0, 1)", (*path, "randomizationFactor"))
        statuses, exceptions = _split_entries(values.get("retryOn"), (*path, "retryOn"))
        ignore_statuses, ignore_exceptions = _split_entries(values.get("ignore"), (*path, "ignore"))
        return cls(
            max_attempts=values["maxAttempts"],
            wait_duration=values["waitDuration"],
            multiplier=values["multiplier"],
            randomization_factor=factor,
            max_wait=values["maxWaitDuration"],
            retry_statuses=statuses if statuses else DEFAULT_RETRY_STATUSES,
            retry_exceptions=exceptions if exceptions else DEFAULT_RETRY_EXCEPTIONS,
            ignore_statuses=ignore_statuses,
            ignore_exceptions=ignore_exceptions,
            honour_retry_after=values["honourRetryAfter"],
        )


def _split_entries(
    entries: list[Any] | None, path: Sequence[PathPart]
) -> tuple[frozenset[int], frozenset[str]]:
    """Status codes (ints, "503", "5xx") and exception type names from a retryOn / ignore list."""
    if entries is None:
        return frozenset(), frozenset()
    statuses: set[int] = set()
    names: set[str] = set()
    for index, entry in enumerate(entries):
        text = str(entry).strip()
        klass = _STATUS_CLASS.match(text)
        if klass:
            base = int(klass[1]) * 100
            statuses.update(range(base, base + 100))
        elif text.isdigit() and 100 <= int(text) <= 599:
            statuses.add(int(text))
        elif not isinstance(entry, bool) and _EXCEPTION_NAME.match(text) and not text.isdigit():
            names.add(EXCEPTION_ALIASES.get(text.lower(), text))
        else:
            raise OptionError(
                f"`{entry}` is neither an HTTP status (100-599, or a class like 5xx) "
                "nor an exception type name",
                path=(*path, index),
            )
    return frozenset(statuses), frozenset(names)


def _names_of(error: BaseException) -> set[str]:
    names: set[str] = set()
    for klass in type(error).__mro__:
        names.add(klass.__name__)
        names.add(f"{klass.__module__}.{klass.__qualname__}")
    return names


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class Retry:
    """A retry policy (stateless apart from counters shared by every sink using the instance)."""

    def __init__(self, settings: RetrySettings, name: str = "", rng: random.Random | None = None) -> None:
        self.settings = settings
        self.name = name
        self._rng = rng or random.Random()
        self.retries = 0
        self.exhausted = 0

    def status_retryable(self, status: int) -> bool:
        s = self.settings
        return status in s.retry_statuses and status not in s.ignore_statuses

    def exception_retryable(self, error: BaseException) -> bool:
        s = self.settings
        names = _names_of(error)
        return bool(names & s.retry_exceptions) and not names & s.ignore_exceptions

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based), jittered and capped."""
        s = self.settings
        base = s.wait_duration * (s.multiplier ** (attempt - 1))
        if s.randomization_factor:
            base *= 1.0 + s.randomization_factor * (2.0 * self._rng.random() - 1.0)
        return min(max(0.0, base), s.max_wait)

    def retry_after(self, status: int, header: str | None) -> float | None:
        """The server-requested wait for a 429/503, capped by ``maxWaitDuration``; None when absent."""
        if not self.settings.honour_retry_after or status not in RETRY_AFTER_STATUSES:
            return None
        seconds = parse_retry_after(header)
        return None if seconds is None else min(seconds, self.settings.max_wait)


_instances: dict[str, Retry] = {}
_lock = threading.Lock()


def retry_instance(name: str | None, settings: RetrySettings) -> Retry:
    """A private Retry, or the process-wide one called ``name`` (created with the first settings seen)."""
    if not name:
        return Retry(settings)
    with _lock:
        existing = _instances.get(name)
        if existing is None:
            existing = _instances[name] = Retry(settings, name)
        return existing


def reset_retry_instances() -> None:
    """Forget every named instance (tests, and embedding applications that reconfigure)."""
    with _lock:
        _instances.clear()
