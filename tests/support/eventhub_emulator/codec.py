"""Byte-level AMQP 1.0 helpers that proton does not offer but the emulator needs.

Two jobs live here, both pure functions over bytes so they can be tested and reasoned
about without a network:

* ``FramePadder`` rewrites proton's outgoing frames so that every performative carries
  all of its fields. Proton omits trailing null fields (legal AMQP), but the SDK's
  pyamqp stack reads performative fields by position and, for transfers, expects the
  payload right after field 11; without padding it fails with "list index out of range"
  or reads the payload from the wrong place.
* Message section handling: splitting an encoded message into its sections, unpacking
  the SDK's batch envelope, and rewriting the message-annotations section with the
  broker annotations (sequence number, offset, enqueued time) the consumer reads.
  Proton's ``Message`` keeps only one body section, so it cannot do either.

Written against python-qpid-proton 0.40 (see ``eventhubs-amqp.md``).
"""

from __future__ import annotations

from typing import Any

from proton import Data, Described, symbol, ulong

PROTOCOL_HEADER_PREFIX = b"AMQP"
PROTOCOL_HEADER_LEN = 8

# Number of fields of each AMQP 1.0 performative, by its descriptor code (spec parts 2.7
# and 5.3). The SASL frames are only seen when a client asks for SASL ANONYMOUS, which
# the SDK does in emulator mode; proton's server transport negotiates it by itself.
PERFORMATIVE_FIELDS: dict[int, int] = {
    0x40: 1,  # sasl-mechanisms
    0x41: 3,  # sasl-init
    0x42: 1,  # sasl-challenge
    0x43: 1,  # sasl-response
    0x44: 2,  # sasl-outcome
    0x10: 10,  # open
    0x11: 8,  # begin
    0x12: 14,  # attach
    0x13: 11,  # flow
    0x14: 11,  # transfer
    0x15: 6,  # disposition
    0x16: 3,  # detach
    0x17: 1,  # end
    0x18: 1,  # close
}

# Message section descriptor codes (spec part 3.2).
SECTION_HEADER = 0x70
SECTION_DELIVERY_ANNOTATIONS = 0x71
SECTION_MESSAGE_ANNOTATIONS = 0x72
SECTION_PROPERTIES = 0x73
SECTION_APPLICATION_PROPERTIES = 0x74
SECTION_DATA = 0x75
SECTION_FOOTER = 0x78

PARTITION_KEY = symbol("x-opt-partition-key")
SEQUENCE_NUMBER = symbol("x-opt-sequence-number")
OFFSET = symbol("x-opt-offset")
ENQUEUED_TIME = symbol("x-opt-enqueued-time")


class FramePadder:
    """Re-frames proton's output stream, padding every performative to its full field list.

    Proton's output is a byte stream of 8-byte protocol headers (one for SASL, one for
    AMQP) and frames, and a read of it may end mid-frame, so this keeps the incomplete
    tail until more arrives. A header is told from a frame by its ``AMQP`` prefix: as a
    frame size that prefix would mean a frame of over 1 GB.
    """

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> bytes:
        """Accept raw proton output; return the bytes ready to go on the wire."""
        buf = self._pending
        buf += data
        out = bytearray()
        pos = 0
        view = memoryview(buf)
        while len(buf) - pos >= 8:
            if view[pos : pos + 4] == PROTOCOL_HEADER_PREFIX:
                out += view[pos : pos + PROTOCOL_HEADER_LEN]
                pos += PROTOCOL_HEADER_LEN
                continue
            size = int.from_bytes(view[pos : pos + 4], "big")
            if len(buf) - pos < size:
                break
            out += pad_frame(view[pos : pos + size])
            pos += size
        view.release()
        del buf[:pos]
        return bytes(out)


def pad_frame(frame: memoryview | bytes) -> bytes:
    """Return ``frame`` with its performative list padded with nulls to the full field count.

    Frames that are not AMQP performatives (heartbeats, unknown codes, unexpected
    encodings) are returned unchanged.
    """
    frame = memoryview(frame)
    body_start = frame[4] * 4
    if frame[5] > 1 or len(frame) < body_start + 4:
        return bytes(frame)
    body = frame[body_start:]
    if body[0] != 0x00 or body[1] != 0x53:
        return bytes(frame)
    wanted = PERFORMATIVE_FIELDS.get(body[2])
    if wanted is None:
        return bytes(frame)
    ctor = body[3]
    items: bytes | memoryview
    if ctor == 0x45:  # list0
        count, items, rest = 0, b"", body[4:]
    elif ctor == 0xC0:  # list8: size, count
        size = body[4]
        count, items, rest = body[5], body[6 : 5 + size], body[5 + size :]
    elif ctor == 0xD0:  # list32: size, count
        size = int.from_bytes(body[4:8], "big")
        count = int.from_bytes(body[8:12], "big")
        items, rest = body[12 : 8 + size], body[8 + size :]
    else:
        return bytes(frame)
    if count >= wanted and ctor != 0x45:
        return bytes(frame)
    padded = bytes(items) + b"\x40" * max(0, wanted - count)
    count = max(count, wanted)
    if len(padded) + 1 <= 0xFF:
        encoded_list = bytes((0xC0, len(padded) + 1, count)) + padded
    else:
        encoded_list = b"\xd0" + (len(padded) + 4).to_bytes(4, "big") + count.to_bytes(4, "big") + padded
    new_body = bytes(body[:3]) + encoded_list + bytes(rest)
    size = body_start + len(new_body)
    return size.to_bytes(4, "big") + bytes(frame[4:body_start]) + new_body


def _value_end(buf: memoryview, pos: int) -> int:
    """Return the index just past the AMQP-encoded value starting at ``pos``.

    Uses the type system's width rule: the high nibble of a constructor tells how the
    value's length is encoded (spec part 1.2), so no value needs to be decoded.
    """
    ctor = buf[pos]
    if ctor == 0x00:  # described: descriptor value, then the value itself
        return _value_end(buf, _value_end(buf, pos + 1))
    width = ctor >> 4
    fixed = {0x4: 0, 0x5: 1, 0x6: 2, 0x7: 4, 0x8: 8, 0x9: 16}
    if width in fixed:
        return pos + 1 + fixed[width]
    if width in (0xA, 0xC, 0xE):
        return pos + 2 + buf[pos + 1]
    if width in (0xB, 0xD, 0xF):
        return pos + 5 + int.from_bytes(buf[pos + 1 : pos + 5], "big")
    raise ValueError(f"invalid AMQP constructor 0x{ctor:02x} at {pos}")


def split_sections(message: bytes | memoryview) -> list[tuple[int, memoryview]]:
    """Split an encoded message into ``(descriptor code, section bytes)`` pairs."""
    view = memoryview(message)
    sections: list[tuple[int, memoryview]] = []
    pos = 0
    while pos < len(view):
        if view[pos] != 0x00 or view[pos + 1] != 0x53:
            raise ValueError("message section without a small-ulong descriptor")
        end = _value_end(view, pos)
        if end > len(view):
            raise ValueError("truncated message section")
        sections.append((view[pos + 2], view[pos:end]))
        pos = end
    return sections


def data_section_payload(section: memoryview) -> memoryview:
    """Return the binary carried by a data section (``0x00 0x53 0x75`` + vbin8/vbin32)."""
    ctor = section[3]
    if ctor == 0xA0:
        return section[5:]
    if ctor == 0xB0:
        return section[8:]
    raise ValueError(f"data section with constructor 0x{ctor:02x}")


def _is_encoded_message(payload: memoryview) -> bool:
    """Tell whether a data section's payload is itself a complete encoded message."""
    if len(payload) < 4 or payload[0] != 0x00 or payload[1] != 0x53:
        return False
    if not SECTION_HEADER <= payload[2] <= SECTION_FOOTER:
        return False
    try:
        split_sections(payload)
    except (ValueError, IndexError):
        return False
    return True


def unpack_transfer(message: bytes) -> tuple[list[bytes], str | None]:
    """Return the event messages carried by one transfer, and the envelope's partition key.

    The SDK sends batches with message format ``0x80013700``: an envelope whose data
    sections each hold a complete encoded message. Proton's Python binding does not
    expose the message format, so a batch is recognised by its body: every data section
    holds an encoded message. Anything else is a single event.
    """
    sections = split_sections(message)
    key = None
    for code, section in sections:
        if code == SECTION_MESSAGE_ANNOTATIONS:
            key = decode_section(section).get(PARTITION_KEY)
    payloads = [data_section_payload(s) for code, s in sections if code == SECTION_DATA]
    if payloads and all(_is_encoded_message(p) for p in payloads):
        return [bytes(p) for p in payloads], key
    return [message], key


def decode_section(section: memoryview | bytes) -> Any:
    """Decode a described section and return its value (a dict for annotation sections)."""
    data = Data()
    data.decode(bytes(section))
    value = data.get_object()
    return value.value if isinstance(value, Described) else value


def encode_section(code: int, value: Any) -> bytes:
    """Encode ``value`` as the message section with descriptor ``code``."""
    data = Data()
    data.put_object(Described(ulong(code), value))
    return data.encode()


def annotate(message: bytes, annotations: dict[symbol, Any]) -> tuple[bytes, str | None]:
    """Return ``message`` with ``annotations`` merged into its message-annotations section.

    Every other section is copied byte for byte, so bodies and properties reach the
    consumer exactly as the producer encoded them. Also returns the message's partition
    key annotation, if any.
    """
    sections = split_sections(message)
    out = bytearray()
    merged = False
    key = None
    for code, section in sections:
        if code == SECTION_MESSAGE_ANNOTATIONS:
            existing = decode_section(section) or {}
            key = existing.get(PARTITION_KEY)
            existing.update(annotations)
            out += encode_section(code, existing)
            merged = True
            continue
        if not merged and code > SECTION_MESSAGE_ANNOTATIONS:
            out += encode_section(SECTION_MESSAGE_ANNOTATIONS, dict(annotations))
            merged = True
        out += section
    if not merged:
        out += encode_section(SECTION_MESSAGE_ANNOTATIONS, dict(annotations))
    return bytes(out), key
