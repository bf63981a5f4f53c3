"""Placeholders in option values: ``${ENV}``, ``{{NAME}}`` and ``secret://scheme/name``.

They are resolved when a connector is configured, never when a manifest is
loaded, so a manifest (or a Prefect parameter holding one) can be shown
anywhere. A value that came from a secret reference becomes a
:class:`~fluxion_flows.spi.secret.Secret`; errors name the placeholder,
never its value.

Secret schemes are pluggable: ``env`` and ``file`` are built in, and the
Prefect integration registers ``prefect`` (``secret://prefect/NAME``, also
written ``{{ prefect.blocks.secret.NAME }}``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fluxion_flows.errors import PathPart, PlaceholderError
from fluxion_flows.spi.secret import Secret

SecretResolver = Callable[[str], str]
_RESOLVERS: dict[str, SecretResolver] = {}

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MUSTACHE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")
_PLACEHOLDER = re.compile(f"{_ENV.pattern}|{_MUSTACHE.pattern}")
"""Both forms in one pass, so a substituted value is never itself scanned for placeholders."""
_SECRET_URI = re.compile(r"^secret://([a-z][a-z0-9+.-]*)/(.+)$")
_PREFECT_SECRET = "prefect.blocks.secret."


def register_secret_resolver(scheme: str, resolver: SecretResolver) -> None:
    """Make ``secret://<scheme>/<name>`` resolvable (e.g. from a vault client)."""
    _RESOLVERS[scheme] = resolver


def _env_secret(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise KeyError(name)
    return value


def _file_secret(name: str) -> str:
    return Path(name if name.startswith("/") else "/" + name).read_text(encoding="utf-8").strip()


register_secret_resolver("env", _env_secret)
register_secret_resolver("file", _file_secret)


class Resolver:
    """Resolves placeholders in an option tree; ``variables`` feed ``{{NAME}}`` before the environment."""

    def __init__(
        self, variables: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        self.variables = dict(variables or {})
        self.environ = environ if environ is not None else os.environ

    def resolve(self, value: Any, *, file: str | None = None, path: Sequence[PathPart] = ()) -> Any:
        if isinstance(value, str):
            return self._string(value, file, tuple(path))
        if isinstance(value, Mapping):
            return {k: self.resolve(v, file=file, path=(*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, file=file, path=(*path, i)) for i, v in enumerate(value)]
        return value

    def _string(self, text: str, file: str | None, path: tuple[PathPart, ...]) -> Any:
        uri = _SECRET_URI.match(text)
        if uri:
            return Secret(self._secret(uri[1], uri[2], text, file, path))
        secret = False

        def mustache(name: str, match: re.Match[str]) -> str:
            nonlocal secret
            if name.startswith(_PREFECT_SECRET):
                secret = True
                return self._secret("prefect", name.removeprefix(_PREFECT_SECRET), match[0], file, path)
            if name in self.variables:
                return self.variables[name]
            if name in self.environ:
                return self.environ[name]
            raise PlaceholderError(
                f"unresolved placeholder `{match[0]}`: no variable or environment variable `{name}`",
                file=file,
                path=path,
                hint="set it in the environment or pass it as a variable",
            )

        def env(name: str, default: str | None) -> str:
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            raise PlaceholderError(
                f"unresolved placeholder `${{{name}}}`: environment variable `{name}` is not set",
                file=file,
                path=path,
                hint=f"export {name}=... or write ${{{name}:-default}}",
            )

        def substitute(match: re.Match[str]) -> str:
            return env(match[1], match[2]) if match[1] is not None else mustache(match[3], match)

        result = _PLACEHOLDER.sub(substitute, text)
        return Secret(result) if secret else result

    def _secret(
        self, scheme: str, name: str, reference: str, file: str | None, path: tuple[PathPart, ...]
    ) -> str:
        resolver = _RESOLVERS.get(scheme)
        if resolver is None:
            raise PlaceholderError(
                f"unknown secret scheme in `{reference}`",
                file=file,
                path=path,
                found=scheme,
                valid=list(_RESOLVERS),
            )
        try:
            return resolver(name)
        except PlaceholderError:
            raise
        except Exception as exc:
            raise PlaceholderError(
                f"secret `{reference}` cannot be resolved ({type(exc).__name__})", file=file, path=path
            ) from None


def placeholders_in(value: Any) -> list[str]:
    """Every placeholder reference in an option tree (for validation without resolving)."""
    found: list[str] = []
    if isinstance(value, str):
        found += [m[0] for m in _ENV.finditer(value)] + [m[0] for m in _MUSTACHE.finditer(value)]
        if _SECRET_URI.match(value):
            found.append(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            found += placeholders_in(item)
    elif isinstance(value, list):
        for item in value:
            found += placeholders_in(item)
    return found
