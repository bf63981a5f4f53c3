"""Date operators with time zones (``zoneinfo`` names or ``+hh:mm`` offsets).

Dates are aware ``datetime`` values in UTC with millisecond precision (naive
ones are read as UTC). Part extraction, truncation, calendar arithmetic and
boundary counting happen in the requested time zone's wall-clock time and the
result goes back to UTC, so ``$dateAdd {unit: "day"}`` keeps local time across
a daylight-saving change, as MongoDB does.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

from fluxion_flows.stages.expressions.conversion import date_to_ms, ms_to_date
from fluxion_flows.stages.expressions.core import (
    Ctx,
    Fn,
    Node,
    Variables,
    compile_expr,
    describe,
    named_args,
    operator,
)
from fluxion_flows.stages.values import UTC, is_nullish, is_number

_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})?")
_UNITS_MS = {"millisecond": 1, "second": 1000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
UNITS = ("year", "quarter", "month", "week", "day", "hour", "minute", "second", "millisecond")
_WEEKDAYS = {
    "monday": 0, "mon": 0, "tuesday": 1, "tue": 1, "wednesday": 2, "wed": 2, "thursday": 3, "thu": 3,
    "friday": 4, "fri": 4, "saturday": 5, "sat": 5, "sunday": 6, "sun": 6,
}  # fmt: skip


@functools.lru_cache(maxsize=256)
def parse_timezone(name: str) -> dt.tzinfo | None:
    """An Olson name or a UTC offset; None when unknown."""
    match = _OFFSET.fullmatch(name)
    if match:
        sign = -1 if match.group(1) == "-" else 1
        delta = dt.timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0))
        return dt.timezone(sign * delta)
    if name in ("UTC", "GMT", "Z"):
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def _zone(ctx: Ctx, name: str, fn: Fn | None, doc: Any, v: Variables) -> dt.tzinfo | None:
    """The tz for one evaluation; None means "null timezone" (result null)."""
    if fn is None:
        return UTC
    value = fn(doc, v)
    if is_nullish(value):
        return None
    if not isinstance(value, str):
        raise ctx.runtime(name, f"timezone must be a string, found {describe(value)}")
    tz = parse_timezone(value)
    if tz is None:
        raise ctx.runtime(name, f'unrecognized time zone identifier: "{value}"')
    return tz


def _date(ctx: Ctx, name: str, value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if type_is_object_id(value):
        generated: dt.datetime = value.generation_time
        return generated
    raise ctx.runtime(name, f"can't convert from BSON type {describe(value)} to Date")


def type_is_object_id(value: Any) -> bool:
    return bool(value.__class__.__name__ == "ObjectId")


def to_local(date: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """Wall-clock time in ``tz`` as a naive datetime."""
    return date.astimezone(tz).replace(tzinfo=None)


def from_local(local: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """A naive wall-clock time in ``tz`` back to an aware UTC datetime."""
    return local.replace(tzinfo=tz).astimezone(UTC)


def _date_and_zone_args(spec: Any, ctx: Ctx, name: str) -> tuple[Fn, Fn | None]:
    if isinstance(spec, dict) and "date" in spec:
        args = named_args(spec, ctx, name, ("date",), ("timezone",))
        tz_fn = compile_expr(args["timezone"], ctx.at("timezone")).fn if "timezone" in args else None
        return compile_expr(args["date"], ctx.at("date")).fn, tz_fn
    if isinstance(spec, list):
        if len(spec) != 1:
            raise ctx.error(f"{name} takes 1 argument, got {len(spec)}")
        spec = spec[0]
    return compile_expr(spec, ctx).fn, None


DATE_PARTS: dict[str, Callable[[dt.datetime], int]] = {
    "$year": lambda d: d.year,
    "$month": lambda d: d.month,
    "$dayOfMonth": lambda d: d.day,
    "$hour": lambda d: d.hour,
    "$minute": lambda d: d.minute,
    "$second": lambda d: d.second,
    "$millisecond": lambda d: d.microsecond // 1000,
    "$dayOfWeek": lambda d: d.isoweekday() % 7 + 1,
    "$dayOfYear": lambda d: d.timetuple().tm_yday,
    "$week": lambda d: int(d.strftime("%U")),
    "$isoWeek": lambda d: d.isocalendar()[1],
    "$isoWeekYear": lambda d: d.isocalendar()[0],
    "$isoDayOfWeek": lambda d: d.isoweekday(),
}


def _date_part(name: str, extract: Callable[[dt.datetime], int]) -> None:
    @operator(name)
    def compile_part(spec: Any, ctx: Ctx) -> Node:
        date_fn, tz_fn = _date_and_zone_args(spec, ctx, name)

        def run(doc: Any, v: Variables) -> Any:
            value = date_fn(doc, v)
            if is_nullish(value):
                return None
            tz = _zone(ctx, name, tz_fn, doc, v)
            if tz is None:
                return None
            return extract(to_local(_date(ctx, name, value), tz))

        return Node(run)


for _name, _extract in DATE_PARTS.items():
    _date_part(_name, _extract)


def _optional(args: dict[str, Any], key: str, ctx: Ctx) -> Fn | None:
    return compile_expr(args[key], ctx.at(key)).fn if key in args else None


def _unit(ctx: Ctx, name: str, fn: Fn, doc: Any, v: Variables) -> str | None:
    unit = fn(doc, v)
    if is_nullish(unit):
        return None
    if unit not in UNITS:
        raise ctx.runtime(name, f"unknown time unit value: {unit!r}")
    return str(unit)


def _start_of_week(ctx: Ctx, name: str, fn: Fn | None, doc: Any, v: Variables) -> int:
    if fn is None:
        return 6
    value = fn(doc, v)
    if not isinstance(value, str) or value.lower() not in _WEEKDAYS:
        raise ctx.runtime(name, f"unknown startOfWeek value: {value!r}")
    return _WEEKDAYS[value.lower()]


def add_months(local: dt.datetime, months: int) -> dt.datetime:
    """Calendar month arithmetic; the day is clamped to the target month's last day."""
    total = local.year * 12 + local.month - 1 + months
    year, month = divmod(total, 12)
    day = min(local.day, calendar.monthrange(year, month + 1)[1])
    return local.replace(year=year, month=month + 1, day=day)


def date_add(date: dt.datetime, unit: str, amount: int, tz: dt.tzinfo) -> dt.datetime:
    if unit in ("hour", "minute", "second", "millisecond"):
        return ms_to_date(date_to_ms(date) + amount * _UNITS_MS[unit])
    local = to_local(date, tz)
    if unit == "day":
        local += dt.timedelta(days=amount)
    elif unit == "week":
        local += dt.timedelta(weeks=amount)
    else:
        local = add_months(local, amount * {"month": 1, "quarter": 3, "year": 12}[unit])
    return from_local(local, tz)


def _date_add_operator(name: str, sign: int) -> None:
    @operator(name)
    def compile_add(spec: Any, ctx: Ctx) -> Node:
        args = named_args(spec, ctx, name, ("startDate", "unit", "amount"), ("timezone",))
        start_fn = compile_expr(args["startDate"], ctx.at("startDate")).fn
        unit_fn = compile_expr(args["unit"], ctx.at("unit")).fn
        amount_fn = compile_expr(args["amount"], ctx.at("amount")).fn
        tz_fn = _optional(args, "timezone", ctx)

        def run(doc: Any, v: Variables) -> Any:
            start, amount = start_fn(doc, v), amount_fn(doc, v)
            unit = _unit(ctx, name, unit_fn, doc, v)
            tz = _zone(ctx, name, tz_fn, doc, v)
            if is_nullish(start) or is_nullish(amount) or unit is None or tz is None:
                return None
            if not is_number(amount) or int(amount) != amount:
                raise ctx.runtime(name, f"amount must be an integer, found {describe(amount)}")
            try:
                return date_add(_date(ctx, name, start), unit, sign * int(amount), tz)
            except (OverflowError, ValueError):
                raise ctx.runtime(name, "the resulting date is out of range") from None

        return Node(run)


_date_add_operator("$dateAdd", 1)
_date_add_operator("$dateSubtract", -1)


def _week_start(local: dt.datetime, start_of_week: int) -> dt.datetime:
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - dt.timedelta(days=(midnight.weekday() - start_of_week) % 7)


def date_diff(start: dt.datetime, end: dt.datetime, unit: str, tz: dt.tzinfo, start_of_week: int) -> int:
    """Number of ``unit`` boundaries crossed between the two dates (MongoDB semantics)."""
    a, b = to_local(start, tz), to_local(end, tz)
    if unit == "year":
        return b.year - a.year
    if unit == "quarter":
        return (b.year * 4 + (b.month - 1) // 3) - (a.year * 4 + (a.month - 1) // 3)
    if unit == "month":
        return (b.year * 12 + b.month) - (a.year * 12 + a.month)
    if unit == "week":
        return (_week_start(b, start_of_week) - _week_start(a, start_of_week)).days // 7
    if unit == "day":
        return (b.date() - a.date()).days
    size = _UNITS_MS[unit]
    epoch = dt.datetime(1970, 1, 1)

    def local_ms(x: dt.datetime) -> int:
        delta = x - epoch
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000

    return local_ms(b) // size - local_ms(a) // size


@operator("$dateDiff")
def _date_diff(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$dateDiff", ("startDate", "endDate", "unit"), ("timezone", "startOfWeek"))
    start_fn = compile_expr(args["startDate"], ctx.at("startDate")).fn
    end_fn = compile_expr(args["endDate"], ctx.at("endDate")).fn
    unit_fn = compile_expr(args["unit"], ctx.at("unit")).fn
    tz_fn = _optional(args, "timezone", ctx)
    week_fn = _optional(args, "startOfWeek", ctx)

    def run(doc: Any, v: Variables) -> Any:
        start, end = start_fn(doc, v), end_fn(doc, v)
        unit = _unit(ctx, "$dateDiff", unit_fn, doc, v)
        tz = _zone(ctx, "$dateDiff", tz_fn, doc, v)
        if is_nullish(start) or is_nullish(end) or unit is None or tz is None:
            return None
        week = _start_of_week(ctx, "$dateDiff", week_fn, doc, v)
        return date_diff(_date(ctx, "$dateDiff", start), _date(ctx, "$dateDiff", end), unit, tz, week)

    return Node(run)


_REFERENCE = dt.datetime(2000, 1, 1)


def date_trunc(date: dt.datetime, unit: str, bin_size: int, tz: dt.tzinfo, start_of_week: int) -> dt.datetime:
    """Round down to a bin of ``bin_size`` units counted from 2000-01-01 in ``tz``."""
    local = to_local(date, tz)
    if unit in ("year", "quarter", "month"):
        months_per = {"year": 12, "quarter": 3, "month": 1}[unit] * bin_size
        months = (local.year - 2000) * 12 + local.month - 1
        start = months - months % months_per
        year, month = divmod(start, 12)
        return from_local(dt.datetime(2000 + year, month + 1, 1), tz)
    if unit == "week":
        reference = _REFERENCE + dt.timedelta(days=(start_of_week - _REFERENCE.weekday()) % 7)
        days = (local - reference).days
        weeks = days // 7
        return from_local(reference + dt.timedelta(weeks=weeks - weeks % bin_size), tz)
    size = _UNITS_MS[unit] * bin_size
    delta = local - _REFERENCE
    elapsed = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return from_local(_REFERENCE + dt.timedelta(milliseconds=elapsed - elapsed % size), tz)


@operator("$dateTrunc")
def _date_trunc(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$dateTrunc", ("date", "unit"), ("binSize", "timezone", "startOfWeek"))
    date_fn = compile_expr(args["date"], ctx.at("date")).fn
    unit_fn = compile_expr(args["unit"], ctx.at("unit")).fn
    bin_fn = _optional(args, "binSize", ctx)
    tz_fn = _optional(args, "timezone", ctx)
    week_fn = _optional(args, "startOfWeek", ctx)

    def run(doc: Any, v: Variables) -> Any:
        date = date_fn(doc, v)
        unit = _unit(ctx, "$dateTrunc", unit_fn, doc, v)
        tz = _zone(ctx, "$dateTrunc", tz_fn, doc, v)
        bin_size = bin_fn(doc, v) if bin_fn else 1
        if is_nullish(date) or unit is None or tz is None or is_nullish(bin_size):
            return None
        if not is_number(bin_size) or int(bin_size) != bin_size or bin_size < 1:
            raise ctx.runtime("$dateTrunc", f"binSize must be a positive integer, found {bin_size!r}")
        week = _start_of_week(ctx, "$dateTrunc", week_fn, doc, v)
        return date_trunc(_date(ctx, "$dateTrunc", date), unit, int(bin_size), tz, week)

    return Node(run)


def _offset_text(date: dt.datetime, tz: dt.tzinfo, colon: bool = False) -> str:
    offset = date.astimezone(tz).utcoffset() or dt.timedelta()
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{mins:02d}"


Piece = Callable[[dt.datetime, dt.datetime, dt.tzinfo], str]

_SPECIFIERS: dict[str, Piece] = {
    "d": lambda local, _d, _z: f"{local.day:02d}",
    "G": lambda local, _d, _z: f"{local.isocalendar()[0]:04d}",
    "H": lambda local, _d, _z: f"{local.hour:02d}",
    "j": lambda local, _d, _z: f"{local.timetuple().tm_yday:03d}",
    "L": lambda local, _d, _z: f"{local.microsecond // 1000:03d}",
    "m": lambda local, _d, _z: f"{local.month:02d}",
    "M": lambda local, _d, _z: f"{local.minute:02d}",
    "S": lambda local, _d, _z: f"{local.second:02d}",
    "u": lambda local, _d, _z: str(local.isoweekday()),
    "U": lambda local, _d, _z: local.strftime("%U"),
    "V": lambda local, _d, _z: f"{local.isocalendar()[1]:02d}",
    "w": lambda local, _d, _z: str(local.isoweekday() % 7 + 1),
    "Y": lambda local, _d, _z: f"{local.year:04d}",
    "z": lambda _l, date, tz: _offset_text(date, tz),
    "Z": lambda _l, date, tz: str(
        int((date.astimezone(tz).utcoffset() or dt.timedelta()).total_seconds() // 60)
    ),
    "b": lambda local, _d, _z: calendar.month_abbr[local.month],
    "B": lambda local, _d, _z: calendar.month_name[local.month],
    "%": lambda _l, _d, _z: "%",
}


@functools.lru_cache(maxsize=256)
def _compiled_format(fmt: str) -> tuple[Piece | str, ...]:
    """Split a format once into literal text and specifier functions."""
    pieces: list[Piece | str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt) and fmt[i + 1] in _SPECIFIERS:
            pieces.append(_SPECIFIERS[fmt[i + 1]])
            i += 2
        else:
            pieces.append(fmt[i])
            i += 1
    return tuple(pieces)


def format_date(date: dt.datetime, fmt: str, tz: dt.tzinfo) -> str:
    """Render with MongoDB's ``$dateToString`` format specifiers."""
    local = (
        to_local(date, tz)
        if tz is not UTC
        else date.replace(tzinfo=None)
        if date.tzinfo is UTC
        else to_local(date, tz)
    )
    return "".join(p if isinstance(p, str) else p(local, date, tz) for p in _compiled_format(fmt))


def check_format(fmt: str, ctx: Ctx, name: str) -> None:
    for match in re.finditer(r"%(.?)", fmt):
        if match.group(1) not in "dGHjLmMSuUVwYzZbB%" or not match.group(1):
            raise ctx.error(f"invalid format character `%{match.group(1)}` in {name} format")


@operator("$dateToString")
def _date_to_string(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$dateToString", ("date",), ("format", "timezone", "onNull"))
    date_fn = compile_expr(args["date"], ctx.at("date")).fn
    fmt_node = compile_expr(args.get("format", "%Y-%m-%dT%H:%M:%S.%LZ"), ctx.at("format"))
    if fmt_node.is_constant and isinstance(fmt_node.constant, str):
        check_format(fmt_node.constant, ctx.at("format"), "$dateToString")
    tz_fn = _optional(args, "timezone", ctx)
    on_null = _optional(args, "onNull", ctx)

    def run(doc: Any, v: Variables) -> Any:
        date = date_fn(doc, v)
        if is_nullish(date):
            return on_null(doc, v) if on_null else None
        tz = _zone(ctx, "$dateToString", tz_fn, doc, v)
        fmt = fmt_node.fn(doc, v)
        if tz is None or is_nullish(fmt):
            return None
        if not isinstance(fmt, str):
            raise ctx.runtime("$dateToString", f"format must be a string, found {describe(fmt)}")
        return format_date(_date(ctx, "$dateToString", date), fmt, tz)

    return Node(run)


_PARSE_PIECES = {
    "Y": r"(?P<Y>\d{4})",
    "m": r"(?P<m>\d{1,2})",
    "d": r"(?P<d>\d{1,2})",
    "H": r"(?P<H>\d{1,2})",
    "M": r"(?P<M>\d{1,2})",
    "S": r"(?P<S>\d{1,2})",
    "L": r"(?P<L>\d{1,3})",
    "j": r"(?P<j>\d{1,3})",
    "z": r"(?P<z>[+-]\d{2}:?\d{2})",
    "Z": r"(?P<Z>[+-]?\d{1,4})",
    "G": r"(?P<G>\d{4})",
    "V": r"(?P<V>\d{1,2})",
    "u": r"(?P<u>[1-7])",
    "%": "%",
}


@functools.lru_cache(maxsize=128)
def _format_regex(fmt: str) -> re.Pattern[str]:
    pattern = ""
    i = 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            piece = _PARSE_PIECES.get(fmt[i + 1])
            if piece is None:
                raise ValueError(f"invalid format character %{fmt[i + 1]}")
            pattern += piece
            i += 2
        else:
            pattern += re.escape(fmt[i])
            i += 1
    return re.compile(pattern)


def parse_with_format(text: str, fmt: str, tz: dt.tzinfo) -> dt.datetime:
    match = _format_regex(fmt).fullmatch(text)
    if match is None:
        raise ValueError(f"'{text}' does not match format '{fmt}'")
    parts = {k: v for k, v in match.groupdict().items() if v is not None}
    if "G" in parts:
        local = dt.datetime.fromisocalendar(int(parts["G"]), int(parts.get("V", 1)), int(parts.get("u", 1)))
    elif "j" in parts:
        local = dt.datetime(int(parts.get("Y", 1970)), 1, 1) + dt.timedelta(days=int(parts["j"]) - 1)
    else:
        local = dt.datetime(int(parts.get("Y", 1970)), int(parts.get("m", 1)), int(parts.get("d", 1)))
    local = local.replace(
        hour=int(parts.get("H", 0)),
        minute=int(parts.get("M", 0)),
        second=int(parts.get("S", 0)),
        microsecond=int(parts.get("L", "0").ljust(3, "0")) * 1000,
    )
    if "z" in parts:
        zone = parse_timezone(parts["z"])
        assert zone is not None
        tz = zone
    elif "Z" in parts:
        tz = dt.timezone(dt.timedelta(minutes=int(parts["Z"])))
    return from_local(local, tz)


_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2}|[+-]\d{2})?"
)


def parse_date_string(text: str, tz: dt.tzinfo) -> dt.datetime:
    """ISO-8601-like strings; an explicit offset wins over ``tz``."""
    match = _ISO.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"error parsing date string '{text}'")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    local = dt.datetime(
        int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
        int((fraction or "0")[:3].ljust(3, "0")) * 1000,
    )  # fmt: skip
    if offset:
        zone = UTC if offset == "Z" else parse_timezone(offset)
        assert zone is not None
        tz = zone
    return from_local(local, tz)


@operator("$dateFromString")
def _date_from_string(spec: Any, ctx: Ctx) -> Node:
    args = named_args(
        spec, ctx, "$dateFromString", ("dateString",), ("format", "timezone", "onError", "onNull")
    )
    text_fn = compile_expr(args["dateString"], ctx.at("dateString")).fn
    fmt_fn = _optional(args, "format", ctx)
    tz_fn = _optional(args, "timezone", ctx)
    on_error = _optional(args, "onError", ctx)
    on_null = _optional(args, "onNull", ctx)

    def run(doc: Any, v: Variables) -> Any:
        text = text_fn(doc, v)
        if is_nullish(text):
            return on_null(doc, v) if on_null else None
        try:
            tz = _zone(ctx, "$dateFromString", tz_fn, doc, v)
            if tz is None:
                return None
            if not isinstance(text, str):
                raise ctx.runtime(
                    "$dateFromString", f"requires dateString to be a string, found {describe(text)}"
                )
            fmt = fmt_fn(doc, v) if fmt_fn else None
            if is_nullish(fmt) and fmt_fn is not None:
                return None
            try:
                if isinstance(fmt, str):
                    return parse_with_format(text, fmt, tz)
                return parse_date_string(text, tz)
            except (ValueError, OverflowError) as exc:
                raise ctx.runtime("$dateFromString", str(exc)) from None
        except Exception:
            if on_error is not None:
                return on_error(doc, v)
            raise

    return Node(run)


@operator("$dateToParts")
def _date_to_parts(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$dateToParts", ("date",), ("timezone", "iso8601"))
    date_fn = compile_expr(args["date"], ctx.at("date")).fn
    tz_fn = _optional(args, "timezone", ctx)
    iso = bool(args.get("iso8601", False))

    def run(doc: Any, v: Variables) -> Any:
        date = date_fn(doc, v)
        tz = _zone(ctx, "$dateToParts", tz_fn, doc, v)
        if is_nullish(date) or tz is None:
            return None
        local = to_local(_date(ctx, "$dateToParts", date), tz)
        head: dict[str, Any]
        if iso:
            year, week, day = local.isocalendar()
            head = {"isoWeekYear": year, "isoWeek": week, "isoDayOfWeek": day}
        else:
            head = {"year": local.year, "month": local.month, "day": local.day}
        return head | {
            "hour": local.hour,
            "minute": local.minute,
            "second": local.second,
            "millisecond": local.microsecond // 1000,
        }

    return Node(run)
