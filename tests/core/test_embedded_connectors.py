"""The embedded connectors: file source (JSON Lines, JSON array, follow), file sink, generator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from fluxion_flows.connectors.file_sink import FileSink
from fluxion_flows.connectors.generator import GeneratorSourceProvider, make_order
from fluxion_flows.registry import ProviderRegistry
from fluxion_flows.spi import (
    Batch,
    ConnectorKind,
    RunMode,
    SourceBatch,
    SourceContext,
    StartFrom,
    StreamingSource,
)

REGISTRY = ProviderRegistry()


def file_source(path: Path, positions: dict[str, Any] | None = None, **options: Any) -> StreamingSource:
    config = REGISTRY.configure(
        ConnectorKind.SOURCE, "file", {"path": str(path), "pollInterval": 0.01, **options}
    )
    mode = options.pop("_mode", RunMode.CONTINUOUS)
    return REGISTRY.create_source(SourceContext("t", positions or {}, mode=mode), config)


async def drain(source: StreamingSource, size: int = 3) -> tuple[list[dict[str, Any]], list[SourceBatch]]:
    await source.start()
    batches = []
    while (batch := await source.next_batch(size, 0.1)) is not None:
        batches.append(batch)
    await source.close()
    return [d for b in batches for d in b.documents], batches


async def test_jsonl_resumes_exactly_from_a_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"i": i, "text": "é" * i}) + "\n" for i in range(10)))
    docs, batches = await drain(file_source(path))
    assert [d["i"] for d in docs] == list(range(10))
    assert batches[-1].positions == {str(path): path.stat().st_size}
    middle = batches[1].positions
    rest, _ = await drain(file_source(path, middle))
    assert [d["i"] for d in rest] == list(range(6, 10))
    assert docs[0]["_meta"]["file"] == str(path)


async def test_json_array_resumes_from_a_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps([{"i": i, "s": "ü" * i} for i in range(8)], indent=1))
    docs, batches = await drain(file_source(path))
    assert [d["i"] for d in docs] == list(range(8))
    rest, _ = await drain(file_source(path, batches[0].positions))
    assert [d["i"] for d in rest] == list(range(3, 8))


async def test_invalid_json_lines_become_record_failures(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"i": 1}\n{broken\n{"i": 3}\n')
    docs, batches = await drain(file_source(path), size=10)
    failures = [f for b in batches for f in b.failures]
    assert [d["i"] for d in docs] == [1, 3]
    assert len(failures) == 1 and failures[0].raw == "{broken" and "invalid JSON" in failures[0].error
    assert failures[0].position == {str(path): len('{"i": 1}\n{broken\n')}


async def test_follow_mode_tails_a_growing_file_and_waits_for_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"i": 0}\n')
    source = file_source(path, follow=True)
    await source.start()
    seen: list[int] = []

    async def read_until(count: int) -> None:
        while len(seen) < count:
            batch = await source.next_batch(10, 0.05)
            assert batch is not None
            seen.extend(d["i"] for d in batch.documents)

    await asyncio.wait_for(read_until(1), 5)
    with path.open("a") as handle:
        handle.write('{"i": 1}\n{"i": ')  # a half-written line must not be consumed
        handle.flush()
        await asyncio.wait_for(read_until(2), 5)
        handle.write("2}\n")
    await asyncio.wait_for(read_until(3), 5)
    assert seen == [0, 1, 2]
    await source.close()


async def test_file_sink_appends_json_lines(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "out" / "o.jsonl")
    await sink.open()
    await sink.write(Batch([{"a": 1}, {"b": "ß"}]))
    await sink.write(Batch([]))
    await sink.close()
    lines = (tmp_path / "out" / "o.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == [{"a": 1}, {"b": "ß"}]


@pytest.mark.parametrize(
    "existing, kept",
    [
        (b'{"a": 1}\n{"a": 2, "pad": "xx', [{"a": 1}]),  # a write cut short by a kill: cut
        (b'{"a": 1}\n{"a": 2}', [{"a": 1}, {"a": 2}]),  # whole, no final newline: ended
        (b'{"a": 1', []),  # nothing but a fragment
        (b"", []),
    ],
    ids=["torn", "no-final-newline", "only-fragment", "empty"],
)
async def test_file_sink_appends_after_whole_lines_only(
    tmp_path: Path, existing: bytes, kept: list[Any]
) -> None:
    path = tmp_path / "o.jsonl"
    path.write_bytes(existing)
    sink = FileSink(path)
    await sink.open()
    await sink.write(Batch([{"b": 1}]))
    await sink.close()
    assert [orjson.loads(line) for line in path.read_bytes().splitlines()] == [*kept, {"b": 1}]


async def test_generator_is_deterministic_and_resumable() -> None:
    provider = GeneratorSourceProvider()
    config = REGISTRY.configure(ConnectorKind.SOURCE, "generator", {"count": 25, "seed": 9})
    whole, _ = await drain(provider.create(SourceContext("g"), config), size=10)
    assert whole == [make_order(9, n) for n in range(25)]
    resumed, _ = await drain(provider.create(SourceContext("g", {"generator": 20}), config), size=10)
    assert resumed == whole[20:]
    replay, _ = await drain(
        provider.create(SourceContext("g", {"generator": 20}, StartFrom("earliest")), config)
    )
    assert replay == whole
