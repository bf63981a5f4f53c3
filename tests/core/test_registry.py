"""Provider discovery through entry points: built-ins, a third-party plugin, duplicates, missing extras."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fluxion_flows.errors import ProviderError
from fluxion_flows.registry import ProviderRegistry
from fluxion_flows.spi import ConnectorKind

ROOT = Path(__file__).resolve().parents[2]


def fake_distribution(root: Path, name: str, entry_points: str, requires: str = "", module: str = "") -> None:
    """A real installed distribution (dist-info) on a sys.path entry, as pip would leave it."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{requires}")
    (info / "entry_points.txt").write_text(entry_points)
    if module:
        (root / f"{name.replace('-', '_')}.py").write_text(module)


def test_builtin_connectors_are_discovered_through_entry_points() -> None:
    registry = ProviderRegistry()
    assert {"file", "generator"} <= set(registry.types(ConnectorKind.SOURCE))
    assert {"file", "stdout", "memory"} <= set(registry.types(ConnectorKind.SINK))
    entry = registry.entry(ConnectorKind.SOURCE, "file")
    assert entry is not None and entry.distribution.startswith("fluxion-flows")


def test_unknown_type_suggests_the_near_miss() -> None:
    with pytest.raises(ProviderError) as error:
        ProviderRegistry().configure(ConnectorKind.SOURCE, "generater", {}, file="m.yaml", path=("source",))
    message = str(error.value)
    assert "unknown source type `generater`" in message and "did you mean `generator`" in message
    assert message.startswith("m.yaml: source.type")


def test_options_are_validated_with_defaults_applied() -> None:
    config = ProviderRegistry().configure(ConnectorKind.SOURCE, "generator", {"count": "10"})
    assert config["count"] == 10 and config["seed"] == 42


def test_two_providers_with_one_id_name_both_distributions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_distribution(tmp_path, "rival-files", "[fluxion_flows.sources]\nfile = rival_files:Provider\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ProviderError) as error:
        ProviderRegistry().types(ConnectorKind.SOURCE)
    message = str(error.value)
    assert "`file`" in message and "fluxion-flows" in message and "rival-files 1.0" in message


def test_a_missing_optional_dependency_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_distribution(
        tmp_path,
        "fancy-connector",
        "[fluxion_flows.sinks]\nfancy = fancy_connector:Provider\n",
        requires='Provides-Extra: turbo\nRequires-Dist: turbo-client>=1; extra == "turbo"\n',
        module="import turbo_client\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ProviderRegistry()
    assert "fancy" in registry.types(ConnectorKind.SINK)  # listed without being imported
    with pytest.raises(ProviderError) as error:
        registry.provider(ConnectorKind.SINK, "fancy", file="m.yaml", path=("sink",))
    assert "pip install 'fancy-connector[turbo]'" in str(error.value)
    assert str(error.value).startswith("m.yaml: sink")


def test_the_example_third_party_plugin_installs_and_runs(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT / "examples" / "fluxion-plugin-example"),
        ],
        check=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    listing = subprocess.run(
        [sys.executable, "-m", "fluxion_flows", "connectors", "show", "countdown"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Countdown" in listing.stdout and "start" in listing.stdout
    manifest = tmp_path / "m.yaml"
    out = tmp_path / "out.txt"
    manifest.write_text(
        "id: plugin-demo\noperationDefs:\n  count:\n    execution:\n      type: streaming\n"
        "      source: {type: countdown, start: 25, step: 10}\n"
        f"      sink: {{type: numbered-file, path: {out}}}\n"
        f"checkpoint: {{store: file, directory: {tmp_path / 'ck'}}}\n"
    )
    subprocess.run(
        [sys.executable, "-m", "fluxion_flows", "run", str(manifest), "--mode", "drain", "-q"],
        env=env,
        check=True,
        capture_output=True,
    )
    lines = out.read_text().splitlines()
    assert lines[0] == "1 {'n': 25}" and lines[-1] == "25 {'n': 1}" and len(lines) == 25
