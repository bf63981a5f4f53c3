"""The exception family for everything a user can get wrong.

Every error a manifest, a connections file, an option or a placeholder can
cause is a :class:`FluxionError`. Its message always names the file, the path
inside it and what would have been valid, so the CLI can print it as one line
and exit 2 without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

PathPart = str | int


def format_path(parts: Sequence[PathPart]) -> str:
    """Render ``("operationDefs", "orders", "stages", 2)`` as ``operationDefs.orders.stages[2]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


def did_you_mean(found: str, valid: Iterable[str]) -> str | None:
    """The closest valid name to a near-miss, or None when nothing is close."""
    matches = difflib.get_close_matches(found, list(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


class FluxionError(Exception):
    """Base of every error a user can cause and fix in their files or options."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        path: Sequence[PathPart] = (),
        valid: Iterable[str] | None = None,
        found: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.path = tuple(path)
        self.valid = sorted(valid) if valid is not None else None
        self.found = found
        self.hint = hint
        super().__init__(self._render())

    @property
    def location(self) -> str:
        where = format_path(self.path)
        if self.file and where:
            return f"{self.file}: {where}"
        return self.file or where

    def _render(self) -> str:
        parts = [f"{self.location}: {self.problem}" if self.location else self.problem]
        if self.found is not None and self.valid is not None:
            suggestion = did_you_mean(self.found, self.valid)
            if suggestion:
                parts.append(f"did you mean `{suggestion}`?")
        if self.valid is not None:
            shown = ", ".join(self.valid) if self.valid else "(none)"
            parts.append(f"valid: {shown}")
        if self.hint:
            parts.append(self.hint)
        return "; ".join(parts)

    def at(self, *, file: str | None = None, prefix: Sequence[PathPart] = ()) -> FluxionError:
        """Re-anchor this error inside a larger document (used when a nested loader raised it)."""
        self.file = self.file or file
        self.path = tuple(prefix) + self.path
        self.args = (self._render(),)
        return self


class ManifestError(FluxionError):
    """The manifest (or a file it pulls in) is malformed or inconsistent."""


class ConnectionsError(FluxionError):
    """A connections or templates file is malformed, or a connectionRef cannot be resolved."""


class OptionError(FluxionError):
    """A connector option is missing, unknown or of the wrong type."""


class PlaceholderError(FluxionError):
    """A ``${ENV}``, ``{{NAME}}`` or ``secret://`` reference cannot be resolved."""


class ProviderError(FluxionError):
    """A provider id is unknown, ambiguous, or its optional dependencies are not installed."""


class NotStreamingError(FluxionError):
    """The selected operation exists but is not ``execution.type: streaming``."""


class StageError(FluxionError):
    """A stage specification is invalid (raised at load time with its manifest path)."""
