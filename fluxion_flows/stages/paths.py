"""Dotted field paths, with MongoDB's two traversal rules.

Aggregation expressions (``"$a.b"``) map over arrays: ``a: [{b: 1}, {b: 2}]``
gives ``[1, 2]`` and numeric parts are field names, not indexes. Queries
(``{"a.b": 1}``) match by element and accept numeric parts as indexes, so they
collect every candidate value instead (see :func:`query_values`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fluxion_flows.stages.values import MISSING

Getter = Callable[[Any], Any]


def split_path(path: str) -> tuple[str, ...]:
    """``"a.b.c"`` -> ``("a", "b", "c")``."""
    return tuple(path.split("."))


def _get_in_array(items: list[Any], parts: tuple[str, ...]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            value = get_path(item, parts)
            if value is not MISSING:
                out.append(value)
        elif isinstance(item, list):
            out.append(_get_in_array(item, parts))
    return out


def get_path(value: Any, parts: tuple[str, ...]) -> Any:
    """Aggregation semantics: the value at ``parts`` or MISSING; arrays are mapped over."""
    for index, part in enumerate(parts):
        if isinstance(value, dict):
            value = value.get(part, MISSING)
            if value is MISSING:
                return MISSING
        elif isinstance(value, list):
            return _get_in_array(value, parts[index:])
        else:
            return MISSING
    return value


def getter(parts: tuple[str, ...]) -> Getter:
    """A specialised reader for a fixed path (one dict lookup for top-level fields)."""
    if len(parts) == 1:
        key = parts[0]

        def get_top(doc: Any) -> Any:
            return doc.get(key, MISSING) if doc.__class__ is dict else get_path(doc, parts)

        return get_top
    if len(parts) == 2:
        first, second = parts

        def get_two(doc: Any) -> Any:
            inner = doc.get(first, MISSING) if doc.__class__ is dict else MISSING
            if inner.__class__ is dict:
                return inner.get(second, MISSING)
            return get_path(doc, parts)

        return get_two
    return lambda doc: get_path(doc, parts)


def query_values(value: Any, parts: tuple[str, ...]) -> list[Any]:
    """Query semantics: every value reachable by ``parts`` (MISSING where a branch ends early).

    A numeric part indexes arrays; any other part is looked up in each element
    of an array. Leaf arrays are returned as-is: the caller decides whether to
    match the array itself or its elements.
    """
    if not parts:
        return [value]
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        return query_values(value.get(head, MISSING), rest) if head in value else [MISSING]
    if isinstance(value, list):
        out: list[Any] = []
        if head.isdigit():
            index = int(head)
            if index < len(value):
                out.extend(query_values(value[index], rest))
            for item in value:
                if isinstance(item, dict) and head in item:
                    out.extend(query_values(item, parts))
        else:
            for item in value:
                if isinstance(item, dict):
                    out.extend(query_values(item, parts))
        return out or [MISSING]
    return [MISSING]


def set_path(doc: dict[str, Any], parts: tuple[str, ...], value: Any) -> None:
    """Set a nested field, creating objects on the way; arrays get the field on each object element.

    ``doc`` must be owned by the caller; nested objects are copied before being
    changed so the input document (and ``$$ROOT``) is never mutated.
    """
    head = parts[0]
    if len(parts) == 1:
        doc[head] = value
        return
    inner = doc.get(head, MISSING)
    if isinstance(inner, dict):
        copy = dict(inner)
        set_path(copy, parts[1:], value)
        doc[head] = copy
    elif isinstance(inner, list):
        doc[head] = [_set_in_element(item, parts[1:], value) for item in inner]
    else:
        fresh: dict[str, Any] = {}
        set_path(fresh, parts[1:], value)
        doc[head] = fresh


def _set_in_element(item: Any, parts: tuple[str, ...], value: Any) -> Any:
    if isinstance(item, dict):
        copy = dict(item)
        set_path(copy, parts, value)
        return copy
    if isinstance(item, list):
        return [_set_in_element(sub, parts, value) for sub in item]
    fresh: dict[str, Any] = {}
    set_path(fresh, parts, value)
    return fresh


def remove_path(doc: dict[str, Any], parts: tuple[str, ...]) -> None:
    """Remove a nested field (copying nested objects first, like :func:`set_path`)."""
    head = parts[0]
    if len(parts) == 1:
        doc.pop(head, None)
        return
    inner = doc.get(head, MISSING)
    if isinstance(inner, dict):
        copy = dict(inner)
        remove_path(copy, parts[1:])
        doc[head] = copy
    elif isinstance(inner, list):
        doc[head] = [_remove_in_element(item, parts[1:]) for item in inner]


def _remove_in_element(item: Any, parts: tuple[str, ...]) -> Any:
    if isinstance(item, dict):
        copy = dict(item)
        remove_path(copy, parts)
        return copy
    if isinstance(item, list):
        return [_remove_in_element(sub, parts) for sub in item]
    return item
