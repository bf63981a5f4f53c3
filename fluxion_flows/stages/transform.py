"""Stream-safe, per-document stages: ``$match $set/$addFields $project $unset
$replaceRoot/$replaceWith $unwind``.

Each returns a batch function ``(docs, variables) -> docs``. Input documents
are never mutated: ``$set`` makes a shallow copy (nested objects are copied
only along the paths it writes), so ``$$ROOT`` and the caller's batch stay intact.
That copy is needed: the executor retries a failed batch from the same source
documents, puts the failing stage's *input* in the dead letter, and hands the
same documents to every fanout/pipeline sink, so a stage must never change
what it receives.

``$match``, ``$set`` and inclusion ``$project`` run as one generated function
per stage (see :mod:`codegen`); the closure versions below stay the reference
and the fallback when generation does not apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fluxion_flows.spi.batch import Document
from fluxion_flows.stages.codegen import Gen, expr_code
from fluxion_flows.stages.expressions.core import Ctx, Fn, Variables, compile_expr
from fluxion_flows.stages.paths import getter, remove_path, set_path, split_path
from fluxion_flows.stages.projection import Tree, child_value, exclude, include, parse_projection
from fluxion_flows.stages.query import compile_query, query_code
from fluxion_flows.stages.runtime import BatchFn
from fluxion_flows.stages.values import MISSING


def match(spec: Any, ctx: Ctx) -> BatchFn:
    predicate = compile_query(spec, ctx)
    if spec:
        g = Gen()
        generated = _generate(g, [f"return [d for d in docs if {query_code(spec, ctx, g)}]"])
        if generated is not None:
            return generated
    return lambda docs, _v: [doc for doc in docs if predicate(doc)]


def _generate(g: Gen, body: list[str]) -> BatchFn | None:
    """Compile a generated ``run(docs, v)``; None (use the closures) if Python refuses it."""
    try:
        run: BatchFn = g.build("docs, v", body)
    except (SyntaxError, RecursionError, MemoryError):  # pragma: no cover - pathological nesting
        return None
    return run


def _loop(g: Gen, per_doc: list[str]) -> BatchFn | None:
    body = ["out = []", "ap = out.append", "for d in docs:", *(f"    {line}" for line in per_doc)]
    return _generate(g, [*body, "    ap(n)", "return out"])


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

    def one(doc: Document, v: Variables) -> Document:
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
        return new

    generated = _generate_set(spec, ctx, one)
    if generated is not None:
        return generated
    return lambda docs, v: [one(doc, v) for doc in docs]


def _prelude(g: Gen, slow: Callable[[Document, Variables], Document]) -> list[str]:
    """The hoisted field reads, behind a guard: documents that are not exactly dicts take the
    closure path (hoisted reads use ``d[key]``, which a dict subclass may override)."""
    setup = g.take_setup()
    if not setup:
        return []
    return [f"if d.__class__ is not {g.bind(dict)}:", f"    ap({g.bind(slow)}(d, v))", "    continue", *setup]


def _generate_set(
    spec: dict[str, Any], ctx: Ctx, slow: Callable[[Document, Variables], Document]
) -> BatchFn | None:
    """One loop: copy the document, then store each field computed from the input document."""
    g = Gen()
    g.hoist = True
    top: list[str] = []
    nested: list[str] = []
    for key, value in spec.items():
        code = expr_code(value, ctx.at(key), g)
        if "." in key:
            path = g.bind(split_path(key))
            nested += [
                f"_x = {code.text}",
                f"if _x is {g.missing}: {g.bind(remove_path)}(n, {path})",
                f"else: {g.bind(set_path)}(n, {path}, _x)",
            ]
        elif code.missing:
            name = g.bind(key)
            top += [
                f"_x = {code.text}",
                f"if _x is {g.missing}: n.pop({name}, None)",
                f"else: n[{name}] = _x",
            ]
        else:
            top.append(f"n[{g.bind(key)}] = {code.text}")
    return _loop(g, [*_prelude(g, slow), "n = d.copy()", *top, *nested])


def _generate_include(tree: Tree) -> BatchFn | None:
    """Inclusion ``$project`` as one loop: a dict display when every included field is present."""
    g = Gen()
    g.hoist = True
    missing = g.missing
    keys = [g.bind(name) for name in tree.include]
    per_doc = ["n = {}"]
    if keys:
        # Exactly a dict: every included field present is one dict display (KeyError: some are not).
        pick = g.bind(_included(tree.include))
        display = ", ".join(f"{key}: d[{key}]" for key in keys)
        per_doc = [
            f"if d.__class__ is {g.bind(dict)}:",
            "    try:",
            f"        n = {{{display}}}",
            f"    except {g.bind(KeyError)}:",
            f"        n = {pick}(d)",
            "else:",
            f"    n = {pick}(d)",
        ]
    for name, child in tree.children.items():
        read = f"{g.bind(child_value)}({g.bind(child)}, d.get({g.bind(name)}, {missing}), d, v)"
        per_doc += [f"_x = {read}", f"if _x is not {missing}: n[{g.bind(name)}] = _x"]
    for name, value, field_ctx in tree.sources:
        code = expr_code(value, field_ctx, g)
        if code.missing:
            per_doc += [f"_x = {code.text}", f"if _x is not {missing}: n[{g.bind(name)}] = _x"]
        else:
            per_doc.append(f"n[{g.bind(name)}] = {code.text}")
    prelude = _prelude(g, lambda doc, v: include(tree, doc, doc, v))
    return _loop(g, [*prelude, *per_doc])


def set_then_project(
    set_spec: Any, set_ctx: Ctx, project_spec: Any, project_ctx: Ctx, unfused: list[BatchFn]
) -> BatchFn | None:
    """``$set`` directly followed by a plain inclusion ``$project``, as one loop without the copy.

    Why: computing fields and then keeping a few of them is the most common
    shape of a pipeline's tail, and the ``$set`` copy of every document is most
    of its cost. Here the computed values stay in locals and the output is one
    dict display of those locals and the input's included fields. Every other
    case (a document that is not exactly a dict, an included field that is
    missing or computed as missing) runs the two compiled stages (``unfused``)
    on that document, so the results and errors are theirs. None when the
    shapes are not these (dotted ``$set`` keys, ``$project`` sub-trees or
    computed fields, exclusion mode).
    """
    inclusion, tree = parse_projection(project_spec, project_ctx)
    dotted = any("." in key for key in set_spec)
    if not inclusion or tree.children or tree.computed or dotted or not tree.include:
        return None
    g = Gen()
    g.hoist = True
    computed: dict[str, tuple[str, bool]] = {}
    per_doc: list[str] = []
    for key, value in set_spec.items():
        code = expr_code(value, set_ctx.at(key), g)
        temp = g.temp()
        per_doc.append(f"{temp} = {code.text}")  # every field is evaluated: its errors must surface
        computed[key] = (temp, code.missing)
    first, second = unfused
    keys = list(computed)

    def slow(doc: Document, v: Variables) -> Document:
        return second(first([doc], v), v)[0]

    def finish(doc: Document, values: tuple[Any, ...], v: Variables) -> Document:
        """The ``$set`` result from the values already computed (never twice: ``$function``), projected."""
        new = doc.copy()
        for key, value in zip(keys, values, strict=True):
            if value is MISSING:
                new.pop(key, None)
            else:
                new[key] = value
        return second([new], v)[0]

    finished = f"{g.bind(finish)}(d, ({', '.join(temp for temp, _ in computed.values())},), v)"
    values = {name: computed[name][0] if name in computed else f"d[{g.bind(name)}]" for name in tree.include}
    display = "{" + ", ".join(f"{g.bind(name)}: {value}" for name, value in values.items()) + "}"
    maybe_missing = [computed[n][0] for n in tree.include if n in computed and computed[n][1]]
    present = [f"{temp} is not {g.missing}" for temp in maybe_missing]
    build = ["try:", f"    n = {display}", f"except {g.bind(KeyError)}:", f"    n = {finished}"]
    if present:
        build = [f"if {' and '.join(present)}:", *(f"    {line}" for line in build), "else:"]
        build.append(f"    n = {finished}")
    prelude = [f"if d.__class__ is not {g.bind(dict)}:", f"    ap({g.bind(slow)}(d, v))", "    continue"]
    return _loop(g, [*prelude, *g.take_setup(), *per_doc, *build])


def _included(names: list[str]) -> Any:
    def pick(doc: Document) -> Document:
        return {name: doc[name] for name in names if name in doc}

    return pick


def project(spec: Any, ctx: Ctx) -> BatchFn:
    inclusion, tree = parse_projection(spec, ctx)
    if not inclusion:
        return lambda docs, _v: [exclude(tree, doc) for doc in docs]
    generated = _generate_include(tree)
    if generated is not None:
        return generated
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

    def one(out: list[Document], doc: Document) -> None:
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

    if len(parts) == 1 and index_parts is None:
        return _unwind_top(parts[0], one)

    def run(docs: list[Document], _v: Variables) -> list[Document]:
        out: list[Document] = []
        for doc in docs:
            one(out, doc)
        return out

    return run


def _unwind_top(key: str, one: Callable[[list[Document], Document], None]) -> BatchFn:
    """``$unwind: "$field"`` of a top-level array without an index: one copy per element."""

    def run(docs: list[Document], _v: Variables) -> list[Document]:
        out: list[Document] = []
        append = out.append
        for doc in docs:
            value = doc.get(key, MISSING) if doc.__class__ is dict else MISSING
            if value.__class__ is list and value:
                for item in value:
                    new = doc.copy()
                    new[key] = item
                    append(new)
            else:
                one(out, doc)
        return out

    return run
