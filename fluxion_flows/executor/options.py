"""Runtime settings of the executor, already validated (the manifest layer builds these)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fluxion_flows.spi.sink import StreamingSink


@dataclass(frozen=True)
class RuntimeOptions:
    """Fluxion's ``runtime:`` block plus our run limits."""

    micro_batch_size: int = 500
    queue_capacity: int = 2048
    source_queue_capacity: int = 16
    worker_thread_pool_size: int = 1
    direct_handoff: bool = False
    max_batch_wait: float = 0.5
    max_documents: int | None = None
    max_duration: float | None = None
    observe_interval: float = 5.0
    stop_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.micro_batch_size < 1:
            raise ValueError("micro_batch_size must be at least 1")
        if self.queue_capacity < 1:
            raise ValueError("queue_capacity must be at least 1")


class PolicyKind(enum.StrEnum):
    FAIL_FAST = "failFast"
    RETRY = "retry"
    SKIP = "skipAndContinue"
    DEAD_LETTER = "deadLetter"


@dataclass(frozen=True)
class ErrorPolicy:
    """What happens when a source poll, a stage or a sink write fails (reference §3)."""

    kind: PolicyKind = PolicyKind.FAIL_FAST
    max_retries: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.2
    then: PolicyKind = PolicyKind.FAIL_FAST
    dead_letter: StreamingSink | None = None

    @property
    def fallback(self) -> PolicyKind:
        """The policy applied once retrying is over (or was never the policy)."""
        return self.then if self.kind is PolicyKind.RETRY else self.kind

    def __post_init__(self) -> None:
        if PolicyKind.RETRY is self.then:
            raise ValueError("`then` cannot be retry")
        if self.fallback is PolicyKind.DEAD_LETTER and self.dead_letter is None:
            raise ValueError("the deadLetter policy needs a dead-letter sink")

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based), without jitter."""
        return float(min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1)))


@dataclass(frozen=True)
class CheckpointOptions:
    """When checkpoints are committed: on an interval, every N documents, and always at shutdown."""

    interval: float = 5.0
    every_documents: int | None = None
