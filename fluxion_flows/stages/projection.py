"""``$project`` and ``$unset``: inclusion, exclusion and computed fields.

A projection spec is parsed once into a tree (dotted keys and nested objects
become sub-trees). Inclusion mode builds a new document from the included
and computed fields; exclusion mode copies the document and drops fields.
Mixing the two is an error except for ``_id``, as in MongoDB. Output field
order: ``_id``, then included and computed fields in the order the spec
lists them (MongoDB keeps the input order for included fields; a dict
compares equal either way, and spec order saves a scan of every document).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fluxion_flows.stages.expressions.core import Ctx, Fn, Node, Variables, compile_expr
from fluxion_flows.stages.values import MISSING, is_number


@dataclass
class Tree:
    """One level of a projection: included/excluded names, computed fields and sub-trees."""

    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    computed: list[tuple[str, Fn]] = field(default_factory=list)
    sources: list[tuple[str, Any, Ctx]] = field(default_factory=list)  # computed specs, for codegen
    children: dict[str, Tree] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


def _flag(value: Any) -> bool | None:
    """1/true include, 0/false exclude; None for an expression."""
    if isinstance(value, bool):
        return value
    if is_number(value):
        return bool(value)
    return None


def _is_expression_object(value: Any) -> bool:
    return isinstance(value, dict) and any(isinstance(k, str) and k.startswith("$") for k in value)


def _insert(tree: Tree, parts: list[str], value: Any, ctx: Ctx) -> None:
    head = parts[0]
    if len(parts) > 1:
        child = tree.children.setdefault(head, Tree())
        if head not in tree.order:
            tree.order.append(head)
        _insert(child, parts[1:], value, ctx)
        return
    if isinstance(value, dict) and value and not _is_expression_object(value):
        child = tree.children.setdefault(head, Tree())
        if head not in tree.order:
            tree.order.append(head)
        for key, sub in value.items():
            _insert(child, key.split("."), sub, ctx.at(key))
        return
    flag = _flag(value)
    if flag is True:
        tree.include.append(head)
    elif flag is False:
        tree.exclude.append(head)
    else:
        node: Node = compile_expr(value, ctx)
        tree.computed.append((head, node.fn))
        tree.sources.append((head, value, ctx))
    tree.order.append(head)


def _has(tree: Tree, what: str) -> bool:
    own = bool(tree.exclude) if what == "exclude" else bool(tree.include or tree.computed)
    return own or any(_has(child, what) for child in tree.children.values())


def parse_projection(spec: Any, ctx: Ctx) -> tuple[bool, Tree]:
    """Returns (inclusion_mode, tree) after checking the spec is coherent."""
    if not isinstance(spec, dict) or not spec:
        raise ctx.error("$project takes a non-empty object of field: 1 | 0 | expression")
    tree = Tree()
    for key, value in spec.items():
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise ctx.error(f"invalid field name `{key}` in $project")
        _insert(tree, key.split("."), value, ctx.at(key))
    id_excluded = "_id" in tree.exclude
    if id_excluded:
        tree.exclude.remove("_id")
    inclusion = _has(tree, "include")
    if id_excluded and not inclusion and not _has(tree, "exclude"):
        tree.exclude.append("_id")
        return False, tree
    if inclusion and _has(tree, "exclude"):
        raise ctx.error(
            "$project cannot mix inclusion and exclusion (except `_id: 0`)",
            hint="use $unset to drop fields, or list only the fields to keep",
        )
    if inclusion or not _has(tree, "exclude"):
        if not id_excluded and "_id" not in tree.order:
            tree.include.insert(0, "_id")
            tree.order.insert(0, "_id")
        return True, tree
    if id_excluded:
        tree.exclude.append("_id")
    return False, tree


def include(tree: Tree, doc: dict[str, Any], root: Any, v: Variables) -> dict[str, Any]:
    """Inclusion mode: a new document with only the projected fields."""
    out: dict[str, Any] = {}
    for name in tree.include:
        value = doc.get(name, MISSING)
        if value is not MISSING:
            out[name] = value
    for name, child in tree.children.items():
        value = doc.get(name, MISSING)
        if isinstance(value, dict):
            out[name] = include(child, value, root, v)
        elif isinstance(value, list):
            out[name] = _include_array(child, value, root, v)
        elif child.computed:
            out[name] = include(child, {}, root, v)
    for name, fn in tree.computed:
        value = fn(root, v)
        if value is not MISSING:
            out[name] = value
    return out


def child_value(tree: Tree, value: Any, root: Any, v: Variables) -> Any:
    """What :func:`include` stores for one sub-tree given the field's value (MISSING: nothing)."""
    if isinstance(value, dict):
        return include(tree, value, root, v)
    if isinstance(value, list):
        return _include_array(tree, value, root, v)
    if tree.computed:
        return include(tree, {}, root, v)
    return MISSING


def _include_array(tree: Tree, items: list[Any], root: Any, v: Variables) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            out.append(include(tree, item, root, v))
        elif isinstance(item, list):
            out.append(_include_array(tree, item, root, v))
        elif tree.computed:
            out.append(include(tree, {}, root, v))
    return out


def exclude(tree: Tree, doc: dict[str, Any]) -> dict[str, Any]:
    """Exclusion mode: a copy of the document without the excluded fields."""
    out = dict(doc)
    for name in tree.exclude:
        out.pop(name, None)
    for name, child in tree.children.items():
        value = out.get(name, MISSING)
        if isinstance(value, dict):
            out[name] = exclude(child, value)
        elif isinstance(value, list):
            out[name] = [_exclude_item(child, item) for item in value]
    return out


def _exclude_item(tree: Tree, item: Any) -> Any:
    if isinstance(item, dict):
        return exclude(tree, item)
    if isinstance(item, list):
        return [_exclude_item(tree, sub) for sub in item]
    return item
