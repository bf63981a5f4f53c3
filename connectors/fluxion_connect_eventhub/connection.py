"""Reading an Event Hubs connection string without ever showing it.

The connection string is a secret (it holds the shared access key), so every
error here names the *field* that is wrong, never the value. The namespace and
hub names it yields are not secret: they appear in ownership records, metrics
and log lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

from fluxion_flows.errors import OptionError
from fluxion_flows.spi import Secret


@dataclass(frozen=True)
class HubAddress:
    """Where a connector connects: the secret connection string and the hub it names."""

    connection_string: Secret
    namespace: str
    """The namespace host (``name.servicebus.windows.net``, or ``host:port`` for an emulator)."""
    hub: str


def _fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            fields[name.strip().lower()] = value.strip()
    return fields


def resolve(
    connection_string: Secret | str, hub_option: str | None, *, where: Sequence[str] = ()
) -> HubAddress:
    """The namespace and hub of a connector block; the hub comes from ``eventHubName`` or ``EntityPath``."""
    secret = connection_string if isinstance(connection_string, Secret) else Secret(connection_string)
    fields = _fields(secret.reveal())
    endpoint = fields.get("endpoint")
    if not endpoint:
        raise OptionError(
            "the connection string has no Endpoint=sb://... field",
            path=(*where, "connectionString"),
            hint="copy it from the hub's or namespace's shared access policy",
        )
    parsed = urlparse(endpoint if "://" in endpoint else f"sb://{endpoint}")
    namespace = parsed.netloc or parsed.path.strip("/")
    entity = fields.get("entitypath") or None
    if hub_option and entity and hub_option != entity:
        raise OptionError(
            f"eventHubName `{hub_option}` differs from the connection string's EntityPath `{entity}`",
            path=(*where, "eventHubName"),
            hint="drop one of them",
        )
    hub = hub_option or entity
    if not hub:
        raise OptionError(
            "missing option `eventHubName` (the connection string has no EntityPath)",
            path=(*where, "eventHubName"),
        )
    return HubAddress(secret, namespace, hub)
