"""Applying the error policy to one failing step (source poll, stage, or sink write).

One object decides, for every kind of step, whether to retry with
exponential backoff and jitter, skip, dead-letter or fail the run, so the
behaviour of reference §3 is implemented exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fluxion_flows.executor.metrics import PipelineMetrics
from fluxion_flows.executor.options import ErrorPolicy, PolicyKind
from fluxion_flows.spi.batch import Document, Positions
from fluxion_flows.spi.sink import Batch, NonRetryableError, RetryLater

T = TypeVar("T")
log = logging.getLogger("fluxion_flows.executor")


class Step(enum.StrEnum):
    SOURCE = "source"
    STAGE = "stage"
    SINK = "sink"


class PipelineFailed(Exception):
    """The error policy gave up: the run stops after committing what was delivered."""

    def __init__(self, step: Step, where: str, cause: BaseException) -> None:
        super().__init__(f"{step.value} failure at {where}: {type(cause).__name__}: {cause}")
        self.step = step
        self.where = where
        self.cause = cause


class Stopping(Exception):
    """A retry backoff was interrupted because the run is stopping; the batch stays undelivered."""


class Outcome(enum.Enum):
    DONE = "done"
    SKIPPED = "skipped"
    DEAD_LETTERED = "deadLettered"


@dataclass
class Failure:
    """What failed, where, with which input: the dead-letter envelope's error context."""

    step: Step
    where: str
    documents: list[Document]
    positions: Positions
    extra: dict[str, Any] = field(default_factory=dict)


def describe_error(error: BaseException) -> dict[str, Any]:
    """Type and message, plus any structured detail the error offers (e.g. HTTP status, body excerpt)."""
    kind = getattr(error, "error_type", None) or type(error).__name__
    info: dict[str, Any] = {"type": kind, "message": str(error)}
    for attribute in ("status", "status_code", "body_excerpt", "operator", "path"):
        value = getattr(error, attribute, None)
        if value not in (None, ""):
            info[attribute] = value
    return info


@dataclass
class _GaveUp:
    error: Exception
    attempts: int


BatchAction = Callable[[list[Document], Failure], Awaitable[T]]
"""Work on (part of) a batch; it may annotate the Failure (e.g. which stage failed)."""

Isolate = Callable[[BaseException], bool]
"""Whether an error is about the documents (worth finding which ones) or about the destination."""


def always(error: BaseException) -> bool:
    return True


def never(error: BaseException) -> bool:
    return False


def rejected_content(error: BaseException) -> bool:
    """A sink error that another attempt cannot fix is taken to be about the documents (e.g. HTTP 400)."""
    return isinstance(error, NonRetryableError)


class PolicyRunner:
    def __init__(
        self,
        policy: ErrorPolicy,
        metrics: PipelineMetrics,
        stopping: asyncio.Event,
        on_dead_letter: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.policy = policy
        self.metrics = metrics
        self._stopping = stopping
        self._on_dead_letter = on_dead_letter
        self._random = random.Random()

    async def run(self, action: Callable[[], Awaitable[T]], failure: Failure) -> tuple[Outcome, T | None]:
        """Run ``action`` under the policy: its result, or how the failure was absorbed."""
        result = await self._attempts(action, failure)
        if isinstance(result, _GaveUp):
            return await self.give_up(result.error, failure, result.attempts), None
        return Outcome.DONE, result

    async def run_batch(self, action: BatchAction[T], failure: Failure, *, isolate: Isolate) -> list[T]:
        """Run ``action`` on ``failure.documents`` under the policy; the results of what succeeded.

        When the policy gives up on the whole batch with skip or dead-letter and
        ``isolate(error)`` says the error is about the documents (a stage error,
        a 400) rather than the destination (a timeout), the batch is halved until
        the documents that fail on their own are found: only they are skipped or
        dead-lettered, the others carry on. Retries have already been spent on
        the whole batch, so each part gets one attempt.
        """
        documents = failure.documents
        result = await self._attempts(lambda: action(documents, failure), failure)
        if not isinstance(result, _GaveUp):
            return [result]
        if not isolate(result.error) or not self._divisible(result.error, failure):
            await self.give_up(result.error, failure, result.attempts)
            return []
        return await self._halves(action, failure, isolate)

    async def _isolate(self, action: BatchAction[T], failure: Failure, isolate: Isolate) -> list[T]:
        while True:
            try:
                return [await action(failure.documents, failure)]
            except (Stopping, PipelineFailed):
                raise
            except RetryLater as later:
                await self._wait(max(later.retry_in, 0.01))
            except Exception as error:
                self.metrics.failures += 1
                if not isolate(error) or not self._divisible(error, failure):
                    await self.give_up(error, failure)
                    return []
                return await self._halves(action, failure, isolate)

    async def _halves(self, action: BatchAction[T], failure: Failure, isolate: Isolate) -> list[T]:
        documents = failure.documents
        middle = len(documents) // 2
        results: list[T] = []
        for part in (documents[:middle], documents[middle:]):
            results += await self._isolate(action, dataclasses.replace(failure, documents=part), isolate)
        return results

    def _divisible(self, error: BaseException, failure: Failure) -> bool:
        """Worth splitting: several documents, a fallback that lets the rest through, no per-record report."""
        return (
            len(failure.documents) > 1
            and self.policy.fallback is not PolicyKind.FAIL_FAST
            and not isinstance(getattr(error, "failed_documents", None), list)
        )

    async def _attempts(self, action: Callable[[], Awaitable[T]], failure: Failure) -> T | _GaveUp:
        """The action's result, after retries as the policy allows; or why it gave up."""
        attempt = 1
        while True:
            try:
                return await action()
            except (Stopping, PipelineFailed):
                raise
            except RetryLater as later:
                await self._wait(max(later.retry_in, 0.01))
                continue
            except Exception as error:
                self.metrics.failures += 1
                if not self._should_retry(error, attempt):
                    return _GaveUp(error, attempt)
                self.metrics.retries += 1
                log.warning(
                    "%s failed at %s (attempt %d), retrying: %s",
                    failure.step.value,
                    failure.where,
                    attempt,
                    error,
                )
                await self._backoff(attempt)
                attempt += 1

    async def give_up(self, error: BaseException, failure: Failure, attempts: int = 1) -> Outcome:
        """Apply the fallback (skip, dead-letter or fail) to a failure that will not be retried."""
        fallback = self.policy.fallback
        if fallback is PolicyKind.FAIL_FAST:
            raise PipelineFailed(failure.step, failure.where, error) from error
        partial = getattr(error, "failed_documents", None)
        if isinstance(partial, list):  # the sink wrote the rest of the batch: only these failed
            failure.documents = partial
        count = max(1, len(failure.documents))
        if fallback is PolicyKind.SKIP:
            self.metrics.skipped += count
            log.warning("%s failed at %s, batch skipped: %s", failure.step.value, failure.where, error)
            return Outcome.SKIPPED
        await self._dead_letter(error, failure, attempts)
        self.metrics.dead_lettered += count
        return Outcome.DEAD_LETTERED

    def _should_retry(self, error: BaseException, attempt: int) -> bool:
        return (
            self.policy.kind is PolicyKind.RETRY
            and attempt <= self.policy.max_retries
            and not isinstance(error, NonRetryableError)
            and not self._stopping.is_set()
        )

    async def _backoff(self, attempt: int) -> None:
        delay = self.policy.backoff(attempt)
        await self._wait(delay * (1 + self._random.uniform(-self.policy.jitter, self.policy.jitter)))

    async def _wait(self, delay: float) -> None:
        """Sleep, unless the run is stopping: then give up on this batch (it stays undelivered)."""
        try:
            async with asyncio.timeout(max(0.0, delay)):
                await self._stopping.wait()
        except TimeoutError:
            return
        raise Stopping()

    async def _dead_letter(self, error: BaseException, failure: Failure, attempts: int) -> None:
        context = {
            "error": describe_error(error),
            "step": failure.step.value,
            "where": failure.where,
            "positions": failure.positions,
            "attempts": attempts,
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "documentCount": len(failure.documents),
            **failure.extra,
        }
        envelope = Batch([{**context, "documents": list(failure.documents)}], positions=failure.positions)
        sink = self.policy.dead_letter
        assert sink is not None
        for attempt in range(1, 4):
            try:
                await sink.write(envelope)
                break
            except Exception as dlq_error:
                if attempt == 3:
                    raise PipelineFailed(Step.SINK, "errorPolicy.sink (dead letter)", dlq_error) from error
                await asyncio.sleep(self.policy.backoff(attempt))
        await self._on_dead_letter(context)
