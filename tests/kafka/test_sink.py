"""The Kafka sink against a real broker: routing, keys, headers, acknowledgements, per-record failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2
from fluxion_connect_kafka import (
    KafkaFeatureUnsupported,
    KafkaSinkProvider,
    KafkaSourceProvider,
    RecordDeliveryError,
)

from fluxion_flows.registry import ProviderRegistry
from fluxion_flows.spi import Batch, ConnectorKind, NonRetryableError
from tests.kafka.util import REGISTRY, read_topic, sink


async def test_writes_json_with_key_headers_and_acks_all(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    out = sink(bootstrap, topic=topic, keyField="id", headersField="hdr", acks="all", compression="gzip")
    await out.open()
    try:
        docs = [
            {"id": f"o{i}", "total": i, "hdr": {"source": "test", "n": i}, "_meta": {"offset": i}}
            for i in range(20)
        ]
        await out.write(Batch(docs))
    finally:
        await out.close()
    records = await read_topic(bootstrap, topic)
    assert sorted(orjson.loads(r.value)["total"] for r in records) == list(range(20))
    by_key = {r.key.decode(): r for r in records}
    assert set(by_key) == {f"o{i}" for i in range(20)}
    assert dict(by_key["o3"].headers) == {"source": b"test", "n": b"3"}
    assert orjson.loads(by_key["o3"].value)["_meta"] == {"offset": 3}  # the document is written whole
    assert len({r.partition for r in records}) == 2  # keys spread over both partitions


async def test_topic_from_field_and_explicit_partition(bootstrap: str, new_topic: Callable[..., str]) -> None:
    first, second = new_topic(partitions=2), new_topic(partitions=2)
    out = sink(bootstrap, topic=first, topicField="route.topic", partition=1)
    await out.open()
    try:
        await out.write(
            Batch([{"n": 1, "route": {"topic": second}}, {"n": 2}, {"n": 3, "route": {"topic": second}}])
        )
    finally:
        await out.close()
    assert [(r.partition, orjson.loads(r.value)["n"]) for r in await read_topic(bootstrap, first)] == [(1, 2)]
    assert sorted(orjson.loads(r.value)["n"] for r in await read_topic(bootstrap, second)) == [1, 3]
    assert {r.partition for r in await read_topic(bootstrap, second)} == {1}


async def test_partition_key_field_hashes_like_kafka(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=4)
    out = sink(bootstrap, topic=topic, partitionKeyField="customer", keyField="id")
    await out.open()
    try:
        await out.write(Batch([{"id": i, "customer": f"c{i % 5}"} for i in range(40)]))
    finally:
        await out.close()
    for record in await read_topic(bootstrap, topic):
        customer = orjson.loads(record.value)["customer"]
        assert record.partition == (murmur2(customer.encode()) & 0x7FFFFFFF) % 4
        assert record.key == str(orjson.loads(record.value)["id"]).encode()


async def test_too_large_record_is_reported_and_the_others_are_delivered(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    out = sink(bootstrap, topic=topic, **{"max.request.size": 10_000})
    await out.open()
    try:
        docs: list[dict[str, Any]] = [
            {"n": 0},
            {"n": 1, "blob": "x" * 20_000, "_meta": {"topic": "in", "partition": 2, "offset": 41}},
            {"n": 2},
        ]
        with pytest.raises(RecordDeliveryError) as caught:
            await out.write(Batch(docs))
    finally:
        await out.close()
    error: RecordDeliveryError = caught.value
    assert isinstance(error, NonRetryableError)
    assert [f.index for f in error.failed] == [1] and error.delivered == 2
    assert error.failed_documents == [docs[1]]
    assert "record 1 (from in:2 offset 41)" in str(error) and "MessageSizeTooLarge" in str(error)
    assert sorted(orjson.loads(r.value)["n"] for r in await read_topic(bootstrap, topic)) == [0, 2]


async def test_unserialisable_document_is_a_record_failure(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    out = sink(bootstrap, topic=topic)
    await out.open()
    try:
        with pytest.raises(RecordDeliveryError) as caught:
            await out.write(Batch([{"n": 0}, {"n": 1, "bad": object()}]))
    finally:
        await out.close()
    assert [f.index for f in caught.value.failed] == [1]


@pytest.mark.parametrize("prop", [{"enable.idempotence": "true"}, {"transactional.id": "fluxion-tx"}])
async def test_idempotence_and_transactions_fail_clearly_on_this_broker(
    bootstrap: str, new_topic: Callable[..., str], prop: dict[str, str]
) -> None:
    out = sink(bootstrap, topic=new_topic(partitions=1), acks="all", **prop)
    with pytest.raises(KafkaFeatureUnsupported) as caught:
        await out.open()
    message = str(caught.value)
    assert "does not support `enable.idempotence` or `transactional.id`" in message
    assert "InitProducerId" in message


async def test_catalogs_list_topics_with_partitions(bootstrap: str, new_topic: Callable[..., str]) -> None:
    orders, other = new_topic(partitions=3, suffix="-cat"), new_topic(partitions=2, suffix="-cat")
    source_config = REGISTRY.configure(
        ConnectorKind.SOURCE, "kafka", {"bootstrapServers": bootstrap, "topic": orders}
    )
    streams = await KafkaSourceProvider().discover_streams(source_config)
    assert [(s.name, s.partitions, s.namespace) for s in streams] == [(orders, 3, f"fluxion-{orders}")]
    entry = streams[0].as_dict()
    assert entry["cursorFields"] == ["offset"] and entry["sourceDefinedCursor"] is True
    assert entry["syncModes"] == ["FULL_REFRESH", "INCREMENTAL"]

    pattern = REGISTRY.configure(
        ConnectorKind.SOURCE,
        "kafka",
        {"bootstrapServers": bootstrap, "topicPattern": ".*-cat", "groupId": "g"},
    )
    found = {s.name: s.partitions for s in await KafkaSourceProvider().discover_streams(pattern)}
    assert found[orders] == 3 and found[other] == 2 and all(name.endswith("-cat") for name in found)

    sink_config = REGISTRY.configure(
        ConnectorKind.SINK, "kafka", {"bootstrapServers": bootstrap, "topic": other}
    )
    assert [(s.name, s.partitions) for s in await KafkaSinkProvider().discover_streams(sink_config)] == [
        (other, 2)
    ]


def test_the_providers_register_under_type_kafka() -> None:
    registry = ProviderRegistry(extra=[KafkaSourceProvider(), KafkaSinkProvider()])
    assert "kafka" in registry.types(ConnectorKind.SOURCE) and "kafka" in registry.types(ConnectorKind.SINK)
    assert KafkaSourceProvider.shared_claims is True  # runs of one pipeline share a consumer group
    assert KafkaSourceProvider().descriptor().type == KafkaSinkProvider().descriptor().type == "kafka"
