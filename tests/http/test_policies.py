"""Retry and circuit-breaker rules on their own (no network; a fake clock where time matters)."""

from __future__ import annotations

import email.utils
import random

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxion_flows.connectors.http import CircuitOpenError
from fluxion_flows.connectors.http.circuit_breaker import CircuitBreaker, CircuitBreakerSettings, State
from fluxion_flows.connectors.http.retry import Retry, RetrySettings, parse_retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_by_multiplier_and_is_capped() -> None:
    retry = Retry(RetrySettings(wait_duration=0.1, multiplier=2.0, randomization_factor=0.0, max_wait=0.5))
    assert [retry.backoff(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


@given(attempt=st.integers(1, 8), factor=st.floats(0.0, 0.99), seed=st.integers(0, 2**32))
def test_jitter_stays_within_the_randomization_factor(attempt: int, factor: float, seed: int) -> None:
    settings = RetrySettings(wait_duration=0.05, multiplier=1.5, randomization_factor=factor, max_wait=60)
    wait = Retry(settings, rng=random.Random(seed)).backoff(attempt)
    base = 0.05 * 1.5 ** (attempt - 1)
    assert base * (1 - factor) - 1e-12 <= wait <= base * (1 + factor) + 1e-12


def test_retry_after_parsing() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after(email.utils.formatdate(1_000_030, usegmt=True), now=1_000_000) == 30.0
    assert parse_retry_after(email.utils.formatdate(999_000, usegmt=True), now=1_000_000) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None


def test_retry_after_only_for_429_and_503_and_capped() -> None:
    retry = Retry(RetrySettings(max_wait=10))
    assert retry.retry_after(429, "3") == 3
    assert retry.retry_after(503, "99") == 10
    assert retry.retry_after(500, "3") is None
    assert Retry(RetrySettings(honour_retry_after=False)).retry_after(503, "3") is None


def test_default_retryable_statuses_and_exceptions() -> None:
    retry = Retry(RetrySettings())
    assert [s for s in range(400, 600) if retry.status_retryable(s)] == [408, 429, 500, 502, 503, 504]
    request = httpx.Request("POST", "http://x")
    assert retry.exception_retryable(httpx.ConnectError("refused", request=request))
    assert retry.exception_retryable(httpx.ReadTimeout("slow", request=request))
    assert retry.exception_retryable(httpx.RemoteProtocolError("dropped", request=request))
    assert not retry.exception_retryable(httpx.UnsupportedProtocol("ftp", request=request))
    assert not retry.exception_retryable(ValueError("bug"))


def test_retry_on_lists_replace_statuses_and_exceptions_independently() -> None:
    settings = RetrySettings.from_map({"retryOn": ["5xx", 409, "timeout"], "ignore": [501, "ReadTimeout"]})
    retry = Retry(settings)
    assert retry.status_retryable(409) and retry.status_retryable(599) and not retry.status_retryable(501)
    assert not retry.status_retryable(429)
    request = httpx.Request("POST", "http://x")
    assert retry.exception_retryable(httpx.ConnectTimeout("t", request=request))
    assert not retry.exception_retryable(httpx.ReadTimeout("t", request=request))
    assert not retry.exception_retryable(httpx.ConnectError("t", request=request))
    only_statuses = RetrySettings.from_map({"retryOn": [418]})
    assert only_statuses.retry_exceptions == RetrySettings().retry_exceptions


def breaker(clock: Clock, **overrides: object) -> CircuitBreaker:
    values = {
        "failureRateThreshold": 50,
        "minimumNumberOfCalls": 4,
        "slidingWindowSize": 4,
        "waitDurationInOpenState": 10,
        "permittedCallsInHalfOpenState": 2,
        **overrides,
    }
    return CircuitBreaker(CircuitBreakerSettings.from_map(values), "t", clock=clock)


def state_of(cb: CircuitBreaker) -> State:
    """The state through a function call, so type checkers do not narrow it between calls."""
    return cb.state


def call(cb: CircuitBreaker, failed: bool, duration: float = 0.0) -> None:
    cb.record(cb.acquire(), failed=failed, duration=duration)


def test_count_window_forgets_old_calls() -> None:
    cb = breaker(Clock())
    for failed in (True, False, False, False, True, False, False, False):
        call(cb, failed)
    assert state_of(cb) is State.CLOSED  # never more than 1 failure in the last 4 calls
    call(cb, True)
    assert state_of(cb) is State.CLOSED  # last 4: S S S F = 25%
    call(cb, True)
    assert state_of(cb) is State.OPEN  # last 4: S S F F = 50%


def test_time_window_counts_only_the_last_seconds() -> None:
    clock = Clock()
    cb = breaker(clock, slidingWindowType="time", slidingWindowSize=10, minimumNumberOfCalls=4)
    call(cb, True)
    call(cb, True)
    clock.now += 11  # those two failures leave the window
    for _ in range(3):
        call(cb, False)
    call(cb, True)
    assert state_of(cb) is State.CLOSED  # 1 of 4
    clock.now += 1
    call(cb, True)
    assert state_of(cb) is State.CLOSED  # 2 of 5
    call(cb, True)
    assert state_of(cb) is State.OPEN  # 3 of 6 = 50%


def test_open_state_waits_then_permits_a_bounded_number_of_trials() -> None:
    clock = Clock()
    cb = breaker(clock)
    for _ in range(4):
        call(cb, True)
    assert state_of(cb) is State.OPEN
    with pytest.raises(CircuitOpenError) as caught:
        cb.acquire()
    assert caught.value.retry_in == pytest.approx(10)
    clock.now += 10
    first, second = cb.acquire(), cb.acquire()
    assert state_of(cb) is State.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        cb.acquire()  # only 2 trial calls in flight
    cb.release(second)  # a cancelled trial frees its slot
    third = cb.acquire()
    cb.record(first, failed=False, duration=0)
    cb.record(third, failed=False, duration=0)
    assert state_of(cb) is State.CLOSED
    assert cb.transitions == {"open": 1, "half_open": 1, "closed": 1}


def test_outcomes_of_calls_admitted_in_an_earlier_state_are_ignored() -> None:
    clock = Clock()
    cb = breaker(clock)
    stale = cb.acquire()  # a slow call admitted while CLOSED
    for _ in range(4):
        call(cb, True)
    clock.now += 10
    trial = cb.acquire()
    cb.record(stale, failed=True, duration=0)  # arrives late: must not count as a failed trial
    cb.record(trial, failed=False, duration=0)
    call(cb, False)
    assert state_of(cb) is State.CLOSED


def test_slow_call_rate_opens_the_breaker() -> None:
    cb = breaker(Clock(), slowCallDurationThreshold="1s", slowCallRateThreshold=75, failureRateThreshold=100)
    for duration in (2.0, 2.0, 0.1, 2.0):
        call(cb, False, duration)
    assert state_of(cb) is State.OPEN


def test_disabled_breaker_admits_everything() -> None:
    cb = breaker(Clock(), enabled=False)
    for _ in range(20):
        call(cb, True)
    assert state_of(cb) is State.CLOSED
