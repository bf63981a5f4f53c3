"""From flow parameters to a validated :class:`Pipeline`: manifest and connections from anywhere.

A manifest parameter is a path (relative to the flow run's working
directory), an ``http(s)://`` URL, or the manifest itself as an object, so a
deployment can carry its manifest inline and an operator can edit it in the UI.
Connections likewise, plus ``{"block": NAME}`` entries that load a
``FluxionConnection`` block (secrets stay masked).

Inside Prefect the checkpoint store defaults to ``prefect`` (block store)
unless the manifest names one explicitly: ``checkpoint: {store: file}`` keeps
working as written.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import httpx

from fluxion_flows.errors import ConnectionsError, ManifestError
from fluxion_flows.manifest import model as m
from fluxion_flows.manifest.connections import Connections
from fluxion_flows.manifest.loader import LoadedManifest, load_manifest, parse_text, validate_model
from fluxion_flows.manifest.plan import build_plan
from fluxion_flows.pipeline import Pipeline, register_checkpoint_store
from fluxion_flows.prefect.parameters import ConnectionsParameter, RunParameters

PREFECT_STORE = "prefect"


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _fetch(url: str, what: str) -> str:
    try:
        response = httpx.get(url, timeout=30.0, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ManifestError(f"cannot fetch {what} from {url}: {type(exc).__name__}", file=url) from None
    return response.text


def load(params: RunParameters) -> LoadedManifest:
    source: Any = params.manifest
    if isinstance(source, str) and _is_url(source):
        raw = parse_text(_fetch(source, "manifest"), file=source)
        if not isinstance(raw, dict):
            raise ManifestError("a manifest must be a map at the top level", file=source)
        source = raw
    return load_manifest(source, overrides=params.overrides or None, operation=params.operation)


def connections(value: ConnectionsParameter, templates: str | None = None) -> Connections:
    if value is None:
        return Connections.load(None, templates)
    if isinstance(value, str):
        if not _is_url(value):
            return Connections.load(value, templates)
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "connections.yaml"
            path.write_text(_fetch(value, "connections"), encoding="utf-8")
            loaded = Connections.load(path)
        loaded.file = value
        return loaded
    entries = []
    for index, item in enumerate(value):
        if set(item) == {"block"}:
            item = _block_entry(str(item["block"]))
        entry = validate_model(m.Connection, item, file="connections", prefix=(index,))
        if "type" not in entry.config:
            raise ConnectionsError(
                "a connection's config needs `type`", file="connections", path=(index, "config")
            )
        entries.append(entry)
    loaded = Connections.load(None, templates)
    loaded.entries, loaded.file = entries, "connections"
    return loaded


def _block_entry(name: str) -> dict[str, Any]:
    from fluxion_flows.prefect.blocks import FluxionConnection

    try:
        block: Any = FluxionConnection.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError:
        raise ConnectionsError(f"no FluxionConnection block named `{name}`", file="connections") from None
    entry: dict[str, Any] = block.to_entry()
    return entry


def build_pipeline(params: RunParameters) -> Pipeline:
    """Load, plan and validate; default the checkpoint store to Prefect blocks unless one was chosen."""
    register_store()
    loaded = load(params)
    conns = connections(params.connections, params.templates)
    plan = build_plan(loaded, params.operation, conns)
    if "store" not in plan.checkpoint.model_fields_set:
        plan.checkpoint = plan.checkpoint.model_copy(update={"store": PREFECT_STORE})
    return Pipeline.from_plan(plan, conns, variables=params.variables)


def register_store() -> None:
    from fluxion_flows.prefect.store import PrefectBlockCheckpointStore

    register_checkpoint_store(PREFECT_STORE, lambda plan: PrefectBlockCheckpointStore(plan.checkpoint.block))


__all__ = ["PREFECT_STORE", "build_pipeline", "connections", "load", "register_store"]
