"""``urlTemplate``: URLs with ``{field}`` / ``{a.b}`` placeholders filled from a document.

The template is split once into literal and field parts, so rendering per
document (``format: single``) is a join, not a regex pass. Values are
percent-encoded as one path segment, so a field cannot inject ``/`` or ``?``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from fluxion_flows.connectors.http.errors import UrlTemplateError
from fluxion_flows.spi import Document

_FIELD = re.compile(r"\{([^{}]+)\}")
_MISSING = object()


class UrlTemplate:
    def __init__(self, template: str, base: str | None = None) -> None:
        if "://" not in template and base:
            template = base.rstrip("/") + "/" + template.lstrip("/")
        self.template = template
        self._parts: list[str | tuple[str, ...]] = []
        position = 0
        for match in _FIELD.finditer(template):
            self._parts.append(template[position : match.start()])
            self._parts.append(tuple(match[1].strip().split(".")))
            position = match.end()
        self._parts.append(template[position:])

    @property
    def fields(self) -> list[str]:
        return [".".join(p) for p in self._parts if isinstance(p, tuple)]

    def render(self, document: Document) -> str:
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _lookup(document, part)
            if value is _MISSING or value is None or isinstance(value, dict | list):
                raise UrlTemplateError(
                    f"urlTemplate field `{'.'.join(part)}` is missing, null or not a scalar in the document"
                )
            out.append(quote(_text(value), safe=""))
        return "".join(out)


def _lookup(document: Document, path: tuple[str, ...]) -> Any:
    value: Any = document
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
