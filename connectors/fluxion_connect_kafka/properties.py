"""Java-style Kafka client properties translated into aiokafka keyword arguments.

Fluxion manifests carry Kafka client settings the way Java clients spell
them (``auto.offset.reset``, ``session.timeout.ms``, ...). aiokafka takes a
subset of them as keyword arguments under other names. Every property we
accept is listed here with its aiokafka name and a converter; a property
aiokafka has no equivalent for, or that the connector manages itself, is an
:class:`~fluxion_flows.errors.OptionError` naming it, so a setting never
silently does nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fluxion_flows.errors import OptionError
from fluxion_flows.spi import to_bool, to_int

PASS_THROUGH = re.compile(r"[a-z][a-z0-9]*(?:\.[a-z0-9]+)+")
"""What looks like a Java client property; anything else unknown is an unknown option."""


def _int(name: str, value: Any) -> int:
    return to_int(value)


def _bool(name: str, value: Any) -> bool:
    return to_bool(value)


def _str(name: str, value: Any) -> str:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, found {value!r}")


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def convert(name: str, value: Any) -> str:
        text = _str(name, value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, found {value!r}")
        return text

    return convert


def _assignors(name: str, value: Any) -> tuple[type, ...]:
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

    known: dict[str, type] = {
        "range": RangePartitionAssignor,
        "rangeassignor": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "roundrobinassignor": RoundRobinPartitionAssignor,
        "sticky": StickyPartitionAssignor,
        "stickyassignor": StickyPartitionAssignor,
    }
    items = value if isinstance(value, list | tuple) else _str(name, value).split(",")
    result: list[type] = []
    for item in items:
        short = str(item).strip().rsplit(".", 1)[-1].lower()
        if short not in known:
            raise ValueError(
                f"unsupported assignor {item!r}; aiokafka supports RangeAssignor, "
                "RoundRobinAssignor and StickyAssignor"
            )
        result.append(known[short])
    return tuple(result)


def _compression(name: str, value: Any) -> str | None:
    text = _choice("none", "gzip", "snappy", "lz4", "zstd")(name, value)
    return None if text == "none" else text


@dataclass(frozen=True)
class Mapping_:
    """How one Java property becomes one aiokafka argument."""

    kwarg: str
    convert: Callable[[str, Any], Any]


_COMMON: dict[str, Mapping_] = {
    "client.id": Mapping_("client_id", _str),
    "request.timeout.ms": Mapping_("request_timeout_ms", _int),
    "retry.backoff.ms": Mapping_("retry_backoff_ms", _int),
    "metadata.max.age.ms": Mapping_("metadata_max_age_ms", _int),
    "connections.max.idle.ms": Mapping_("connections_max_idle_ms", _int),
    "sasl.kerberos.service.name": Mapping_("sasl_kerberos_service_name", _str),
}

CONSUMER_PROPERTIES: dict[str, Mapping_] = {
    **_COMMON,
    "auto.offset.reset": Mapping_("auto_offset_reset", _choice("earliest", "latest", "none")),
    "max.poll.records": Mapping_("max_poll_records", _int),
    "fetch.max.bytes": Mapping_("fetch_max_bytes", _int),
    "fetch.min.bytes": Mapping_("fetch_min_bytes", _int),
    "fetch.max.wait.ms": Mapping_("fetch_max_wait_ms", _int),
    "max.partition.fetch.bytes": Mapping_("max_partition_fetch_bytes", _int),
    "session.timeout.ms": Mapping_("session_timeout_ms", _int),
    "heartbeat.interval.ms": Mapping_("heartbeat_interval_ms", _int),
    "max.poll.interval.ms": Mapping_("max_poll_interval_ms", _int),
    "rebalance.timeout.ms": Mapping_("rebalance_timeout_ms", _int),
    "isolation.level": Mapping_("isolation_level", _choice("read_uncommitted", "read_committed")),
    "check.crcs": Mapping_("check_crcs", _bool),
    "exclude.internal.topics": Mapping_("exclude_internal_topics", _bool),
    "group.instance.id": Mapping_("group_instance_id", _str),
    "client.rack": Mapping_("client_rack", _str),
    "partition.assignment.strategy": Mapping_("partition_assignment_strategy", _assignors),
}

PRODUCER_PROPERTIES: dict[str, Mapping_] = {
    **_COMMON,
    "compression.type": Mapping_("compression_type", _compression),
    "batch.size": Mapping_("max_batch_size", _int),
    "linger.ms": Mapping_("linger_ms", _int),
    "max.request.size": Mapping_("max_request_size", _int),
    "enable.idempotence": Mapping_("enable_idempotence", _bool),
    "transactional.id": Mapping_("transactional_id", _str),
    "transaction.timeout.ms": Mapping_("transaction_timeout_ms", _int),
}

_MANAGED: dict[str, str] = {
    "bootstrap.servers": "use the option `bootstrapServers`",
    "group.id": "use the option `groupId`",
    "enable.auto.commit": "the connector commits offsets itself at each checkpoint (it must stay off)",
    "auto.commit.interval.ms": "the connector commits offsets itself at each checkpoint",
    "key.deserializer": "use the option `keyDeserializer` (string, json or bytes)",
    "value.deserializer": "use the option `valueDeserializer` (string, json or bytes)",
    "key.serializer": "the sink writes keys from `keyField`",
    "value.serializer": "the sink writes values as JSON",
    "security.protocol": "use the option `securityProtocol`",
    "sasl.mechanism": "use the option `saslMechanism`",
    "sasl.jaas.config": "use the option `saslJaasConfig`",
    "ssl.truststore.location": "use `sslCaFile` with a PEM file (JKS truststores are a Java format)",
    "ssl.keystore.location": (
        "use `sslCertFile` and `sslKeyFile` with PEM files (JKS keystores are a Java format)"
    ),
}


def _unsupported_reason(name: str, kind: str) -> str:
    if name in _MANAGED:
        return _MANAGED[name]
    return f"aiokafka has no equivalent {kind} setting"


def client_kwargs(
    properties: Mapping[str, Any], table: Mapping[str, Mapping_], *, kind: str, path: str = ""
) -> dict[str, Any]:
    """aiokafka keyword arguments for the given Java-style properties; unknown ones are an OptionError."""
    result: dict[str, Any] = {}
    for name, raw in properties.items():
        if name == "enable.auto.commit" and kind == "consumer" and str(raw).strip().lower() == "false":
            continue
        mapping = table.get(name)
        where = tuple(p for p in (path, name) if p)
        if mapping is None:
            raise OptionError(
                f"Kafka {kind} property `{name}` is not supported: {_unsupported_reason(name, kind)}",
                path=where,
                found=name,
                valid=list(table),
            )
        try:
            result[mapping.kwarg] = mapping.convert(name, raw)
        except ValueError as exc:
            raise OptionError(
                f"invalid value for Kafka {kind} property `{name}`: {exc}", path=where
            ) from None
    return result
