"""A third-party plugin in under 80 lines: one source, one sink, registered through entry points."""

from __future__ import annotations

from pathlib import Path

from fluxion_flows.spi import (
    AbstractAsyncStreamingSource,
    Batch,
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorOption,
    OptionSchema,
    OptionType,
    SinkContext,
    SinkProvider,
    SourceBatch,
    SourceContext,
    SourceProvider,
    StreamingSink,
    StreamingSource,
)


class CountdownSource(AbstractAsyncStreamingSource):
    """Counts down from ``start`` to 1; its position is the next number to emit, so it resumes exactly."""

    def __init__(self, start: int, step: int) -> None:
        super().__init__()
        self.next, self.step = start, step

    async def poll(self) -> SourceBatch | None:
        if self.next < 1:
            return None  # end of stream
        numbers = range(self.next, max(0, self.next - self.step), -1)
        self.next = numbers[-1] - 1
        return SourceBatch([{"n": n} for n in numbers], positions={"countdown": self.next})


class CountdownSourceProvider(SourceProvider):
    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor("countdown", "Countdown", "Emits start, start-1, ..., 1.")

    def options(self) -> OptionSchema:
        return OptionSchema(
            [
                ConnectorOption("start", OptionType.INT, required=True, description="First number."),
                ConnectorOption("step", OptionType.INT, default=10, description="Numbers per batch."),
            ]
        )

    def create(self, context: SourceContext, config: ConnectorConfig) -> StreamingSource:
        start = int(context.positions.get("countdown", config["start"]))
        return CountdownSource(start, config["step"])


class NumberedFileSink(StreamingSink):
    """Appends ``<line number> <json>`` lines; write returns only after the data is flushed."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.lines = sum(1 for _ in self.path.open()) if self.path.exists() else 0

    async def write(self, batch: Batch) -> None:
        with self.path.open("a") as out:
            for document in batch:
                self.lines += 1
                out.write(f"{self.lines} {document}\n")


class NumberedFileSinkProvider(SinkProvider):
    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor("numbered-file", "Numbered file", "Writes numbered lines.")

    def options(self) -> OptionSchema:
        return OptionSchema([ConnectorOption("path", OptionType.STRING, required=True)])

    def create(self, context: SinkContext, config: ConnectorConfig) -> StreamingSink:
        return NumberedFileSink(config["path"])
