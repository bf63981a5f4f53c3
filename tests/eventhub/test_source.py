"""The ``eventhub`` source against the emulator: documents, positions, starts, drain, lag."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import pytest
from azure.eventhub.aio import EventHubConsumerClient
from fluxion_connect_eventhub.source import _ConsumerClient

from fluxion_flows.errors import OptionError
from fluxion_flows.spi import ConnectorKind, RunMode, SourceContext, StartFrom
from tests.eventhub.util import REGISTRY, send, source
from tests.support.eventhub_emulator import EventHubEmulator
from tests.support.polling import collect, documents, has, merged_positions, wait_for

MakeHub = Callable[[int], str]


async def test_events_become_documents_with_meta(emulator: EventHubEmulator, make_hub: MakeHub) -> None:
    hub = make_hub(2)
    await send(
        emulator, hub, [{"id": 1, "name": "a"}], partition_key="k1", properties={"kind": "order", "n": 3}
    )
    await send(emulator, hub, ["plain text", "[1, 2]", "42", b'{"broken": '], partition_id="1")
    src = source(emulator, hub)
    await src.start()
    try:
        batches = await collect(src, has(5))
    finally:
        await src.close()
    docs = documents(batches)
    by_body = {str(d.get("body", d.get("id"))): d for d in docs}
    order = by_body["1"]
    assert order["name"] == "a"
    meta = order["_meta"]
    assert meta["partitionKey"] == "k1"
    assert meta["properties"] == {"kind": "order", "n": 3}
    assert meta["eventHub"] == hub and meta["consumerGroup"] == "$Default"
    assert isinstance(meta["sequenceNumber"], int) and isinstance(meta["offset"], str)
    assert dt.datetime.fromisoformat(meta["enqueuedTime"]).tzinfo is not None
    text = by_body["plain text"]
    assert text["_meta"]["partitionId"] == "1"
    assert text["_meta"]["sequenceNumber"] + 1 == by_body["[1, 2]"]["_meta"]["sequenceNumber"]
    assert by_body["[1, 2]"]["body"] == [1, 2]
    assert by_body["42"]["body"] == 42
    assert by_body['{"broken": ']["body"] == '{"broken": '  # invalid JSON stays text
    assert not [f for b in batches for f in b.failures]


async def test_non_utf8_body_is_a_record_failure(emulator: EventHubEmulator, make_hub: MakeHub) -> None:
    hub = make_hub(1)
    await send(emulator, hub, [b"\xff\xfe\x00binary", {"ok": True}])
    src = source(emulator, hub)
    await src.start()
    try:
        batches = await collect(src, has(2))
    finally:
        await src.close()
    failures = [f for b in batches for f in b.failures]
    assert len(failures) == 1
    assert "neither JSON nor UTF-8" in failures[0].error
    assert failures[0].position["sequenceNumber"] == 0
    assert [d["ok"] for d in documents(batches)] == [True]
    assert merged_positions(batches)["0"]["sequenceNumber"] == 1


async def test_positions_resume_after_the_last_delivered_event(
    emulator: EventHubEmulator, make_hub: MakeHub
) -> None:
    hub = make_hub(2)
    await send(emulator, hub, [{"n": i} for i in range(10)], partition_id="0")
    await send(emulator, hub, [{"n": i} for i in range(10, 15)], partition_id="1")
    first = source(emulator, hub, maxBatchSize=4)
    await first.start()
    try:
        batches = await collect(first, has(15), max_documents=3)
    finally:
        await first.close()
    assert all(len(b) <= 3 for b in batches)
    positions = merged_positions(batches)
    assert positions["0"]["sequenceNumber"] == 9 and positions["1"]["sequenceNumber"] == 4
    partial = {"0": next(b.positions["0"] for b in batches if "0" in b.positions)}
    seen = partial["0"]["sequenceNumber"]

    await send(emulator, hub, [{"n": 99}], partition_id="1")
    second = source(emulator, hub, positions={**positions, **partial})
    await second.start()
    try:
        resumed = documents(await collect(second, has(10 - seen)))
    finally:
        await second.close()
    by_partition = {(d["_meta"]["partitionId"], d["n"]) for d in resumed}
    assert by_partition == {("0", n) for n in range(seen + 1, 10)} | {("1", 99)}


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("earliest", [0, 1, 2, 3, 4]),
        ("sequenceNumber:3", [3, 4]),
        ("seq:0", [0, 1, 2, 3, 4]),
        ({"0": "sequenceNumber:4", "default": "earliest"}, [4]),
    ],
)
async def test_start_positions(
    emulator: EventHubEmulator, make_hub: MakeHub, start: object, expected: list[int]
) -> None:
    hub = make_hub(1)
    await send(emulator, hub, [{"n": i} for i in range(5)])
    src = source(emulator, hub, startPosition=start)
    await src.start()
    try:
        docs = documents(await collect(src, has(len(expected))))
    finally:
        await src.close()
    assert [d["n"] for d in docs] == expected


async def test_each_partition_starts_where_its_start_position_says(
    emulator: EventHubEmulator, make_hub: MakeHub
) -> None:
    """Receivers start before the partition ids are read: starts are answered per partition id."""
    hub = make_hub(3)
    for pid in ("0", "1", "2"):
        await send(emulator, hub, [{"p": pid, "n": i} for i in range(4)], partition_id=pid)
    start = {"1": "sequenceNumber:2", "2": "latest", "default": "earliest"}
    src = source(emulator, hub, startPosition=start)
    await src.start()
    try:
        docs = documents(await collect(src, has(6)))
        await wait_for(lambda: len(emulator.receivers(hub, 2)) == 1, what="the receiver to attach")
        await send(emulator, hub, [{"p": "2", "n": 4}], partition_id="2")
        docs += documents(await collect(src, has(1)))
    finally:
        await src.close()
    assert sorted((d["p"], d["n"]) for d in docs) == [
        ("0", 0),
        ("0", 1),
        ("0", 2),
        ("0", 3),
        ("1", 2),
        ("1", 3),
        ("2", 4),
    ]


async def test_concurrent_partition_id_reads_share_one_request(
    emulator: EventHubEmulator, make_hub: MakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = make_hub(2)
    requests: list[str] = []
    original = EventHubConsumerClient.get_partition_ids

    async def counted(self: EventHubConsumerClient) -> list[str]:
        requests.append(hub)
        return await original(self)

    monkeypatch.setattr(EventHubConsumerClient, "get_partition_ids", counted)
    client = _ConsumerClient.from_connection_string(
        emulator.connection_string(hub), consumer_group="$Default"
    )
    async with client:
        first, second = await asyncio.gather(client.get_partition_ids(), client.get_partition_ids())
        assert first == second == ["0", "1"] and len(requests) == 1
        assert await client.get_partition_ids() == ["0", "1"]  # a later read asks again
    assert len(requests) == 2


async def test_start_at_an_offset_and_a_time(emulator: EventHubEmulator, make_hub: MakeHub) -> None:
    hub = make_hub(1)
    await send(emulator, hub, [{"n": i} for i in range(3)])
    stored = emulator.events(hub, 0)
    await send(emulator, hub, [{"n": 3}])
    later_event = emulator.events(hub, 0)[3]
    by_offset = source(emulator, hub, startPosition=f"offset:{stored[1].offset}")
    by_time = source(emulator, hub, startPosition=later_event.enqueued_time.isoformat())
    for src, expected in ((by_offset, [1, 2, 3]), (by_time, [3])):
        await src.start()
        try:
            docs = documents(await collect(src, has(len(expected))))
        finally:
            await src.close()
        assert [d["n"] for d in docs][: len(expected)] == expected


async def test_latest_reads_only_new_events(emulator: EventHubEmulator, make_hub: MakeHub) -> None:
    hub = make_hub(1)
    await send(emulator, hub, [{"old": True}])
    src = source(emulator, hub, startPosition="latest")
    await src.start()
    try:
        await wait_for(lambda: len(emulator.receivers(hub, 0)) == 1, what="the receiver to attach")
        await send(emulator, hub, [{"new": True}])
        docs = documents(await collect(src, has(1)))
    finally:
        await src.close()
    assert docs[0].get("new") is True and len(docs) == 1


async def test_explicit_start_from_overrides_checkpoint(
    emulator: EventHubEmulator, make_hub: MakeHub
) -> None:
    hub = make_hub(1)
    await send(emulator, hub, [{"n": i} for i in range(3)])
    checkpoint = {"0": {"sequenceNumber": 2, "offset": str(emulator.events(hub, 0)[2].offset)}}
    src = source(emulator, hub, positions=checkpoint, start_from=StartFrom(kind="earliest"))
    await src.start()
    try:
        docs = documents(await collect(src, has(3)))
    finally:
        await src.close()
    assert [d["n"] for d in docs] == [0, 1, 2]


async def test_drain_ends_at_the_backlog_seen_at_start(emulator: EventHubEmulator, make_hub: MakeHub) -> None:
    hub = make_hub(3)
    await send(emulator, hub, [{"n": i} for i in range(6)], partition_id="0")
    await send(emulator, hub, [{"n": i} for i in range(6, 8)], partition_id="1")
    checkpoint = {"1": {"sequenceNumber": 0, "offset": str(emulator.events(hub, 1)[0].offset)}}
    src = source(emulator, hub, positions=checkpoint, mode=RunMode.DRAIN)
    await src.start()
    try:
        progress = src.progress()
        assert progress is not None and progress.target == 7 and progress.consumed == 0
        await send(emulator, hub, [{"n": 100}], partition_id="0")  # after the start: not part of the drain
        batches = await collect(src, lambda batches: False)
        progress = src.progress()
    finally:
        await src.close()
    assert sorted(d["n"] for d in documents(batches)) == [0, 1, 2, 3, 4, 5, 7]
    assert progress is not None and progress.fraction == 1.0
    assert merged_positions(batches)["0"]["sequenceNumber"] == 5


async def test_drain_of_an_empty_or_caught_up_hub_ends_at_once(
    emulator: EventHubEmulator, make_hub: MakeHub
) -> None:
    hub = make_hub(2)
    await send(emulator, hub, [{"n": 1}], partition_id="0")
    caught_up = {"0": {"sequenceNumber": 0, "offset": "0"}}
    src = source(emulator, hub, positions=caught_up, mode=RunMode.DRAIN)
    await src.start()
    try:
        assert await src.next_batch(10, 1.0) is None
    finally:
        await src.close()


async def test_lag_per_partition(emulator: EventHubEmulator, make_hub: MakeHub) -> None:
    hub = make_hub(2)
    await send(emulator, hub, [{"n": i} for i in range(5)], partition_id="0")
    await send(emulator, hub, [{"n": i} for i in range(3)], partition_id="1")
    src = source(emulator, hub, queueCapacity=1, maxBatchSize=2, prefetchCount=2)
    await src.start()
    try:
        await wait_for(lambda: "lag.0" in src.metrics() and "lag.1" in src.metrics(), what="lag metrics")
        before = src.metrics()
        assert before["lag.0"] == 5 and before["lag.1"] == 3 and before["lag"] == 8
        await collect(src, has(8))
        after = src.metrics()
    finally:
        await src.close()
    assert after["lag"] == 0 and after["ownedPartitions"] == 2


def test_option_errors_name_the_option(emulator: EventHubEmulator) -> None:
    with pytest.raises(OptionError, match=r"startPosition.*ambiguous"):
        source(emulator, "h", startPosition="12")
    with pytest.raises(OptionError, match="ownershipStore"):
        source(emulator, "h", ownershipStore="mysql://x")
    with pytest.raises(OptionError, match="eventHubName") as missing:
        config = REGISTRY.configure(
            ConnectorKind.SOURCE,
            "eventhub",
            {"connectionString": "Endpoint=sb://x/;SharedAccessKey=topsecret"},
        )
        REGISTRY.create_source(SourceContext(pipeline_id="p"), config)
    assert "topsecret" not in str(missing.value)
