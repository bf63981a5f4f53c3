"""Compiling aggregation expressions into closures.

An expression spec (``"$total"``, ``{$multiply: ["$total", 1.08]}``, ``{a: "$b"}``)
is compiled once into a :class:`Node`: a Python closure ``fn(current, variables)``
plus what the compiler knows statically (a constant value, or a plain field
path). Operators use that knowledge to specialise, e.g. ``$multiply`` of a
top-level field by a constant becomes one dict lookup and one multiplication.

``current`` is ``$$CURRENT`` (the document fields resolve against);
``variables`` maps names to values: ``NOW`` and ``GLOBALS`` once per batch,
``ROOT`` only when ``$let`` rebinds ``CURRENT``, plus ``$let``/``as`` names.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fluxion_flows.errors import PathPart, StageError, format_path
from fluxion_flows.stages.base import StageRuntimeError
from fluxion_flows.stages.paths import get_path, getter, split_path
from fluxion_flows.stages.values import MISSING, to_array_friendly, type_name

Variables = dict[str, Any]
Fn = Callable[[Any, Variables], Any]
OperatorCompiler = Callable[[Any, "Ctx"], "Node"]

SYSTEM_VARIABLES = frozenset({"ROOT", "CURRENT", "NOW", "REMOVE", "GLOBALS"})


@dataclass(frozen=True, slots=True)
class Node:
    """A compiled expression: the closure plus static facts the compiler can exploit."""

    fn: Fn
    constant: Any = MISSING
    is_constant: bool = False
    field: tuple[str, ...] | None = None

    @staticmethod
    def const(value: Any) -> Node:
        """A literal; containers are copied per use so no output shares (and mutates) them."""
        if isinstance(value, (dict, list)):
            return Node(lambda _doc, _vars: copy.deepcopy(value), constant=value, is_constant=True)
        return Node(lambda _doc, _vars: value, constant=value, is_constant=True)


@dataclass(frozen=True, slots=True)
class Ctx:
    """Where we are while compiling: for error messages and variable scoping."""

    file: str | None = None
    path: tuple[PathPart, ...] = ()
    variables: frozenset[str] = SYSTEM_VARIABLES
    allow_functions: bool = False
    globals: Mapping[str, Any] = field(default_factory=dict)

    def at(self, *parts: PathPart) -> Ctx:
        return Ctx(self.file, self.path + parts, self.variables, self.allow_functions, self.globals)

    def with_variables(self, *names: str) -> Ctx:
        return Ctx(self.file, self.path, self.variables | set(names), self.allow_functions, self.globals)

    @property
    def where(self) -> str:
        return format_path(self.path)

    def error(self, problem: str, **kwargs: Any) -> StageError:
        return StageError(problem, file=self.file, path=self.path, **kwargs)

    def runtime(self, operator: str, message: str) -> StageRuntimeError:
        return StageRuntimeError(message, operator=operator, path=self.where)


OPERATORS: dict[str, OperatorCompiler] = {}


def operator(*names: str) -> Callable[[OperatorCompiler], OperatorCompiler]:
    """Register a compile function for one or more operator names."""

    def register(compile_fn: OperatorCompiler) -> OperatorCompiler:
        for name in names:
            OPERATORS[name] = compile_fn
        return compile_fn

    return register


def unknown_operator(
    name: str, ctx: Ctx, kind: str = "operator", candidates: Iterable[str] | None = None
) -> StageError:
    """'unknown operator `$sbustract` at `...`, did you mean `$subtract`?'"""
    pool = list(OPERATORS if candidates is None else candidates)
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean `{close[0]}`?"
    elif len(pool) <= 20:
        hint = f"valid: {', '.join(sorted(pool))}"
    else:
        hint = "see the operators in reference §5"
    return StageError(f"unknown {kind} `{name}`", file=ctx.file, path=ctx.path, hint=hint)


def compile_expr(spec: Any, ctx: Ctx) -> Node:
    """Compile any expression spec into a Node (raises StageError on invalid specs)."""
    if isinstance(spec, str):
        if spec.startswith("$$"):
            return _variable(spec[2:], ctx)
        if spec.startswith("$"):
            if len(spec) == 1:
                raise ctx.error("`$` is not a valid field path")
            return field_node(split_path(spec[1:]), ctx)
        return Node.const(spec)
    if isinstance(spec, dict):
        return _object_or_operator(spec, ctx)
    if isinstance(spec, list):
        return _array(spec, ctx)
    return Node.const(spec)


def field_node(parts: tuple[str, ...], ctx: Ctx) -> Node:
    if any(not part for part in parts):
        raise ctx.error(f"invalid field path `${'.'.join(parts)}`: empty field name")
    get = getter(parts)
    return Node(lambda doc, _vars: get(doc), field=parts)


def _variable(text: str, ctx: Ctx) -> Node:
    name, _, rest = text.partition(".")
    parts = split_path(rest) if rest else ()
    if name not in ctx.variables:
        close = difflib.get_close_matches(name, list(ctx.variables), n=1)
        raise ctx.error(
            f"unknown variable `$${name}`",
            hint=f"did you mean `$${close[0]}`?"
            if close
            else f"defined here: {', '.join(sorted(ctx.variables))}",
        )
    if name == "REMOVE":
        return Node(lambda _doc, _vars: MISSING)
    if name == "CURRENT":
        if not parts:
            return Node(lambda doc, _vars: doc)
        return Node(lambda doc, _vars: get_path(doc, parts))
    if name == "ROOT":
        return Node(lambda doc, v: get_path(v.get("ROOT", doc), parts))
    if name == "GLOBALS" and "GLOBALS" not in ctx.variables - SYSTEM_VARIABLES:
        glob = dict(ctx.globals)
        return Node(lambda _doc, v: get_path(v.get("GLOBALS", glob), parts))
    return Node(lambda _doc, v: get_path(v.get(name, MISSING), parts))


def _object_or_operator(spec: dict[str, Any], ctx: Ctx) -> Node:
    keys = list(spec)
    dollar = [k for k in keys if isinstance(k, str) and k.startswith("$")]
    if dollar:
        if len(keys) != 1:
            raise ctx.error(
                f"an operator object must have exactly one key, found {', '.join(map(str, keys))}",
                hint="wrap literal objects whose keys start with `$` in {$literal: ...}",
            )
        name = dollar[0]
        compile_fn = OPERATORS.get(name)
        if compile_fn is None:
            raise unknown_operator(name, ctx.at(name))
        return compile_fn(spec[name], ctx.at(name))
    for key in keys:
        if "." in key:
            raise ctx.error(f"field name `{key}` in an object expression cannot contain `.`")
    nodes = [(key, compile_expr(value, ctx.at(key))) for key, value in spec.items()]
    if all(node.is_constant for _, node in nodes):
        return Node.const({k: n.constant for k, n in nodes if n.constant is not MISSING})
    items = [(key, node.fn) for key, node in nodes]

    def build(doc: Any, v: Variables) -> Any:
        out = {}
        for key, fn in items:
            value = fn(doc, v)
            if value is not MISSING:
                out[key] = value
        return out

    return Node(build)


def _array(spec: list[Any], ctx: Ctx) -> Node:
    nodes = [compile_expr(item, ctx.at(i)) for i, item in enumerate(spec)]
    if all(node.is_constant for node in nodes):
        return Node.const([to_array_friendly(n.constant) for n in nodes])
    fns = [node.fn for node in nodes]
    return Node(lambda doc, v: [to_array_friendly(fn(doc, v)) for fn in fns])


def arg_list(spec: Any) -> list[Any]:
    """Operators accept ``{$op: x}`` as shorthand for ``{$op: [x]}``."""
    return spec if isinstance(spec, list) else [spec]


def compile_args(spec: Any, ctx: Ctx, name: str, count: int | tuple[int, int] | None = None) -> list[Node]:
    """Compile an operator's positional arguments, checking their number."""
    args = arg_list(spec)
    low, high = (count, count) if isinstance(count, int) else (count or (0, 10**9))
    if not low <= len(args) <= high:
        expected = str(low) if low == high else f"{low} to {high}" if high < 10**9 else f"at least {low}"
        raise ctx.error(f"{name} takes {expected} argument(s), got {len(args)}")
    return [compile_expr(arg, ctx.at(i)) for i, arg in enumerate(args)]


def named_args(
    spec: Any, ctx: Ctx, name: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Validate an operator's ``{name: value}`` arguments (values still uncompiled)."""
    if not isinstance(spec, dict):
        raise ctx.error(f"{name} takes an object with {', '.join(required + optional)}")
    allowed = required + optional
    for key in spec:
        if key not in allowed:
            raise ctx.error(f"{name} has no argument `{key}`", found=key, valid=allowed)
    for key in required:
        if key not in spec:
            raise ctx.error(f"{name} is missing its `{key}` argument", valid=allowed)
    return dict(spec)


def describe(value: Any) -> str:
    """The BSON type name used in runtime error messages."""
    return type_name(value)


@operator("$literal")
def _literal(spec: Any, ctx: Ctx) -> Node:
    return Node.const(spec)


@operator("$let")
def _let(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$let", ("vars", "in"))
    if not isinstance(args["vars"], dict):
        raise ctx.at("vars").error("$let.vars must be an object of variable names to expressions")
    bindings: list[tuple[str, Fn]] = []
    for name, value in args["vars"].items():
        if not name or not (name[0].islower() or name == "CURRENT") or not name.replace("_", "a").isalnum():
            raise ctx.at("vars", name).error(
                f"invalid variable name `{name}`", hint="names start with a lowercase letter"
            )
        bindings.append((name, compile_expr(value, ctx.at("vars", name)).fn))
    body = compile_expr(args["in"], ctx.with_variables(*(n for n, _ in bindings)).at("in")).fn
    rebinds_current = any(name == "CURRENT" for name, _ in bindings)

    def run(doc: Any, v: Variables) -> Any:
        inner = dict(v)
        for name, fn in bindings:
            inner[name] = fn(doc, v)
        if rebinds_current:
            inner.setdefault("ROOT", doc)
            return body(inner.pop("CURRENT"), inner)
        return body(doc, inner)

    return Node(run)
