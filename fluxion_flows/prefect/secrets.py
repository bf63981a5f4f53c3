"""``secret://prefect/NAME`` and ``{{ prefect.blocks.secret.NAME }}``: values from Prefect Secret blocks.

Placeholders are resolved synchronously while a pipeline is configured, which
inside a flow happens on the event loop's thread; ``Secret.load(..., _sync=True)``
forces Prefect's synchronous client there (one ~15 ms call per secret, once
per run). The value is returned to the placeholder layer, which wraps it in a
masking :class:`fluxion_flows.spi.secret.Secret`; the block name, never the
value, appears in errors.
"""

from __future__ import annotations

from typing import Any

from fluxion_flows.manifest.placeholders import register_secret_resolver


def resolve_prefect_secret(name: str) -> str:
    from prefect.blocks.system import Secret as SecretBlock

    block: Any = SecretBlock.load(name, _sync=True)  # type: ignore[call-arg]
    value = block.get()
    return value if isinstance(value, str) else str(value)


def register() -> None:
    """Idempotent: the flow module calls it at import, so any process running the flow resolves them."""
    register_secret_resolver("prefect", resolve_prefect_secret)


__all__ = ["register", "resolve_prefect_secret"]
