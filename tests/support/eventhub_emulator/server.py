"""The AMQP 1.0 side of the emulator: sockets, proton engines, and link handling.

Proton's protocol engine (``Transport`` + ``Connection`` + ``Collector``) is driven
directly from asyncio instead of through proton's own reactor, for one reason: every
byte proton writes must pass through ``FramePadder`` (see ``codec.py``) before it
reaches the SDK. Owning the socket loop also keeps everything on one thread: all
proton objects are touched only by the event-loop thread.

Link roles, from the emulator's side:

* a *receiver* link whose target is ``$cbs``/``$management`` is a request link, one
  whose target is ``.../HUB`` or ``.../HUB/Partitions/ID`` is a publisher;
* a *sender* link whose source is ``$cbs``/``$management`` carries replies, one whose
  source is ``.../HUB/ConsumerGroups/CG/Partitions/ID`` is a consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from proton import (
    Collector,
    Condition,
    Connection,
    Delivery,
    Event,
    Link,
    Message,
    Receiver,
    Sender,
    Transport,
    symbol,
)

from .codec import FramePadder, unpack_transfer
from .management import CBS_NODE, MANAGEMENT_NODE, cbs_reply, management_reply
from .store import EntityNotFound, EventStore, InvalidSelector, Partition

log = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 1024 * 1024
MAX_FRAME_SIZE = 1024 * 1024
PUBLISHER_CREDIT = 1000
SELECTOR_FILTER = symbol("apache.org:selector-filter:string")
EPOCH = symbol("com.microsoft:epoch")
LINK_STOLEN = "amqp:link:stolen"
TICK_SECONDS = 1.0


class LinkRefused(Exception):
    """An attach the emulator answers with a detach carrying ``condition``."""

    def __init__(self, condition: str, description: str) -> None:
        super().__init__(description)
        self.condition = condition
        self.description = description


@dataclass(frozen=True)
class ReceiverInfo:
    """What a test may want to know about an attached receiver (a snapshot)."""

    consumer_group: str
    owner_level: int | None
    delivered: int
    credit: int


@dataclass(eq=False)
class Consumer:
    """A receiver attached by a client to one partition of one consumer group."""

    link: Sender
    connection: AmqpConnection
    partition: Partition
    group: str
    epoch: int | None
    next_index: int
    delivered: int = 0

    @property
    def owner_key(self) -> tuple[str, str, str]:
        """Epochs are per hub, consumer group and partition."""
        return (self.partition.hub, self.group.lower(), self.partition.id)


@dataclass(eq=False)
class Publisher:
    """A sender attached by a client to a hub, or to one of its partitions."""

    hub: str
    partition_id: str | None


def _entity_path(address: str | None) -> list[str]:
    """Split a link address (``amqps://host:port/a/b`` or ``$cbs``) into path segments."""
    if not address:
        return []
    path = urlparse(address).path if "://" in address else address
    return [segment for segment in path.split("/") if segment]


def _selector(link: Link) -> str | None:
    """Read the SDK's selector filter expression from the remote source, if any."""
    data = link.remote_source.filter
    data.rewind()
    if not data.next():
        return None
    filters = data.get_object()
    value = filters.get(SELECTOR_FILTER) if isinstance(filters, dict) else None
    expression = getattr(value, "value", value)
    if isinstance(expression, bytes):
        return expression.decode("utf-8")
    return None if expression is None else str(expression)


def _epoch(link: Link) -> int | None:
    """Read the owner level (``com.microsoft:epoch`` link property), if set."""
    properties = link.remote_properties
    if not isinstance(properties, dict):
        return None
    epoch = properties.get(EPOCH)
    return None if epoch is None else int(epoch)


class EmulatorServer:
    """Listens for connections and routes events between publishers and consumers.

    Cross-connection state lives here: which consumers read which partition (to push
    new events to them) and which consumers hold a partition with an owner level.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.connections: set[AmqpConnection] = set()
        self.consumers: dict[tuple[str, str], set[Consumer]] = {}
        self.groups: dict[tuple[str, str, str], set[Consumer]] = {}
        self._dirty: set[AmqpConnection] = set()
        self._flush_scheduled = False
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind and listen; return the bound port (useful when ``port`` is 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: AmqpConnection(self), host, port)
        self._ticker = loop.create_task(self._tick())
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every connection (clients see the connection close)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.abort()
        await asyncio.sleep(0)  # let the aborted transports report connection_lost
        if self._server is not None:
            await self._server.wait_closed()

    async def _tick(self) -> None:
        """Let proton run its timers (heartbeats for clients that ask for an idle timeout)."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            for connection in list(self.connections):
                connection.tick()

    # -- consumers -------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        """Register a consumer, applying the service's owner-level (epoch) rules.

        An owner-level receiver takes the partition from every receiver with a lower or
        equal level and from receivers without one (they are detached with
        ``amqp:link:stolen``); a lower level, or no level while an owner exists, is refused.
        """
        group = self.groups.setdefault(consumer.owner_key, set())
        levels = [c.epoch for c in group if c.epoch is not None]
        top = max(levels) if levels else None
        if top is not None and consumer.epoch is None:
            raise LinkRefused(
                LINK_STOLEN,
                f"At least one receiver for the endpoint is created with epoch of '{top}', "
                "and so non-epoch receiver is not allowed.",
            )
        if top is not None and consumer.epoch is not None and consumer.epoch < top:
            raise LinkRefused(
                LINK_STOLEN,
                f"A receiver with a higher epoch '{top}' already exists. "
                f"A new receiver with epoch {consumer.epoch} cannot be created.",
            )
        if consumer.epoch is not None:
            for old in list(group):
                description = (
                    f"New receiver with higher epoch of '{consumer.epoch}' is created hence current "
                    f"receiver with epoch '{old.epoch}' is getting disconnected."
                )
                self.remove_consumer(old)
                old.connection.close_link(old.link, LINK_STOLEN, description)
        group.add(consumer)
        self.consumers.setdefault((consumer.partition.hub, consumer.partition.id), set()).add(consumer)

    def remove_consumer(self, consumer: Consumer) -> None:
        """Forget a consumer whose link closed or was stolen."""
        self.groups.get(consumer.owner_key, set()).discard(consumer)
        self.consumers.get((consumer.partition.hub, consumer.partition.id), set()).discard(consumer)

    def receivers(self, hub: str, partition_id: str) -> list[ReceiverInfo]:
        """Snapshot of the receivers attached to a partition (call on the loop thread)."""
        partition = self.store.partition(hub, partition_id)
        return [
            ReceiverInfo(c.group, c.epoch, c.delivered, c.link.credit)
            for c in self.consumers.get((partition.hub, partition.id), ())
        ]

    def notify(self, partition: Partition) -> None:
        """Push newly appended events of ``partition`` to its consumers that have credit."""
        for consumer in list(self.consumers.get((partition.hub, partition.id), ())):
            consumer.connection.pump(consumer)

    def mark_dirty(self, connection: AmqpConnection) -> None:
        """Flush ``connection`` soon: batches the output of many appends into few writes."""
        self._dirty.add(connection)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_dirty)

    def _flush_dirty(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for connection in dirty:
            connection.process()


class AmqpConnection(asyncio.Protocol):
    """One client connection: a proton server transport fed from an asyncio socket."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.store = server.store
        self.engine = Transport(Transport.SERVER)
        self.engine.max_frame_size = MAX_FRAME_SIZE
        self.connection = Connection()
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.engine.bind(self.connection)
        self.padder = FramePadder()
        self.socket: asyncio.Transport | None = None
        self.reply_links: dict[str, list[Sender]] = {}
        self.publishers: dict[Receiver, Publisher] = {}
        self.consumers: dict[Sender, Consumer] = {}
        self._closed = False

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.socket = transport
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            capacity = self.engine.capacity()
            if capacity < 0:  # proton has stopped reading (connection closed or failed)
                return
            if capacity == 0:  # cannot happen with a well-behaved peer: proton consumes on push
                log.error("event hub emulator: proton input buffer full, dropping connection")
                self.abort()
                return
            chunk, view = view[:capacity], view[capacity:]
            self.engine.push(bytes(chunk))
            self.process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        for consumer in list(self.consumers.values()):
            self.server.remove_consumer(consumer)
        self.consumers.clear()
        self.publishers.clear()
        self.engine.close_tail()
        self.engine.close_head()
        self.engine.unbind()
        self.collector.release()

    def abort(self) -> None:
        """Drop the socket without a closing handshake (emulator shutdown)."""
        if self.socket is not None:
            self.socket.abort()

    def tick(self) -> None:
        """Advance proton's timers and send whatever they produced."""
        if not self._closed:
            self.engine.tick(time.monotonic())
            self.process()

    # -- engine pump --------------------------------------------------------------------

    def process(self) -> None:
        """Dispatch proton's events, then write its output through the frame padder."""
        if self._closed:
            return
        while (event := self.collector.peek()) is not None:
            try:
                self._dispatch(event)
            except Exception:
                log.exception("event hub emulator: error handling %s", event.type)
            self.collector.pop()
        self._flush()

    def _flush(self) -> None:
        assert self.socket is not None
        while (pending := self.engine.pending()) > 0:
            out = self.engine.peek(pending) or b""
            self.engine.pop(len(out))
            self.socket.write(self.padder.feed(out))
        if pending < 0:
            self.socket.close()

    def _dispatch(self, event: Event) -> None:
        kind, link, session = event.type, event.link, event.session
        if kind == Event.CONNECTION_REMOTE_OPEN:
            self.connection.container = "fluxion-eventhub-emulator"
            self.connection.open()
        elif kind == Event.CONNECTION_REMOTE_CLOSE:
            self.connection.close()
        elif kind == Event.SESSION_REMOTE_OPEN and session is not None:
            session.open()
        elif kind == Event.SESSION_REMOTE_CLOSE and session is not None:
            for attached in [*self.consumers, *self.publishers]:
                if attached.session == session:
                    self._forget(attached)
            session.close()
        elif kind == Event.DELIVERY and event.delivery is not None:
            self._on_delivery(event.delivery)
        elif link is None:
            return
        elif kind == Event.LINK_REMOTE_OPEN:
            self._on_attach(link)
        elif kind == Event.LINK_FLOW:
            consumer = self.consumers.get(link) if isinstance(link, Sender) else None
            if consumer is not None:
                self.pump(consumer)
        elif kind == Event.LINK_REMOTE_CLOSE:
            self._forget(link)
            link.close()
        elif kind == Event.LINK_REMOTE_DETACH:
            self._forget(link)
            link.detach()

    # -- links --------------------------------------------------------------------------

    def _on_attach(self, link: Link) -> None:
        """Accept an attach by mirroring the client's terminus, then classify the link."""
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        try:
            if link.is_receiver:
                self._attach_incoming(link)
            else:
                self._attach_outgoing(link)
        except LinkRefused as refused:
            self.close_link(link, refused.condition, refused.description)
        except EntityNotFound as missing:
            self.close_link(link, "amqp:not-found", str(missing))
        except InvalidSelector as invalid:
            self.close_link(link, "amqp:invalid-field", str(invalid))

    def _attach_incoming(self, link: Link) -> None:
        assert isinstance(link, Receiver)
        path = _entity_path(link.remote_target.address)
        if path and path[-1] in (CBS_NODE, MANAGEMENT_NODE):
            link.open()
            link.flow(PUBLISHER_CREDIT)
            return
        if len(path) == 1:
            publisher = Publisher(self.store.hub(path[0]).name, None)
        elif len(path) == 3 and path[1].lower() == "partitions":
            publisher = Publisher(self.store.partition(path[0], path[2]).hub, path[2])
        else:
            raise EntityNotFound(f"no publisher entity at {link.remote_target.address!r}")
        link.max_message_size = MAX_MESSAGE_SIZE
        link.open()
        link.flow(PUBLISHER_CREDIT)
        self.publishers[link] = publisher

    def _attach_outgoing(self, link: Link) -> None:
        assert isinstance(link, Sender)
        address = link.remote_source.address
        path = _entity_path(address)
        if path and path[-1] in (CBS_NODE, MANAGEMENT_NODE):
            link.open()
            self.reply_links.setdefault(path[-1], []).append(link)
            return
        if len(path) != 5 or path[1].lower() != "consumergroups" or path[3].lower() != "partitions":
            raise EntityNotFound(f"no consumer entity at {address!r}")
        partition = self.store.partition(path[0], path[4])
        start = partition.start_index(_selector(link))
        consumer = Consumer(link, self, partition, path[2], _epoch(link), start)
        self.server.add_consumer(consumer)
        link.open()
        self.consumers[link] = consumer

    def close_link(self, link: Link, condition: str, description: str) -> None:
        """Detach ``link`` with an error condition (attaching it first if needed)."""
        self._forget(link)
        if link.state & Link.LOCAL_UNINIT:
            link.open()
        link.condition = Condition(condition, description)
        link.close()
        self.server.mark_dirty(self)

    def _forget(self, link: Link) -> None:
        consumer = self.consumers.pop(link, None) if isinstance(link, Sender) else None
        if consumer is not None:
            self.server.remove_consumer(consumer)
        if isinstance(link, Receiver):
            self.publishers.pop(link, None)
        for links in self.reply_links.values():
            if isinstance(link, Sender) and link in links:
                links.remove(link)

    # -- deliveries ---------------------------------------------------------------------

    def pump(self, consumer: Consumer) -> None:
        """Send stored events while the consumer's link has credit (and no further).

        Sending only against credit is what gives a slow consumer backpressure. Events
        are sent unsettled unless the client asked for pre-settled deliveries.
        """
        link = consumer.link
        events = consumer.partition.events
        presettle = link.remote_snd_settle_mode == Link.SND_SETTLED
        sent = False
        while link.credit > 0 and consumer.next_index < len(events):
            event = events[consumer.next_index]
            consumer.next_index += 1
            consumer.delivered += 1
            delivery = link.delivery(event.sequence_number.to_bytes(8, "big"))  # type: ignore[arg-type]
            link.stream(event.wire)
            link.advance()
            if presettle:
                delivery.settle()
            sent = True
        if consumer.next_index >= len(events):
            link.drained()
        if sent:
            self.server.mark_dirty(self)

    def _on_delivery(self, delivery: Delivery) -> None:
        link = delivery.link
        if isinstance(link, Sender):
            # The consumer settled (or accepted) an event; proton may now forget it.
            if delivery.remote_state or delivery.settled:
                delivery.settle()
            return
        if not delivery.readable or delivery.partial:
            return
        assert isinstance(link, Receiver)
        payload = link.recv(delivery.pending) or b""
        link.advance()
        if link.credit < PUBLISHER_CREDIT // 2:
            link.flow(PUBLISHER_CREDIT - link.credit)
        publisher = self.publishers.get(link)
        if publisher is None:
            self._answer_request(link, payload)
            delivery.update(Delivery.ACCEPTED)
        else:
            self._publish(publisher, delivery, payload)
        delivery.settle()

    def _publish(self, publisher: Publisher, delivery: Delivery, payload: bytes) -> None:
        """Store the events of one transfer and push them to the partition's consumers."""
        try:
            messages, key = unpack_transfer(payload)
            partition = self.store.append(publisher.hub, publisher.partition_id, messages, key)
        except EntityNotFound as exc:
            self._reject(delivery, "amqp:not-found", str(exc))
            return
        except (ValueError, IndexError) as exc:  # undecodable message sections
            self._reject(delivery, "amqp:decode-error", str(exc))
            return
        delivery.update(Delivery.ACCEPTED)
        self.server.notify(partition)

    @staticmethod
    def _reject(delivery: Delivery, condition: str, description: str) -> None:
        delivery.local.condition = Condition(condition, description)
        delivery.update(Delivery.REJECTED)

    def _answer_request(self, link: Receiver, payload: bytes) -> None:
        """Answer a ``$cbs`` or ``$management`` request on the client's reply link."""
        request = Message()
        request.decode(payload)
        node = _entity_path(link.remote_target.address)[-1]
        reply = cbs_reply(request) if node == CBS_NODE else management_reply(self.store, request)
        candidates = self.reply_links.get(node) or []
        if not candidates:
            log.warning("event hub emulator: no reply link for %s request", node)
            return
        reply_link = next(
            (s for s in candidates if s.remote_target.address == request.reply_to), candidates[-1]
        )
        reply_link.send(reply)
