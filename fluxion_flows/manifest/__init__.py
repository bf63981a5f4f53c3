"""Manifests: the model, loading with precise errors, connections, placeholders, and planning."""

from fluxion_flows.manifest.connections import Connections, Scope
from fluxion_flows.manifest.loader import LoadedManifest, load_manifest
from fluxion_flows.manifest.model import Manifest
from fluxion_flows.manifest.plan import PipelinePlan, build_plan

__all__ = [
    "Connections",
    "LoadedManifest",
    "Manifest",
    "PipelinePlan",
    "Scope",
    "build_plan",
    "load_manifest",
]
