"""Stream-safe, per-document stages: ``$match $set/$addFields $project $unset
$replaceRoot/$replaceWith $unwind``.

Each returns a batch function ``(docs, variables) -> docs``. Input documents
are never mutated: ``$set`` makes a shallow copy (nested objects are copied
only along the paths it writes), so ``$$ROOT`` and the caller's batch stay intact.
"""

from __future__ import annotations

from typing import Any

from fluxion_flows.spi.batch import Document
from fluxion_flows.stages.expressions.core import Ctx, Fn, Variables, compile_expr
from fluxion_flows.stages.paths import getter, remove_path, set_path, split_path
from fluxion_flows.stages.projection import exclude, include, parse_projection
from fluxion_flows.stages.query import compile_query
from fluxion_flows.stages.runtime import BatchFn
from fluxion_flows.stages.values import MISSING


def match(spec: Any, ctx: Ctx) -> BatchFn:
    predicate = compile_query(spec, ctx)
    return lambda docs, _v: [doc for doc in docs if predicate(doc)]


def set_fields(spec: Any, ctx: Ctx, name: str) -> BatchFn:
    if not isinstance(spec, dict) or not spec:
        raise ctx.error(f"{name} takes a non-empty object of field: expression")
    top: list[tuple[str, Fn]] = []
    nested: list[tuple[tuple[str, ...], Fn]] = []
    for key, value in spec.items():
        if not isinstance(key, str) or not key or key.startswith("$") or "" in key.split("."):
            raise ctx.error(f"invalid field name `{key}` in {name}")
        fn = compile_expr(value, ctx.at(key)).fn
        if "." in key:
            nested.append((split_path(key), fn))
        else:
            top.append((key, fn))

    def run(docs: list[Document], v: Variables) -> list[Document]:
        out = []
        for doc in docs:
            new = doc.copy()
            for key, fn in top:
                value = fn(doc, v)
                if value is MISSING:
                    new.pop(key, None)
                else:
                    new[key] = value
            for parts, fn in nested:
                value = fn(doc, v)
                if value is MISSING:
                    remove_path(new, parts)
                else:
                    set_path(new, parts, value)
            out.append(new)
        return out

    return run


def project(spec: Any, ctx: Ctx) -> BatchFn:
    inclusion, tree = parse_projection(spec, ctx)
    if not inclusion:
        return lambda docs, _v: [exclude(tree, doc) for doc in docs]
    if not tree.children and not tree.computed:
        keys = tree.include

        def pick(docs: list[Document], _v: Variables) -> list[Document]:
            out = []
            for doc in docs:
                new = {}
                for key in keys:
                    if key in doc:
                        new[key] = doc[key]
                out.append(new)
            return out

        return pick
    return lambda docs, v: [include(tree, doc, doc, v) for doc in docs]


def unset(spec: Any, ctx: Ctx) -> BatchFn:
    names = spec if isinstance(spec, list) else [spec]
    if not names or not all(isinstance(n, str) and n and not n.startswith("$") for n in names):
        raise ctx.error("$unset takes a field name or an array of field names")
    return project({n: 0 for n in names}, ctx)


def replace_root(spec: Any, ctx: Ctx, name: str) -> BatchFn:
    if name == "$replaceRoot":
        if not isinstance(spec, dict) or set(spec) != {"newRoot"}:
            raise ctx.error("$replaceRoot takes {newRoot: <expression>}", valid=["newRoot"])
        ctx = ctx.at("newRoot")
        spec = spec["newRoot"]
    fn = compile_expr(spec, ctx).fn

    def run(docs: list[Document], v: Variables) -> list[Document]:
        out = []
        for doc in docs:
            value = fn(doc, v)
            if not isinstance(value, dict):
                kind = "missing" if value is MISSING else type(value).__name__
                raise ctx.runtime(
                    name, f"'newRoot' expression must evaluate to an object, but resulting value was {kind}"
                )
            out.append(value)
        return out

    return run


def unwind(spec: Any, ctx: Ctx) -> BatchFn:
    options = {"path": spec} if isinstance(spec, str) else spec
    if not isinstance(options, dict) or "path" not in options:
        raise ctx.error(
            '$unwind takes a field path ("$sizes") or {path, includeArrayIndex, preserveNullAndEmptyArrays}'
        )
    for key in options:
        if key not in ("path", "includeArrayIndex", "preserveNullAndEmptyArrays"):
            raise ctx.at(key).error(
                f"unknown $unwind option `{key}`",
                found=key,
                valid=["path", "includeArrayIndex", "preserveNullAndEmptyArrays"],
            )
    path = options["path"]
    if not isinstance(path, str) or not path.startswith("$") or path.startswith("$$") or len(path) < 2:
        raise ctx.at("path").error('$unwind path must be a field path starting with `$`, e.g. "$sizes"')
    index_field = options.get("includeArrayIndex")
    if index_field is not None and (
        not isinstance(index_field, str) or index_field.startswith("$") or not index_field
    ):
        raise ctx.at("includeArrayIndex").error(
            "includeArrayIndex must be a field name not starting with `$`"
        )
    preserve = bool(options.get("preserveNullAndEmptyArrays", False))
    parts = split_path(path[1:])
    get = getter(parts)
    index_parts = split_path(index_field) if index_field else None

    def emit(out: list[Document], doc: Document, value: Any, index: Any, remove: bool = False) -> None:
        new = doc.copy()
        if remove:
            remove_path(new, parts)
        elif value is not MISSING:
            set_path(new, parts, value)
        if index_parts is not None:
            set_path(new, index_parts, index)
        out.append(new)

    def run(docs: list[Document], _v: Variables) -> list[Document]:
        out: list[Document] = []
        for doc in docs:
            value = get(doc)
            if isinstance(value, list):
                if value:
                    for i, item in enumerate(value):
                        emit(out, doc, item, i)
                elif preserve:
                    emit(out, doc, MISSING, None, remove=True)
            elif value is None or value is MISSING:
                if preserve:
                    emit(out, doc, value, None)
            elif index_parts is None:
                out.append(doc)
            else:
                emit(out, doc, value, None)
        return out

    return run
