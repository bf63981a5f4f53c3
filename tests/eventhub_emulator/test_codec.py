"""Unit tests of the emulator's byte-level helpers and position resolution (no network)."""

from __future__ import annotations

from typing import Any

import pytest
from proton import Data, Described, Message, symbol, ulong

from tests.support.eventhub_emulator.codec import (
    PARTITION_KEY,
    SEQUENCE_NUMBER,
    FramePadder,
    annotate,
    decode_section,
    pad_frame,
    split_sections,
    unpack_transfer,
)
from tests.support.eventhub_emulator.store import EventStore, InvalidSelector, Partition


def _frame(performative: bytes, payload: bytes = b"", channel: int = 0) -> bytes:
    body = performative + payload
    return (8 + len(body)).to_bytes(4, "big") + bytes((2, 0)) + channel.to_bytes(2, "big") + body


def _performative(code: int, fields: Any) -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), fields))
    return data.encode()


def _field_count(frame: bytes) -> int:
    data = Data()
    data.decode(frame[8:])
    value = data.get_object()
    assert isinstance(value, Described)
    assert isinstance(value.value, list)
    return len(value.value)


def test_pad_frame_fills_every_performative_field_and_keeps_the_payload() -> None:
    transfer = _frame(_performative(0x14, [ulong(0), ulong(7)]), payload=b"PAYLOAD")
    padded = pad_frame(transfer)
    assert _field_count(padded) == 11
    assert padded.endswith(b"PAYLOAD")
    assert int.from_bytes(padded[:4], "big") == len(padded)


def test_pad_frame_turns_an_empty_list_into_a_counted_one() -> None:
    end = _frame(bytes.fromhex("00531745"))  # end with list0
    padded = pad_frame(end)
    assert padded[8:] == bytes.fromhex("005317c00201") + b"\x40"


def test_pad_frame_uses_list32_when_needed_and_leaves_other_frames_alone() -> None:
    attach = _frame(_performative(0x12, ["n" * 300, ulong(1)]))
    assert _field_count(pad_frame(attach)) == 14
    heartbeat = (8).to_bytes(4, "big") + bytes((2, 0, 0, 0))
    assert pad_frame(heartbeat) == heartbeat


def test_frame_padder_passes_headers_and_reassembles_split_frames() -> None:
    stream = b"AMQP\x03\x01\x00\x00" + _frame(_performative(0x44, [0])) + b"AMQP\x00\x01\x00\x00"
    stream += _frame(_performative(0x10, ["container"]))
    padder = FramePadder()
    out = b"".join(padder.feed(stream[i : i + 5]) for i in range(0, len(stream), 5))
    assert out.startswith(b"AMQP\x03\x01\x00\x00")
    assert b"AMQP\x00\x01\x00\x00" in out
    open_frame = out[out.index(b"AMQP\x00\x01\x00\x00") + 8 :]
    assert _field_count(open_frame) == 10


def _message(body: bytes, key: str | None = None) -> bytes:
    message = Message(body=body)
    if key is not None:
        message.annotations = {PARTITION_KEY: key}
    return message.encode()


def test_unpack_transfer_recognises_the_sdk_batch_envelope() -> None:
    inner = [_message(b"one", "k"), _message(b"two", "k")]
    envelope = _performative(0x72, {PARTITION_KEY: "k"})
    envelope += b"".join(_performative(0x75, m) for m in inner)
    messages, key = unpack_transfer(envelope)
    assert messages == inner
    assert key == "k"


def test_unpack_transfer_keeps_a_single_event_whole() -> None:
    single = _message(b"plain body")
    assert unpack_transfer(single) == ([single], None)


def test_annotate_merges_broker_annotations_and_keeps_other_sections() -> None:
    original = Message(body=b"payload", properties={"p": 1})
    original.annotations = {PARTITION_KEY: "key-1"}
    wire, key = annotate(original.encode(), {SEQUENCE_NUMBER: 42})
    assert key == "key-1"
    decoded = Message()
    decoded.decode(wire)
    assert decoded.annotations == {PARTITION_KEY: "key-1", SEQUENCE_NUMBER: 42}
    assert decoded.properties == {"p": 1}
    codes = [code for code, _ in split_sections(wire)]
    assert codes == sorted(codes)  # sections stay in the order the spec requires


def test_annotate_adds_a_section_when_the_message_has_none() -> None:
    wire, key = annotate(_message(b"x"), {symbol("x-opt-offset"): "0"})
    sections = dict(split_sections(wire))
    assert key is None
    assert decode_section(sections[0x72]) == {symbol("x-opt-offset"): "0"}


@pytest.fixture
def partition() -> Partition:
    partition = Partition("hub", "0")
    for i in range(5):
        partition.append(_message(f"e{i}".encode()), None)
    partition.times = [100, 100, 200, 300, 300]
    return partition


@pytest.mark.parametrize(
    ("selector", "index"),
    [
        (None, 0),
        ("amqp.annotation.x-opt-offset > '-1'", 0),
        ("amqp.annotation.x-opt-offset > '@latest'", 5),
        ("amqp.annotation.x-opt-sequence-number > '1'", 2),
        ("amqp.annotation.x-opt-sequence-number >= '1'", 1),
        ("amqp.annotation.x-opt-sequence-number > '99'", 5),
        ("amqp.annotation.x-opt-enqueued-time > '100'", 2),
        ("amqp.annotation.x-opt-enqueued-time >= '300'", 3),
        ("amqp.annotation.x-opt-enqueued-time > '300'", 5),
    ],
)
def test_selector_resolution(partition: Partition, selector: str | None, index: int) -> None:
    assert partition.start_index(selector) == index


def test_offset_selectors_use_byte_offsets(partition: Partition) -> None:
    third = partition.events[2]
    assert third.offset > 2
    assert partition.start_index(f"amqp.annotation.x-opt-offset > '{third.offset}'") == 3
    assert partition.start_index(f"amqp.annotation.x-opt-offset >= '{third.offset}'") == 2


@pytest.mark.parametrize("selector", ["amqp.annotation.x-opt-offset = '1'", "x-opt-offset > 'abc'"])
def test_unsupported_selectors_are_rejected(partition: Partition, selector: str) -> None:
    with pytest.raises(InvalidSelector):
        partition.start_index(selector)


def test_partition_keys_map_to_stable_partitions() -> None:
    first, second = EventStore({"h": 8}), EventStore({"h": 8})
    for key in ("a", "customer-7", "zz"):
        assert first.hub("h").choose_partition(key).id == second.hub("h").choose_partition(key).id
