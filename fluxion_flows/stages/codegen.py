"""Generated Python source for the common per-document shapes of a stage.

Why: a compiled closure tree costs one Python call per node per document
(``$multiply`` -> field getter -> dict lookup). For the shapes pipelines use
most (field paths, scalar constants, ``$multiply``/``$add``/``$subtract``,
``$concat``, ``$toUpper``/``$toLower``, ``$dateToString`` with a constant
format, ``$match`` equality/comparison on plain paths) the stage builders
generate one function per stage whose loop reads fields and computes inline.

Semantics are unchanged by construction:

* only specs already validated by :func:`compile_expr` / the query compiler
  get here, and the closures they produced stay the reference;
* every inlined operator has a *fast path* for the value types it is sure
  about (e.g. ``int``/``float`` operands of ``$multiply``) and otherwise calls
  the operator's original closure, which re-evaluates it with full MongoDB
  semantics and raises the same error with the same manifest path. Operands
  are inlined only when they are themselves inlined shapes (pure, no side
  effects), so re-evaluating them in the fallback is invisible, and operands
  are evaluated left to right and stop at the first unexpected type, like the
  closures do.

Safety: the generated source contains only identifiers this module makes up
(``_b3``, ``_t7``, ``d``, ``v``...), Python operators and the attribute names of
a fixed table. Every value coming from a spec (field names, string and number
constants, format templates) is passed in as a bound closure variable, never
pasted into the source, and the code runs with no builtins.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fluxion_flows.stages.expressions.core import Ctx, arg_list, compile_expr
from fluxion_flows.stages.expressions.dates import _SPECIFIERS, _compiled_format
from fluxion_flows.stages.paths import get_path, split_path
from fluxion_flows.stages.values import INT64_MAX, INT64_MIN, MISSING, UTC

MAX_DEPTH = 8
"""Deeper expressions are called as closures (keeps generated source small)."""


def fit(value: Any) -> Any:
    """MongoDB's long overflows into a double (same rule as the arithmetic operators)."""
    if value.__class__ is int and not INT64_MIN <= value <= INT64_MAX:
        return float(value)
    return value


class Gen:
    """Collects bound values and temporaries for one generated function."""

    def __init__(self) -> None:
        self._values: list[Any] = []
        self._names: dict[int, str] = {}
        self._temps = 0
        self.missing = self.bind(MISSING)
        self.hoist = False
        """Field reads of ``d`` become statements run at the top of the loop body (see ``setup``)."""
        self.setup: list[str] = []
        self._reads: dict[tuple[str, ...], str] = {}

    def take_setup(self) -> list[str]:
        """Statements that must run (unconditionally, per document) before the last expressions."""
        lines, self.setup = self.setup, []
        return lines

    def bind(self, value: Any) -> str:
        """The identifier under which ``value`` is visible to the generated code."""
        name = self._names.get(id(value))
        if name is None:
            name = f"_b{len(self._values)}"
            self._values.append(value)
            self._names[id(value)] = name
        return name

    def temp(self) -> str:
        self._temps += 1
        return f"_t{self._temps}"

    def build(self, params: str, body: list[str]) -> Callable[..., Any]:
        """Compile ``def run(params): body`` with the bound values as closure variables."""
        names = ", ".join(f"_b{i}" for i in range(len(self._values)))
        lines = [f"def _factory({names}):", f"    def run({params}):"]
        lines += [f"        {line}" for line in body]
        lines.append("    return run")
        namespace: dict[str, Any] = {"__builtins__": {}}
        exec(compile("\n".join(lines) + "\n", "<fluxion-generated-stage>", "exec"), namespace)
        run: Callable[..., Any] = namespace["_factory"](*self._values)
        return run


@dataclass(frozen=True, slots=True)
class Code:
    """A Python expression (source text) and whether it may evaluate to MISSING."""

    text: str
    missing: bool
    constant_type: type | None = None
    simple: bool = False  # a plain name: reading it twice costs nothing


def expr_code(spec: Any, ctx: Ctx, g: Gen, doc: str = "d") -> Code:
    """Source evaluating ``spec`` on the document named ``doc``: inlined, or a closure call."""
    inlined = inline_expr(spec, ctx, g, doc)
    if inlined is not None:
        return inlined
    return Code(f"{g.bind(compile_expr(spec, ctx).fn)}({doc}, v)", True)


def inline_expr(spec: Any, ctx: Ctx, g: Gen, doc: str = "d", depth: int = 0) -> Code | None:
    """Inline source for a pure, known expression shape; None when it must stay a closure."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(spec, str) and spec.startswith("$") and not spec.startswith("$$"):
        return field_code(split_path(spec[1:]), g, doc)
    if isinstance(spec, dict) and len(spec) == 1:
        name = next(iter(spec))
        make = _OPERATORS.get(name)
        if make is None:
            return None
        compile_expr(spec, ctx)  # validates (raises the compiler's own error)
        return make(spec, ctx, g, doc, depth)
    if isinstance(spec, (dict, list)):
        return None
    node = compile_expr(spec, ctx)
    if not node.is_constant:
        return None
    value = node.constant
    return Code(g.bind(value), value is MISSING, value.__class__, simple=True)


def field_code(parts: tuple[str, ...], g: Gen, doc: str) -> Code:
    """Aggregation path read: plain dict lookups, else :func:`get_path` (arrays, non-dicts)."""
    if g.hoist and doc == "d":
        return _hoisted_read(parts, g)
    missing = g.missing
    keys = [g.bind(part) for part in parts]
    if len(keys) == 1:
        return Code(f"{doc}.get({keys[0]}, {missing})", True)
    temps = [g.temp() for _ in keys[:-1]]
    checks = [f"({temps[0]} := {doc}.get({keys[0]}, {missing})).__class__ is {g.bind(dict)}"]
    for i in range(1, len(keys) - 1):
        checks.append(f"({temps[i]} := {temps[i - 1]}.get({keys[i]}, {missing})).__class__ is {g.bind(dict)}")
    fast = f"{temps[-1]}.get({keys[-1]}, {missing})"
    slow = f"{g.bind(get_path)}({doc}, {g.bind(parts)})"
    return Code(f"({fast} if {' and '.join(checks)} else {slow})", True)


def _hoisted_read(parts: tuple[str, ...], g: Gen) -> Code:
    """Read ``parts`` of ``d`` once per document into a temporary, as statements.

    Reads are pure and cannot raise, so doing them before (and regardless of)
    the expression that uses them is invisible. The loop guarantees ``d`` is
    exactly a dict (others take the closure path), so ``d[key]`` with
    ``KeyError`` is ``d.get(key, MISSING)``, only cheaper.
    """
    name = g._reads.get(parts)
    if name is not None:
        return Code(name, True, simple=True)
    name = g._reads[parts] = g.temp()
    lines: list[str] = []
    indent = ""
    source = "d"
    for depth, part in enumerate(parts):
        if depth:
            lines.append(f"{indent}if {name}.__class__ is {g.bind(dict)}:")
            indent += "    "
        lines += [
            f"{indent}try:",
            f"{indent}    {name} = {source}[{g.bind(part)}]",
            f"{indent}except {g.bind(KeyError)}:",
            f"{indent}    {name} = {g.missing}",
        ]
        source = name
    for depth in range(len(parts) - 1, 0, -1):
        lines.append(f"{'    ' * (depth - 1)}else:")
        lines.append(f"{'    ' * depth}{name} = {g.bind(get_path)}(d, {g.bind(parts)})")
    g.setup += lines
    return Code(name, True, simple=True)


Inliner = Callable[[dict[str, Any], Ctx, Gen, str, int], "Code | None"]


def _operands(spec: dict[str, Any], ctx: Ctx, g: Gen, doc: str, depth: int) -> list[Code] | None:
    name, argument = next(iter(spec.items()))
    codes = []
    for i, arg in enumerate(arg_list(argument)):
        code = inline_expr(arg, ctx.at(name, i), g, doc, depth + 1)
        if code is None:
            return None
        codes.append(code)
    return codes


def _fallback(spec: dict[str, Any], ctx: Ctx, g: Gen, doc: str) -> str:
    return f"{g.bind(compile_expr(spec, ctx).fn)}({doc}, v)"


def _typed(codes: list[Code], g: Gen, types: tuple[type, ...]) -> tuple[list[str], list[str]] | None:
    """Names holding each operand and the checks (in operand order) that it has one of ``types``.

    A constant operand of an accepted type needs no check; one of another type
    means the fast path never applies (None: keep the closure).
    """
    values, checks = [], []
    for code in codes:
        if code.constant_type is not None:
            if code.constant_type not in types:
                return None
            values.append(code.text)
            continue
        temp = code.text if code.simple else g.temp()
        values.append(temp)
        read = temp if code.simple else f"({temp} := {code.text})"
        if len(types) == 1:
            checks.append(f"{read}.__class__ is {g.bind(types[0])}")
            continue
        kind = g.temp()
        tests = [f"{kind} is {g.bind(t)}" for t in types[1:]]
        checks.append(f"(({kind} := {read}.__class__) is {g.bind(types[0])} or {' or '.join(tests)})")
    return values, checks


def _select(fast: str, checks: list[str], slow: str) -> str:
    return f"({fast} if {' and '.join(checks)} else {slow})" if checks else fast


def _arithmetic(symbol: str, start: str, count: int | None) -> Inliner:
    def make(spec: dict[str, Any], ctx: Ctx, g: Gen, doc: str, depth: int) -> Code | None:
        codes = _operands(spec, ctx, g, doc, depth)
        if codes is None or not codes or (count is not None and len(codes) != count):
            return None
        typed = _typed(codes, g, (float, int))
        if typed is None:
            return None
        values, checks = typed
        result = f"{start}{f' {symbol} '.join(values)}"
        if not any(code.constant_type is float for code in codes):
            result = f"{g.bind(fit)}({result})"  # a float operand makes the result a float
        return Code(_select(result, checks, _fallback(spec, ctx, g, doc)), False)

    return make


def _concat(spec: dict[str, Any], ctx: Ctx, g: Gen, doc: str, depth: int) -> Code | None:
    codes = _operands(spec, ctx, g, doc, depth)
    if not codes:
        return None
    typed = _typed(codes, g, (str,))
    if typed is None:
        return None
    values, checks = typed
    return Code(_select(" + ".join(values), checks, _fallback(spec, ctx, g, doc)), False)


def _case(method: str) -> Inliner:
    def make(spec: dict[str, Any], ctx: Ctx, g: Gen, doc: str, depth: int) -> Code | None:
        codes = _operands(spec, ctx, g, doc, depth)
        if codes is None or len(codes) != 1:
            return None
        temp = g.temp()
        check = f"({temp} := {codes[0].text}).__class__ is {g.bind(str)} and {temp}.isascii()"
        return Code(f"({temp}.{method}() if {check} else {_fallback(spec, ctx, g, doc)})", False)

    return make


_DATE_PARTS: dict[str, tuple[str, str]] = {
    "Y": ("%04d", "year"),
    "m": ("%02d", "month"),
    "d": ("%02d", "day"),
    "H": ("%02d", "hour"),
    "M": ("%02d", "minute"),
    "S": ("%02d", "second"),
    "L": ("%03d", "microsecond // 1000"),
}


def _date_template(fmt: str) -> tuple[str, list[str]] | None:
    """A ``%``-template and the datetime attributes it needs, for the simple specifiers only."""
    letters = {id(fn): letter for letter, fn in _SPECIFIERS.items()}
    template, attributes = [], []
    for piece in _compiled_format(fmt):
        if isinstance(piece, str):
            template.append(piece.replace("%", "%%"))
            continue
        letter = letters[id(piece)]
        if letter == "%":
            template.append("%%")
        elif letter in _DATE_PARTS:
            spec, attribute = _DATE_PARTS[letter]
            template.append(spec)
            attributes.append(attribute)
        else:
            return None
    return "".join(template), attributes


def _date_to_string(spec: dict[str, Any], ctx: Ctx, g: Gen, doc: str, depth: int) -> Code | None:
    args = spec["$dateToString"]
    fmt = args.get("format", "%Y-%m-%dT%H:%M:%S.%LZ")
    if set(args) - {"date", "format"} or not isinstance(fmt, str) or fmt.startswith("$"):
        return None
    parsed = _date_template(fmt)
    date = inline_expr(args["date"], ctx.at("$dateToString", "date"), g, doc, depth + 1)
    if parsed is None or date is None:
        return None
    template, attributes = parsed
    temp = g.temp()
    values = ", ".join(f"{temp}.{attribute}" for attribute in attributes)
    fast = f"{g.bind(template)} % ({values},)" if attributes else g.bind(template % ())
    check = f"({temp} := {date.text}).__class__ is {g.bind(dt.datetime)} and {temp}.tzinfo is {g.bind(UTC)}"
    return Code(f"({fast} if {check} else {_fallback(spec, ctx, g, doc)})", False)


_OPERATORS: dict[str, Inliner] = {
    "$multiply": _arithmetic("*", "", None),
    "$add": _arithmetic("+", "0 + ", None),
    "$subtract": _arithmetic("-", "", 2),
    "$concat": _concat,
    "$toUpper": _case("upper"),
    "$toLower": _case("lower"),
    "$dateToString": _date_to_string,
}
