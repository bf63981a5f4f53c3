"""Replies to the request/response nodes the SDK talks to: ``$cbs`` and ``$management``.

Both are plain functions from a request message to a reply message so they stay
independent of the server's link handling. Status codes follow the service: 200 for
success, 404 for an unknown entity, 400 for a request the emulator does not understand.
"""

from __future__ import annotations

from typing import Any

from proton import Message

from .store import EntityNotFound, EventStore

CBS_NODE = "$cbs"
MANAGEMENT_NODE = "$management"


def _reply(request: Message, status: int, description: str, body: Any = None) -> Message:
    """Build a reply correlated to ``request`` the way the SDK's management link matches it."""
    reply = Message(body=body)
    reply.correlation_id = request.id  # the SDK matches replies by message_id (a UUID)
    if request.reply_to:
        reply.address = request.reply_to
    # proton's type hint for ``properties`` is narrower than what it accepts
    reply.properties = {"status-code": status, "status-description": description}  # type: ignore[assignment]
    return reply


def _request_properties(request: Message) -> dict[str, Any]:
    properties: dict[str, Any] = dict(request.properties or {})
    return properties


def _text(value: Any) -> str | None:
    """Application property values arrive as strings or, from the SDK, as binary."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return None if value is None else str(value)


def cbs_reply(request: Message) -> Message:
    """Answer a ``$cbs`` put-token. A test emulator accepts every token."""
    operation = _text(_request_properties(request).get("operation"))
    if operation != "put-token":
        return _reply(request, 400, f"unsupported $cbs operation {operation!r}")
    return _reply(request, 200, "OK")


def management_reply(store: EventStore, request: Message) -> Message:
    """Answer a ``$management`` READ for hub or partition properties."""
    props = _request_properties(request)
    operation, entity_type = _text(props.get("operation")), _text(props.get("type"))
    name = _text(props.get("name")) or ""
    if operation != "READ":
        return _reply(request, 400, f"unsupported $management operation {operation!r}")
    try:
        if entity_type == "com.microsoft:eventhub":
            return _reply(request, 200, "OK", store.hub(name).properties())
        if entity_type == "com.microsoft:partition":
            partition = store.partition(name, _text(props.get("partition")) or "")
            return _reply(request, 200, "OK", partition.properties())
    except EntityNotFound as exc:
        return _reply(request, 404, str(exc))
    return _reply(request, 400, f"unsupported $management entity type {entity_type!r}")
