"""The ``fluxion`` command line."""

from fluxion_flows.cli.app import app, main

__all__ = ["app", "main"]
