"""Helpers for driving the SDK's async clients against the emulator in tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient

DEFAULT_TIMEOUT = 15.0


async def wait_until(predicate: Callable[[], bool], what: str, within: float = DEFAULT_TIMEOUT) -> None:
    """Poll ``predicate`` until it holds, failing with ``what`` after ``within`` seconds.

    Tests synchronise on observable conditions with a deadline, never on fixed sleeps.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


async def send_bodies(producer: EventHubProducerClient, bodies: list[str], **batch_options: Any) -> None:
    """Send ``bodies`` as one batch built with the SDK's size-aware batch."""
    batch = await producer.create_batch(**batch_options)
    for body in bodies:
        batch.add(EventData(body))
    await producer.send_batch(batch)


class Reception:
    """Runs ``receive_batch`` (or ``receive``) in a task and collects events and errors.

    The SDK's receive calls run until cancelled (``close()`` may not end
    ``receive_batch`` promptly), so stopping cancels the task.
    """

    def __init__(self, client: EventHubConsumerClient, *, batch: bool = True, **options: Any) -> None:
        self.client = client
        self.events: list[EventData] = []
        self.errors: list[Exception] = []
        self.batch = batch
        self.options = options
        self.task: asyncio.Task[None] | None = None
        self.on_batch_hook: Callable[[list[EventData]], Awaitable[None]] | None = None

    def start(self) -> Reception:
        """Start receiving in the background."""

        async def on_error(_context: Any, error: Exception) -> None:
            self.errors.append(error)

        if self.batch:

            async def on_batch(context: Any, events: list[EventData]) -> None:
                self.events.extend(events)
                if self.on_batch_hook is not None:
                    await self.on_batch_hook(events)

            coroutine = self.client.receive_batch(on_batch, on_error=on_error, **self.options)
        else:

            async def on_event(context: Any, event: EventData | None) -> None:
                if event is not None:
                    self.events.append(event)
                    await context.update_checkpoint(event)

            coroutine = self.client.receive(on_event, on_error=on_error, **self.options)
        self.task = asyncio.create_task(coroutine)
        return self

    def bodies(self) -> list[str]:
        """The received bodies as text, in arrival order."""
        return [event.body_as_str() for event in self.events]

    async def wait_for(self, count: int, within: float = DEFAULT_TIMEOUT) -> list[str]:
        """Wait until at least ``count`` events arrived; return the bodies."""
        await wait_until(lambda: len(self.events) >= count, f"{count} events", within)
        return self.bodies()

    async def stop(self) -> None:
        """Cancel the receive task and wait for it to finish."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
