"""The core HTTP sink (``type: http``): resilient, idempotent batch delivery over httpx.

Exported here for the entry point ``http = "fluxion_flows.connectors.http:HttpSinkProvider"``
(group ``fluxion_flows.sinks``). The runtime module (httpx client, retries,
breaker) is imported only when a sink is created.
"""

from fluxion_flows.connectors.http.errors import (
    CircuitOpenError,
    HttpStatusError,
    RetriesExhaustedError,
    UrlTemplateError,
)
from fluxion_flows.connectors.http.provider import HttpSinkProvider, HttpSinkSettings

__all__ = [
    "CircuitOpenError",
    "HttpSinkProvider",
    "HttpSinkSettings",
    "HttpStatusError",
    "RetriesExhaustedError",
    "UrlTemplateError",
]
