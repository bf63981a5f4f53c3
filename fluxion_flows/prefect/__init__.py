"""Prefect integration: every streaming manifest operation runs as a Prefect flow.

Importing this package imports Prefect (about a second), so the core never
does; the names below load on first use.

- :func:`run_manifest` (flow), :func:`build_flow` - ``fluxion_flows.prefect.flow``
- ``FluxionCheckpoint``, ``FluxionConnection`` blocks - ``fluxion_flows.prefect.blocks``
- ``PrefectBlockCheckpointStore`` (checkpoint store ``prefect``) - ``fluxion_flows.prefect.store``
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_manifest": "fluxion_flows.prefect.flow",
    "build_flow": "fluxion_flows.prefect.flow",
    "ManifestFlow": "fluxion_flows.prefect.flow",
    "FluxionCheckpoint": "fluxion_flows.prefect.blocks",
    "FluxionConnection": "fluxion_flows.prefect.blocks",
    "PrefectBlockCheckpointStore": "fluxion_flows.prefect.store",
    "RunParameters": "fluxion_flows.prefect.parameters",
    "StartFromParameter": "fluxion_flows.prefect.parameters",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fluxion_flows.prefect' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = list(_EXPORTS)
