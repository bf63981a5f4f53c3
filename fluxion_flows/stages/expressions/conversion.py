"""Type operators: ``$convert`` (with ``onError``/``onNull``), ``$toInt $toLong $toDouble
$toDecimal $toBool $toString $toDate``, ``$type``, ``$isNumber``.

Conversion follows MongoDB's table: strings parse as base-10 numbers (``"1.5"``
is not an int), doubles truncate toward zero into ints when in range, dates
become milliseconds since the epoch, every string is ``true``. A failed
conversion is a runtime error unless ``onError`` is given.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from fluxion_flows.stages.expressions.core import (
    Ctx,
    Node,
    Variables,
    compile_args,
    compile_expr,
    describe,
    named_args,
    operator,
)
from fluxion_flows.stages.values import (
    EPOCH,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    MISSING,
    TYPE_CODES,
    UTC,
    is_number,
    type_name,
)


class ConversionError(Exception):
    """A value cannot be converted; becomes ``onError`` or a StageRuntimeError."""


def double_to_string(value: float) -> str:
    """MongoDB prints integral doubles without a fraction (2.0 -> "2")."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def date_to_ms(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_date(ms: int | float) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=int(ms))


def format_date(value: dt.datetime) -> str:
    """ISO-8601 with milliseconds and ``Z``, as ``$toString`` prints dates."""
    value = value.astimezone(UTC) if value.tzinfo else value
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


_INT_TEXT = re.compile(r"[+-]?\d+")
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.I)


def _to_integer(value: Any, low: int, high: int, target: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if low <= value <= high:
            return value
        raise ConversionError(f"value {value} is out of range for {target}")
    if isinstance(value, (float, Decimal)):
        if value != value or value in (math.inf, -math.inf):
            raise ConversionError(f"cannot convert {value} to {target}")
        truncated = int(value)
        if low <= truncated <= high:
            return truncated
        raise ConversionError(f"value {value} is out of range for {target}")
    if isinstance(value, str):
        if not _INT_TEXT.fullmatch(value):
            raise ConversionError(f"failed to parse number '{value}' in $convert to {target}")
        return _to_integer(int(value), low, high, target)
    if isinstance(value, dt.datetime) and target == "long":
        return date_to_ms(value)
    raise ConversionError(f"unsupported conversion from {describe(value)} to {target}")


def _to_double(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if is_number(value):
        return float(value)
    if isinstance(value, str):
        if not _FLOAT_TEXT.fullmatch(value):
            raise ConversionError(f"failed to parse number '{value}' in $convert to double")
        return float(value)
    if isinstance(value, dt.datetime):
        return float(date_to_ms(value))
    raise ConversionError(f"unsupported conversion from {describe(value)} to double")


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, float):
        return Decimal(repr(value))
    if is_number(value):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ConversionError(f"failed to parse number '{value}' in $convert to decimal") from None
    if isinstance(value, dt.datetime):
        return Decimal(date_to_ms(value))
    raise ConversionError(f"unsupported conversion from {describe(value)} to decimal")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if is_number(value):
        return bool(value != 0)
    if isinstance(value, (str, dt.datetime, dict, list)) or type_name(value) == "objectId":
        return True
    raise ConversionError(f"unsupported conversion from {describe(value)} to bool")


def to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return double_to_string(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return format_date(value)
    if type_name(value) == "objectId":
        return str(value)
    raise ConversionError(f"unsupported conversion from {describe(value)} to string")


def parse_iso_date(text: str) -> dt.datetime:
    """The date strings ``$toDate`` accepts: ISO-8601 dates with optional time and offset."""
    cleaned = text.strip()
    if cleaned.endswith("Z") or cleaned.endswith("z"):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(cleaned)
    except ValueError:
        raise ConversionError(f"error parsing date string '{text}'") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _to_date(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        raise ConversionError("unsupported conversion from bool to date")
    if isinstance(value, (float, Decimal)) or (isinstance(value, int) and type_name(value) == "long"):
        if value != value or value in (math.inf, -math.inf):
            raise ConversionError(f"cannot convert {value} to date")
        return ms_to_date(int(value))
    if isinstance(value, str):
        return parse_iso_date(value)
    if type_name(value) == "objectId":
        generated: dt.datetime = value.generation_time
        return generated
    raise ConversionError(f"unsupported conversion from {describe(value)} to date")


CONVERTERS: dict[str, Any] = {
    "int": lambda x: _to_integer(x, INT32_MIN, INT32_MAX, "int"),
    "long": lambda x: _to_integer(x, INT64_MIN, INT64_MAX, "long"),
    "double": _to_double,
    "decimal": _to_decimal,
    "bool": _to_bool,
    "string": to_string,
    "date": _to_date,
}


def _target_name(target: Any) -> str | None:
    if isinstance(target, str) and target in CONVERTERS:
        return target
    if is_number(target):
        for name, code in TYPE_CODES.items():
            if code == target and name in CONVERTERS:
                return name
    return None


def convert(value: Any, target: str) -> Any:
    result = CONVERTERS[target](value)
    return result


def _converter(spec: Any, ctx: Ctx, name: str, target: str | None) -> Node:
    if target is not None:
        (input_fn,) = (n.fn for n in compile_args(spec, ctx, name, 1))
        to_fn = None
        on_error = on_null = None
    else:
        args = named_args(spec, ctx, "$convert", ("input", "to"), ("onError", "onNull"))
        input_fn = compile_expr(args["input"], ctx.at("input")).fn
        to_node = compile_expr(args["to"], ctx.at("to"))
        if to_node.is_constant:
            target = _target_name(to_node.constant)
            if target is None:
                raise ctx.at("to").error(
                    f"unsupported $convert target `{to_node.constant}`",
                    found=str(to_node.constant),
                    valid=list(CONVERTERS),
                )
        to_fn = None if target is not None else to_node.fn
        on_error = compile_expr(args["onError"], ctx.at("onError")).fn if "onError" in args else None
        on_null = compile_expr(args["onNull"], ctx.at("onNull")).fn if "onNull" in args else None
    fixed = target

    def run(doc: Any, v: Variables) -> Any:
        value = input_fn(doc, v)
        if value is None or value is MISSING:
            return on_null(doc, v) if on_null is not None else None
        goal = fixed
        if goal is None and to_fn is not None:
            goal = _target_name(to_fn(doc, v))
            if goal is None:
                raise ctx.runtime(name, "unknown target type in $convert")
        assert goal is not None
        try:
            return CONVERTERS[goal](value)
        except ConversionError as exc:
            if on_error is not None:
                return on_error(doc, v)
            raise ctx.runtime(name, str(exc)) from None

    return Node(run)


@operator("$convert")
def _convert(spec: Any, ctx: Ctx) -> Node:
    return _converter(spec, ctx, "$convert", None)


def _shorthand(name: str, target: str) -> None:
    @operator(name)
    def compile_shorthand(spec: Any, ctx: Ctx) -> Node:
        return _converter(spec, ctx, name, target)


for _name, _target in (
    ("$toInt", "int"),
    ("$toLong", "long"),
    ("$toDouble", "double"),
    ("$toDecimal", "decimal"),
    ("$toBool", "bool"),
    ("$toString", "string"),
    ("$toDate", "date"),
):
    _shorthand(_name, _target)


@operator("$type")
def _type(spec: Any, ctx: Ctx) -> Node:
    (arg,) = (n.fn for n in compile_args(spec, ctx, "$type", 1))
    return Node(lambda doc, v: type_name(arg(doc, v)))


@operator("$isNumber")
def _is_number(spec: Any, ctx: Ctx) -> Node:
    (arg,) = (n.fn for n in compile_args(spec, ctx, "$isNumber", 1))
    return Node(lambda doc, v: is_number(arg(doc, v)))
