"""A circuit breaker with Resilience4j semantics.

CLOSED: calls pass and their outcomes fill a sliding window (the last
``slidingWindowSize`` calls, or the calls of the last ``slidingWindowSize``
seconds). Once the window holds ``minimumNumberOfCalls`` outcomes, a failure
rate or slow-call rate at or above its threshold opens the breaker.
OPEN: every call is rejected with :class:`CircuitOpenError` (the endpoint is
left alone) until ``waitDurationInOpenState`` has passed; the next call then
moves it to HALF_OPEN. HALF_OPEN: ``permittedCallsInHalfOpenState`` trial
calls pass (others are rejected); when they have all completed, the same
thresholds decide between CLOSED and OPEN again.

Outcomes are recorded against the state epoch the call was admitted in, so a
slow call admitted while CLOSED cannot distort the half-open trial window.
Named instances (``circuitBreakerInstance``) are shared per process.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fluxion_flows.connectors.http._settings import check, validate_map
from fluxion_flows.connectors.http.errors import CircuitOpenError
from fluxion_flows.errors import PathPart
from fluxion_flows.spi import ConnectorOption, OptionSchema, OptionType


class State(enum.Enum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


CIRCUIT_BREAKER_SCHEMA = OptionSchema(
    options=[
        ConnectorOption("failureRateThreshold", OptionType.FLOAT, default=50.0, description="percent"),
        ConnectorOption("slowCallRateThreshold", OptionType.FLOAT, default=100.0, description="percent"),
        ConnectorOption("slowCallDurationThreshold", OptionType.DURATION, default=60.0),
        ConnectorOption("waitDurationInOpenState", OptionType.DURATION, default=60.0),
        ConnectorOption(
            "permittedCallsInHalfOpenState",
            OptionType.INT,
            default=10,
            aliases=("permittedNumberOfCallsInHalfOpenState",),
        ),
        ConnectorOption("minimumNumberOfCalls", OptionType.INT, default=10),
        ConnectorOption("slidingWindowSize", OptionType.INT, default=100),
        ConnectorOption("slidingWindowType", OptionType.ENUM, default="count", choices=("count", "time")),
        ConnectorOption("enabled", OptionType.BOOL, default=True),
    ]
)


@dataclass(frozen=True)
class CircuitBreakerSettings:
    """Validated circuit-breaker configuration (Resilience4j defaults)."""

    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration: float = 60.0
    wait_in_open: float = 60.0
    permitted_in_half_open: int = 10
    minimum_calls: int = 10
    window_size: int = 100
    window_type: str = "count"
    enabled: bool = True

    @classmethod
    def from_map(
        cls, raw: Mapping[str, Any], path: Sequence[PathPart] = ("circuitBreaker",)
    ) -> CircuitBreakerSettings:
        v = validate_map(CIRCUIT_BREAKER_SCHEMA, raw, path)
        for key in ("failureRateThreshold", "slowCallRateThreshold"):
            check(0.0 < v[key] <= 100.0, f"`{key}` must be a percentage in (0, 100]", (*path, key))
        for key in ("permittedCallsInHalfOpenState", "minimumNumberOfCalls", "slidingWindowSize"):
            check(v[key] >= 1, f"`{key}` must be at least 1", (*path, key))
        return cls(
            failure_rate_threshold=v["failureRateThreshold"],
            slow_call_rate_threshold=v["slowCallRateThreshold"],
            slow_call_duration=v["slowCallDurationThreshold"],
            wait_in_open=v["waitDurationInOpenState"],
            permitted_in_half_open=v["permittedCallsInHalfOpenState"],
            minimum_calls=v["minimumNumberOfCalls"],
            window_size=v["slidingWindowSize"],
            window_type=v["slidingWindowType"],
            enabled=v["enabled"],
        )


class _Window:
    """Outcome counts over the last N calls (count) or the last N seconds (time, one bucket per second)."""

    def __init__(self, settings: CircuitBreakerSettings, clock: Callable[[], float]) -> None:
        self._time_based = settings.window_type == "time"
        self._size = settings.window_size
        self._clock = clock
        self._calls: deque[tuple[bool, bool]] = deque()
        self._buckets: deque[list[int]] = deque()  # [second, calls, failures, slow]

    def record(self, failed: bool, slow: bool) -> None:
        if not self._time_based:
            self._calls.append((failed, slow))
            if len(self._calls) > self._size:
                self._calls.popleft()
            return
        second = int(self._clock())
        self._expire(second)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] += slow

    def _expire(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self._size:
            self._buckets.popleft()

    def totals(self) -> tuple[int, int, int]:
        """(calls, failures, slow calls) currently in the window."""
        if not self._time_based:
            return len(self._calls), sum(f for f, _ in self._calls), sum(s for _, s in self._calls)
        self._expire(int(self._clock()))
        return (
            sum(b[1] for b in self._buckets),
            sum(b[2] for b in self._buckets),
            sum(b[3] for b in self._buckets),
        )


Listener = Callable[["CircuitBreaker", State, State], None]


class CircuitBreaker:
    """One breaker; thread-safe so a named instance can be shared by sinks on different loops."""

    def __init__(
        self,
        settings: CircuitBreakerSettings,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.name = name or "anonymous"
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._epoch = 0
        self._opened_at = 0.0
        self._window = _Window(settings, clock)
        self._half_open_admitted = 0
        self._half_open_done = 0
        self._listeners: list[Listener] = []
        self.transitions: dict[str, int] = {"open": 0, "half_open": 0, "closed": 0}
        self.rejected = 0

    @property
    def state(self) -> State:
        with self._lock:
            self._maybe_half_open()
            return self._state

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def acquire(self) -> int:
        """Admit a call (returning its epoch token) or raise CircuitOpenError without calling anything."""
        if not self.settings.enabled:
            return -1
        fired: list[tuple[State, State]] = []
        error: CircuitOpenError | None = None
        with self._lock:
            fired += self._maybe_half_open()
            token = self._epoch
            if self._state is State.OPEN or (
                self._state is State.HALF_OPEN
                and self._half_open_admitted >= self.settings.permitted_in_half_open
            ):
                self.rejected += 1
                retry_in = max(0.0, self._opened_at + self.settings.wait_in_open - self._clock())
                error = CircuitOpenError(self.name, retry_in)
            elif self._state is State.HALF_OPEN:
                self._half_open_admitted += 1
        self._notify(fired)
        if error is not None:
            raise error
        return token

    def record(self, token: int, *, failed: bool, duration: float) -> None:
        """The outcome of a call admitted with ``token``; may change the state."""
        if token < 0:
            return
        fired: list[tuple[State, State]] = []
        with self._lock:
            if token != self._epoch:
                return
            self._window.record(failed, duration >= self.settings.slow_call_duration)
            if self._state is State.HALF_OPEN:
                self._half_open_done += 1
                if self._half_open_done >= self.settings.permitted_in_half_open:
                    fired += self._transition(State.OPEN if self._tripped(1) else State.CLOSED)
            elif self._state is State.CLOSED and self._tripped(self.settings.minimum_calls):
                fired += self._transition(State.OPEN)
        self._notify(fired)

    def release(self, token: int) -> None:
        """A call admitted with ``token`` ended without an outcome (cancelled): free its trial slot."""
        with self._lock:
            if token == self._epoch and self._state is State.HALF_OPEN:
                self._half_open_admitted = max(0, self._half_open_admitted - 1)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            calls, failures, slow = self._window.totals()
            return {
                "circuit.state": float(self._state.value),
                "circuit.transitions.open": self.transitions["open"],
                "circuit.transitions.half_open": self.transitions["half_open"],
                "circuit.transitions.closed": self.transitions["closed"],
                "circuit.rejected": self.rejected,
                "circuit.window.calls": calls,
                "circuit.window.failures": failures,
                "circuit.window.slow": slow,
            }

    def _tripped(self, minimum: int) -> bool:
        calls, failures, slow = self._window.totals()
        if calls < min(minimum, self.settings.window_size) or calls == 0:
            return False
        s = self.settings
        return failures * 100.0 / calls >= s.failure_rate_threshold or slow * 100.0 / calls >= (
            s.slow_call_rate_threshold
        )

    def _maybe_half_open(self) -> list[tuple[State, State]]:
        if self._state is State.OPEN and self._clock() >= self._opened_at + self.settings.wait_in_open:
            return self._transition(State.HALF_OPEN)
        return []

    def _transition(self, new: State) -> list[tuple[State, State]]:
        old, self._state = self._state, new
        self._epoch += 1
        self._window = _Window(self.settings, self._clock)
        self._half_open_admitted = self._half_open_done = 0
        if new is State.OPEN:
            self._opened_at = self._clock()
        self.transitions[new.name.lower()] += 1
        return [(old, new)]

    def _notify(self, fired: list[tuple[State, State]]) -> None:
        for old, new in fired:
            for listener in list(self._listeners):
                listener(self, old, new)


_instances: dict[str, CircuitBreaker] = {}
_lock = threading.Lock()


def circuit_breaker_instance(name: str | None, settings: CircuitBreakerSettings) -> CircuitBreaker:
    """A private breaker, or the process-wide one called ``name`` (created with the first settings seen)."""
    if not name:
        return CircuitBreaker(settings)
    with _lock:
        existing = _instances.get(name)
        if existing is None:
            existing = _instances[name] = CircuitBreaker(settings, name)
        return existing


def reset_circuit_breakers() -> None:
    """Forget every named instance (tests, and embedding applications that reconfigure)."""
    with _lock:
        _instances.clear()
