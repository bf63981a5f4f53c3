"""Fixtures for manifest tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxion_flows.registry import ProviderRegistry
from tests.manifest.util import VaultSinkProvider, writer


@pytest.fixture
def registry() -> ProviderRegistry:
    """Entry-point providers plus the ``vault`` test sink."""
    return ProviderRegistry(extra=[VaultSinkProvider()])


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, Any], str]:
    """Write a document into the test's directory (YAML, or JSON for *.json); returns its path."""
    return writer(tmp_path)
