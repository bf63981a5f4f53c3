"""Connections and templates files, and ``connectionRef`` lookups that never cross tenants.

A connection is looked up by its ref within a scope ``tenant::pipeline``:
first an entry scoped to exactly that pipeline, then one scoped to the
tenant as a whole (``pipelineId: default``). Entries of other tenants are
never used; finding the ref only there is its own error, so a user knows
why a ref that exists "isn't found".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaViolation

from fluxion_flows.errors import ConnectionsError, PathPart
from fluxion_flows.manifest import model as m
from fluxion_flows.manifest.loader import read_document, validate_model
from fluxion_flows.spi.secret import Secret


@dataclass(frozen=True)
class Scope:
    tenant: str = "default"
    pipeline: str = "default"

    @classmethod
    def parse(cls, text: str | None) -> Scope:
        if not text:
            return cls()
        tenant, _, pipeline = text.partition("::")
        return cls(tenant or "default", pipeline or "default")

    def __str__(self) -> str:
        return f"{self.tenant}::{self.pipeline}"


@dataclass(frozen=True)
class ResolvedConnection:
    connection: m.Connection
    index: int
    file: str | None
    secret_keys: frozenset[str] = frozenset()

    @property
    def options(self) -> dict[str, Any]:
        """The config without its ``type`` (which must match the block's type)."""
        return {k: v for k, v in self.connection.config.items() if k != "type"}


@dataclass
class Connections:
    entries: list[m.Connection] = field(default_factory=list)
    templates: dict[str, m.ConnectorTemplate] = field(default_factory=dict)
    file: str | None = None

    @classmethod
    def load(cls, connections: str | Path | None = None, templates: str | Path | None = None) -> Connections:
        loaded = cls(file=str(connections) if connections else None)
        if templates:
            loaded.templates = _load_templates(templates)
        if connections:
            loaded.entries = _load_entries(connections)
        return loaded

    def lookup(
        self, ref: str, scope: Scope, *, file: str | None = None, path: Sequence[PathPart] = ()
    ) -> ResolvedConnection:
        matches = [(i, c) for i, c in enumerate(self.entries) if c.connectionRef == ref]
        for wanted in (scope.pipeline, "default"):
            for index, entry in matches:
                if entry.scope.tenantId == scope.tenant and entry.scope.pipelineId == wanted:
                    return ResolvedConnection(entry, index, self.file, self._secret_keys(entry))
        if matches:
            tenants = sorted({c.scope.tenantId for _, c in matches})
            raise ConnectionsError(
                f"connectionRef `{ref}` exists only for tenant(s) {', '.join(tenants)}, "
                f"not for scope `{scope}`: lookups never cross tenants",
                file=file,
                path=path,
            )
        visible = sorted({c.connectionRef for c in self.entries if c.scope.tenantId == scope.tenant})
        raise ConnectionsError(
            f"unknown connectionRef `{ref}`" + ("" if self.file else " (no connections file was given)"),
            file=file,
            path=path,
            found=ref,
            valid=visible,
        )

    def validate_config(
        self,
        resolved: ResolvedConnection,
        config: Mapping[str, Any],
        kind: str,
        *,
        substituted: Collection[str] = (),
    ) -> None:
        """Check a connection's (placeholder-resolved) config against its template's JSON Schema.

        Secrets are checked by their value (the error never shows it). ``substituted`` names the keys
        whose value came from a placeholder: a placeholder always yields text, so ``port: ${PORT}`` is
        read as the number or boolean the template asks for, the way the option schema reads it later.
        """
        template = self.templates.get(resolved.connection.connectorId or "")
        if template is None:
            return
        schema = template.sourceSchema if kind == "source" else template.sinkSchema
        schema = schema or template.sourceSchema or template.sinkSchema
        if not schema:
            return
        properties = schema.get("properties") or {}
        instance = {
            key: _as_schema_type(reveal_all(value), properties.get(key))
            if key in substituted
            else reveal_all(value)
            for key, value in config.items()
        }
        errors = sorted(Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            violation = errors[0]
            raise ConnectionsError(
                f"config does not match template `{template.id}`: {_explain(violation)}",
                file=resolved.file,
                path=(resolved.index, "config", *violation.path),
            )

    def _secret_keys(self, entry: m.Connection) -> frozenset[str]:
        template = self.templates.get(entry.connectorId or "")
        if template is None:
            return frozenset()
        keys: set[str] = set()
        for schema in (template.sourceSchema, template.sinkSchema):
            for name, prop in ((schema or {}).get("properties") or {}).items():
                if isinstance(prop, dict) and prop.get("x-secret"):
                    keys.add(name)
        return frozenset(keys)


def reveal_all(value: Any) -> Any:
    """An option tree with every Secret replaced by its value (only for schema validation)."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, Mapping):
        return {k: reveal_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal_all(v) for v in value]
    return value


_SCALAR_TYPES: dict[str, tuple[type, ...]] = {"integer": (int,), "number": (int, float), "boolean": (bool,)}


def _as_schema_type(value: Any, schema: Any) -> Any:
    """Text from a placeholder, read as the non-string scalar its property schema asks for (if it is one)."""
    if not isinstance(value, str) or not isinstance(schema, Mapping):
        return value
    wanted = schema.get("type")
    kinds = [wanted] if isinstance(wanted, str) else list(wanted or [])
    if "string" in kinds or not any(k in _SCALAR_TYPES for k in kinds):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    accepted = any(
        isinstance(parsed, _SCALAR_TYPES[k]) and (k == "boolean" or not isinstance(parsed, bool))
        for k in kinds
        if k in _SCALAR_TYPES
    )
    return parsed if accepted else value


def _explain(violation: SchemaViolation) -> str:
    """Describe a schema violation without echoing the (possibly secret) value."""
    validator, expected = violation.validator, cast(Any, violation.validator_value)
    if validator == "required":
        return violation.message
    if validator == "type":
        return f"expected type {expected}"
    if validator == "enum":
        return "expected one of " + ", ".join(map(str, expected))
    if validator == "additionalProperties":
        return violation.message
    return f"violates `{validator}: {expected}`"


def _load_entries(path: str | Path) -> list[m.Connection]:
    raw = read_document(path, what="connections")
    if isinstance(raw, dict) and "connections" in raw:
        raw = raw["connections"]
    if not isinstance(raw, list):
        raise ConnectionsError("a connections file must be a list of connections", file=str(path))
    entries = []
    for index, item in enumerate(raw):
        entry = validate_model(m.Connection, item, file=str(path), prefix=(index,))
        if "type" not in entry.config:
            raise ConnectionsError(
                "a connection's config needs `type`", file=str(path), path=(index, "config", "type")
            )
        entries.append(entry)
    return entries


def _load_templates(path: str | Path) -> dict[str, m.ConnectorTemplate]:
    raw = read_document(path, what="templates")
    if isinstance(raw, dict) and "templates" in raw:
        raw = raw["templates"]
    if not isinstance(raw, list):
        raise ConnectionsError("a templates file must be a list of templates", file=str(path))
    templates: dict[str, m.ConnectorTemplate] = {}
    for index, item in enumerate(raw):
        template = validate_model(m.ConnectorTemplate, item, file=str(path), prefix=(index,))
        for key in ("sourceSchema", "sinkSchema"):
            schema = getattr(template, key)
            if schema is not None:
                try:
                    Draft202012Validator.check_schema(schema)
                except Exception as exc:
                    raise ConnectionsError(
                        f"not a valid JSON Schema: {getattr(exc, 'message', exc)}",
                        file=str(path),
                        path=(index, key),
                    ) from None
        templates[template.id] = template
    return templates
