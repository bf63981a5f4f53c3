"""Connector discovery and creation (Fluxion's ``ConnectorFactory``).

Providers are found through the entry-point groups ``fluxion_flows.sources``
and ``fluxion_flows.sinks``, the Python counterpart of Java's ServiceLoader.
Entry points are read eagerly (cheap) but a provider's module is imported only
when that provider is used, so a missing optional dependency surfaces as
"install fluxion-flows[kafka]" for the one pipeline that needs Kafka.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import Distribution, EntryPoint, entry_points
from typing import Any

from fluxion_flows.errors import PathPart, ProviderError
from fluxion_flows.spi.provider import (
    ConnectorConfig,
    ConnectorKind,
    SinkProvider,
    SourceProvider,
)
from fluxion_flows.spi.sink import SinkContext, StreamingSink
from fluxion_flows.spi.source import SourceContext, StreamingSource

GROUPS = {ConnectorKind.SOURCE: "fluxion_flows.sources", ConnectorKind.SINK: "fluxion_flows.sinks"}


@dataclass(frozen=True)
class ProviderEntry:
    """A discovered provider, not yet imported."""

    type: str
    kind: ConnectorKind
    entry_point: EntryPoint

    @property
    def distribution(self) -> str:
        dist = self.entry_point.dist
        return f"{dist.name} {dist.version}" if dist is not None else self.entry_point.value

    def load(self) -> SourceProvider | SinkProvider:
        try:
            provider_class = self.entry_point.load()
        except ImportError as exc:
            raise ProviderError(
                f"the {self.kind.value} connector `{self.type}` cannot be loaded: {exc}",
                hint=_install_hint(self.entry_point.dist, exc),
            ) from None
        except Exception as exc:  # a broken plugin must not take the registry down with it
            raise ProviderError(
                f"the {self.kind.value} connector `{self.type}` ({self.distribution}, "
                f"{self.entry_point.value}) is broken: {type(exc).__name__}: {exc}"
            ) from None
        provider = provider_class() if isinstance(provider_class, type) else provider_class
        expected = SourceProvider if self.kind is ConnectorKind.SOURCE else SinkProvider
        if not isinstance(provider, expected):
            raise ProviderError(
                f"entry point `{self.type}` in group {GROUPS[self.kind]} ({self.distribution}) "
                f"is not a {expected.__name__}"
            )
        return provider


def _install_hint(dist: Distribution | None, exc: ImportError) -> str:
    """Name the extra that provides the missing module, read from the distribution's own metadata."""
    missing = (exc.name or "").split(".")[0]
    if dist is None or not missing:
        return "install the package that provides it"
    wanted = _normalise(missing)
    extras = []
    for requirement in dist.requires or ():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+).*extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        if match and _normalise(match[1]).startswith(wanted):
            extras.append(match[2])
    if not extras:
        return f"install the package that provides the `{missing}` module"
    narrowest = next((e for e in extras if e not in _AGGREGATE_EXTRAS), extras[0])
    return f"install it with: pip install '{dist.name}[{narrowest}]'"


_AGGREGATE_EXTRAS = ("all", "test", "dev")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "", name).lower()


class ProviderRegistry:
    """All providers visible to this Python environment."""

    def __init__(self, extra: Iterable[SourceProvider | SinkProvider] = ()) -> None:
        self._extra = {(p.kind, p.descriptor().type): p for p in extra}
        self._loaded: dict[tuple[ConnectorKind, str], SourceProvider | SinkProvider] = dict(self._extra)

    @cached_property
    def _entries(self) -> dict[tuple[ConnectorKind, str], ProviderEntry]:
        found: dict[tuple[ConnectorKind, str], ProviderEntry] = {}
        for kind, group in GROUPS.items():
            for entry_point in entry_points(group=group):
                entry = ProviderEntry(entry_point.name, kind, entry_point)
                previous = found.get((kind, entry.type))
                if previous is not None and previous.entry_point.value != entry_point.value:
                    raise ProviderError(
                        f"two {kind.value} providers claim the type id `{entry.type}`: "
                        f"{previous.distribution} ({previous.entry_point.value}) and "
                        f"{entry.distribution} ({entry_point.value})",
                        hint="uninstall one of them",
                    )
                found[(kind, entry.type)] = entry
        return found

    def types(self, kind: ConnectorKind) -> list[str]:
        names = {t for k, t in self._entries if k is kind} | {t for k, t in self._extra if k is kind}
        return sorted(names)

    def entry(self, kind: ConnectorKind, type_id: str) -> ProviderEntry | None:
        return self._entries.get((kind, type_id))

    def provider(
        self, kind: ConnectorKind, type_id: str, *, file: str | None = None, path: Sequence[PathPart] = ()
    ) -> SourceProvider | SinkProvider:
        key = (kind, type_id)
        if key in self._loaded:
            return self._loaded[key]
        entry = self._entries.get(key)
        if entry is None:
            raise ProviderError(
                f"unknown {kind.value} type `{type_id}`",
                file=file,
                path=path,
                found=type_id,
                valid=self.types(kind),
            )
        try:
            provider = entry.load()
        except ProviderError as exc:
            raise exc.at(file=file, prefix=path) from None
        self._loaded[key] = provider
        return provider

    def source_provider(self, type_id: str, **where: Any) -> SourceProvider:
        provider = self.provider(ConnectorKind.SOURCE, type_id, **where)
        assert isinstance(provider, SourceProvider)
        return provider

    def sink_provider(self, type_id: str, **where: Any) -> SinkProvider:
        provider = self.provider(ConnectorKind.SINK, type_id, **where)
        assert isinstance(provider, SinkProvider)
        return provider

    def configure(
        self,
        kind: ConnectorKind,
        type_id: str,
        raw: Mapping[str, Any],
        *,
        file: str | None = None,
        path: Sequence[PathPart] = (),
    ) -> ConnectorConfig:
        """Validate raw option values against the provider's schema (defaults applied)."""
        provider = self.provider(kind, type_id, file=file, path=(*path, "type"))
        values, properties = provider.options().validate(raw, file=file, path=path)
        return ConnectorConfig(
            type=type_id, kind=kind, values=values, properties=properties, path=".".join(map(str, path))
        )

    def create_source(self, context: SourceContext, config: ConnectorConfig) -> StreamingSource:
        return self.source_provider(config.type).create(context, config)

    def create_sink(self, context: SinkContext, config: ConnectorConfig) -> StreamingSink:
        return self.sink_provider(config.type).create(context, config)


_default: ProviderRegistry | None = None


def default_registry() -> ProviderRegistry:
    """The process-wide registry (entry points are scanned once)."""
    global _default
    if _default is None:
        _default = ProviderRegistry()
    return _default
