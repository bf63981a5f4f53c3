"""Arithmetic operators: ``$add $subtract $multiply $divide $mod $abs $ceil $floor $exp $ln
$log $log10 $pow $round $sqrt $trunc``.

MongoDB rules kept here: null or missing in, null out; a non-number is a
runtime error naming the operator; ``$add``/``$subtract`` also work on dates
(milliseconds); int results that leave the 64-bit range become doubles.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from fluxion_flows.stages.expressions.core import Ctx, Node, Variables, compile_args, describe, operator
from fluxion_flows.stages.values import INT64_MAX, INT64_MIN, MISSING, is_number

_FAST = (int, float)


def _fit(value: Any) -> Any:
    """Python ints are unbounded; MongoDB's long overflows into a double."""
    if value.__class__ is int and not INT64_MIN <= value <= INT64_MAX:
        return float(value)
    return value


def _mixed(a: Any, b: Any) -> tuple[Any, Any]:
    """Decimal with float: compute in Decimal, as MongoDB promotes to decimal."""
    if isinstance(a, Decimal) and isinstance(b, float):
        return a, Decimal(repr(b))
    if isinstance(b, Decimal) and isinstance(a, float):
        return Decimal(repr(a)), b
    return a, b


def _to_ms(date: dt.datetime) -> int:
    delta = date - dt.datetime(1970, 1, 1, tzinfo=date.tzinfo or dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _from_ms(ms: float) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=round(ms))


@operator("$add")
def _add(spec: Any, ctx: Ctx) -> Node:
    fns = [n.fn for n in compile_args(spec, ctx, "$add")]

    def add(doc: Any, v: Variables) -> Any:
        total: Any = 0
        date: dt.datetime | None = None
        for fn in fns:
            value = fn(doc, v)
            if value is None or value is MISSING:
                return None
            if value.__class__ in _FAST:
                total += value
            elif isinstance(value, dt.datetime):
                if date is not None:
                    raise ctx.runtime("$add", "only one date allowed in $add")
                date = value
            elif is_number(value):
                total, value = _mixed(total, value)
                total += value
            else:
                raise ctx.runtime("$add", f"only supports numeric or date types, not {describe(value)}")
        if date is not None:
            return _from_ms(_to_ms(date) + float(total))
        return _fit(total)

    return Node(add)


@operator("$subtract")
def _subtract(spec: Any, ctx: Ctx) -> Node:
    left, right = (n.fn for n in compile_args(spec, ctx, "$subtract", 2))

    def subtract(doc: Any, v: Variables) -> Any:
        a, b = left(doc, v), right(doc, v)
        if a is None or a is MISSING or b is None or b is MISSING:
            return None
        if a.__class__ in _FAST and b.__class__ in _FAST:
            return _fit(a - b)
        if isinstance(a, dt.datetime):
            if isinstance(b, dt.datetime):
                return _to_ms(a) - _to_ms(b)
            if is_number(b):
                return _from_ms(_to_ms(a) - float(b))
        elif is_number(a) and is_number(b):
            a, b = _mixed(a, b)
            return _fit(a - b)
        raise ctx.runtime("$subtract", f"cannot subtract {describe(b)} from {describe(a)}")

    return Node(subtract)


def _product(ctx: Ctx, values: list[Any]) -> Any:
    result: Any = 1
    for value in values:
        if value is None or value is MISSING:
            return None
        if not is_number(value):
            raise ctx.runtime("$multiply", f"only supports numeric types, not {describe(value)}")
        result, value = _mixed(result, value)
        result *= value
    return _fit(result)


@operator("$multiply")
def _multiply(spec: Any, ctx: Ctx) -> Node:
    nodes = compile_args(spec, ctx, "$multiply")
    if len(nodes) == 2 and nodes[1].is_constant and nodes[1].constant.__class__ in _FAST:
        # Specialised: field or expression times a constant (the common case).
        first, factor = nodes[0].fn, nodes[1].constant

        def scale(doc: Any, v: Variables) -> Any:
            value = first(doc, v)
            if value.__class__ is float or value.__class__ is int:
                return _fit(value * factor)
            return _product(ctx, [value, factor])

        return Node(scale)
    fns = [n.fn for n in nodes]
    return Node(lambda doc, v: _product(ctx, [fn(doc, v) for fn in fns]))


def _numeric(name: str, ctx: Ctx, spec: Any, count: int | tuple[int, int]) -> list[Callable[..., Any]]:
    return [n.fn for n in compile_args(spec, ctx, name, count)]


def _check(ctx: Ctx, name: str, value: Any) -> None:
    if not is_number(value):
        raise ctx.runtime(name, f"only supports numeric types, not {describe(value)}")


@operator("$divide")
def _divide(spec: Any, ctx: Ctx) -> Node:
    left, right = _numeric("$divide", ctx, spec, 2)

    def divide(doc: Any, v: Variables) -> Any:
        a, b = left(doc, v), right(doc, v)
        if a is None or a is MISSING or b is None or b is MISSING:
            return None
        _check(ctx, "$divide", a)
        _check(ctx, "$divide", b)
        if b == 0:
            raise ctx.runtime("$divide", "can't divide by zero")
        if isinstance(a, Decimal) or isinstance(b, Decimal):
            a, b = _mixed(a, b)
            return Decimal(a) / Decimal(b)
        return a / b

    return Node(divide)


@operator("$mod")
def _mod(spec: Any, ctx: Ctx) -> Node:
    left, right = _numeric("$mod", ctx, spec, 2)

    def mod(doc: Any, v: Variables) -> Any:
        a, b = left(doc, v), right(doc, v)
        if a is None or a is MISSING or b is None or b is MISSING:
            return None
        _check(ctx, "$mod", a)
        _check(ctx, "$mod", b)
        if b == 0:
            raise ctx.runtime("$mod", "can't $mod by zero")
        if isinstance(a, int) and isinstance(b, int):
            return int(math.fmod(a, b)) if abs(a) < 2**53 else a - b * int(a / b)
        if isinstance(a, Decimal) or isinstance(b, Decimal):
            a, b = _mixed(a, b)
            return Decimal(a) % Decimal(b)
        return math.fmod(a, b)

    return Node(mod)


def _unary(name: str, apply: Callable[[Any, Ctx], Any]) -> None:
    @operator(name)
    def compile_unary(spec: Any, ctx: Ctx) -> Node:
        (arg,) = _numeric(name, ctx, spec, 1)

        def run(doc: Any, v: Variables) -> Any:
            value = arg(doc, v)
            if value is None or value is MISSING:
                return None
            _check(ctx, name, value)
            return apply(value, ctx)

        return Node(run)


def _abs(x: Any, ctx: Ctx) -> Any:
    return _fit(abs(x))


def _ceil(x: Any, ctx: Ctx) -> Any:
    if isinstance(x, float):
        return float(math.ceil(x)) if math.isfinite(x) else x
    if isinstance(x, Decimal):
        return x.to_integral_value(rounding="ROUND_CEILING")
    return x


def _floor(x: Any, ctx: Ctx) -> Any:
    if isinstance(x, float):
        return float(math.floor(x)) if math.isfinite(x) else x
    if isinstance(x, Decimal):
        return x.to_integral_value(rounding="ROUND_FLOOR")
    return x


def _exp(x: Any, ctx: Ctx) -> Any:
    return x.exp() if isinstance(x, Decimal) else math.exp(x)


def _ln(x: Any, ctx: Ctx) -> Any:
    if x <= 0:
        raise ctx.runtime("$ln", f"argument must be a positive number, got {x}")
    return x.ln() if isinstance(x, Decimal) else math.log(x)


def _log10(x: Any, ctx: Ctx) -> Any:
    if x <= 0:
        raise ctx.runtime("$log10", f"argument must be a positive number, got {x}")
    return x.log10() if isinstance(x, Decimal) else math.log10(x)


def _sqrt(x: Any, ctx: Ctx) -> Any:
    if x < 0:
        raise ctx.runtime("$sqrt", f"argument must be greater than or equal to 0, got {x}")
    return x.sqrt() if isinstance(x, Decimal) else math.sqrt(x)


for _name, _fn in (
    ("$abs", _abs),
    ("$ceil", _ceil),
    ("$floor", _floor),
    ("$exp", _exp),
    ("$ln", _ln),
    ("$log10", _log10),
    ("$sqrt", _sqrt),
):
    _unary(_name, _fn)


@operator("$log")
def _log(spec: Any, ctx: Ctx) -> Node:
    number, base = _numeric("$log", ctx, spec, 2)

    def log(doc: Any, v: Variables) -> Any:
        x, b = number(doc, v), base(doc, v)
        if x is None or x is MISSING or b is None or b is MISSING:
            return None
        _check(ctx, "$log", x)
        _check(ctx, "$log", b)
        if x <= 0:
            raise ctx.runtime("$log", f"argument must be a positive number, got {x}")
        if b <= 0 or b == 1:
            raise ctx.runtime("$log", f"base must be a positive number not equal to 1, got {b}")
        if isinstance(x, Decimal) or isinstance(b, Decimal):
            return Decimal(x).ln() / Decimal(b).ln()
        return math.log(x, b)

    return Node(log)


@operator("$pow")
def _pow(spec: Any, ctx: Ctx) -> Node:
    base_fn, exp_fn = _numeric("$pow", ctx, spec, 2)

    def power(doc: Any, v: Variables) -> Any:
        b, e = base_fn(doc, v), exp_fn(doc, v)
        if b is None or b is MISSING or e is None or e is MISSING:
            return None
        _check(ctx, "$pow", b)
        _check(ctx, "$pow", e)
        if b == 0 and e < 0:
            raise ctx.runtime("$pow", "0 cannot be raised to a negative power")
        if isinstance(b, int) and isinstance(e, int):
            if e >= 0:
                return _fit(b**e)
            if b in (1, -1):
                return b**e if b == 1 or e % 2 == 0 else -1
            return float(b) ** e
        if isinstance(b, Decimal) or isinstance(e, Decimal):
            return Decimal(b) ** Decimal(e)
        try:
            return math.pow(float(b), float(e))
        except OverflowError:
            return math.inf
        except ValueError:  # negative base, fractional exponent
            return math.nan

    return Node(power)


def _places(ctx: Ctx, name: str, value: Any) -> int:
    if value is MISSING:
        return 0
    if not is_number(value) or int(value) != value or not -20 <= value <= 100:
        raise ctx.runtime(name, f"place must be an integer between -20 and 100, got {value!r}")
    return int(value)


def _round_to(x: Any, place: int, mode: str) -> Any:
    """Round (half to even, like MongoDB) or truncate ``x`` to ``place`` decimal places."""
    if isinstance(x, float) and not math.isfinite(x):
        return x
    quantum = Decimal(1).scaleb(-place)
    decimal = x if isinstance(x, Decimal) else Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
    try:
        rounded = decimal.quantize(quantum, rounding=mode)
    except InvalidOperation:
        return x
    if isinstance(x, Decimal):
        return rounded
    if isinstance(x, int):
        return int(rounded) if place < 0 else x
    return float(rounded)


def _rounding(name: str, mode: str) -> None:
    @operator(name)
    def compile_round(spec: Any, ctx: Ctx) -> Node:
        fns = _numeric(name, ctx, spec, (1, 2))
        number = fns[0]
        place_fn = fns[1] if len(fns) > 1 else None

        def run(doc: Any, v: Variables) -> Any:
            x = number(doc, v)
            place_value = place_fn(doc, v) if place_fn else MISSING
            if x is None or x is MISSING or place_value is None:
                return None
            _check(ctx, name, x)
            return _round_to(x, _places(ctx, name, place_value), mode)

        return Node(run)


_rounding("$round", ROUND_HALF_EVEN)
_rounding("$trunc", ROUND_DOWN)
