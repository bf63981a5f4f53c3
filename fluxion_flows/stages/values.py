"""The BSON value model on plain Python values: types, ordering, equality.

Documents are plain dicts, so BSON types map onto Python types: ``None`` is
null, ``bool`` is boolean (checked before ``int``, since ``bool`` subclasses
``int``), ``int`` is int/long, ``float`` is double, ``Decimal`` is decimal,
``str`` is string, ``dict`` is object, ``list``/``tuple`` is array, ``bytes``
is binData and an aware ``datetime`` is date. A field that is absent is the
sentinel :data:`MISSING`, which is *not* null: MongoDB distinguishes the two
(``$ifNull`` treats both as null, ``$type`` says "missing", ``$set`` omits it).

Comparisons follow MongoDB's cross-type order, so sorting and ``$gt`` never
raise on mixed types: MinKey < null < numbers < strings < objects < arrays
< binData < ObjectId < boolean < date < timestamp < regex < MaxKey.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from decimal import Decimal
from typing import Any, Final


class _Missing:
    """The value of an absent field; falsy, and distinct from ``None`` (null)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()
"""Sentinel for a field that does not exist."""

NUMBER_TYPES: Final = (int, float, Decimal)
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
UTC: Final = dt.UTC
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=UTC)

# Canonical order rank of each BSON type class (equal rank = comparable).
_RANK_MINKEY = 0
_RANK_MISSING = 1
_RANK_NULL = 2
_RANK_NUMBER = 3
_RANK_STRING = 4
_RANK_OBJECT = 5
_RANK_ARRAY = 6
_RANK_BINARY = 7
_RANK_OBJECTID = 8
_RANK_BOOL = 9
_RANK_DATE = 10
_RANK_TIMESTAMP = 11
_RANK_REGEX = 12
_RANK_MAXKEY = 13


def is_number(value: Any) -> bool:
    """True for int, float and Decimal, but not bool."""
    cls = value.__class__
    return cls is int or cls is float or (cls is not bool and isinstance(value, NUMBER_TYPES))


def is_nullish(value: Any) -> bool:
    """null or missing: what ``$ifNull`` and most operators treat as "no value"."""
    return value is None or value is MISSING


def type_name(value: Any) -> str:
    """The ``$type`` alias of a value ("missing" for an absent field)."""
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    cls = value.__class__
    if cls is bool:
        return "bool"
    if cls is int or (isinstance(value, int) and cls.__name__ != "Int64"):
        return "int" if INT32_MIN <= value <= INT32_MAX else "long"
    if cls.__name__ == "Int64":
        return "long"
    if cls is float:
        return "double"
    if isinstance(value, Decimal) or cls.__name__ == "Decimal128":
        return "decimal"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, (bytes, bytearray)) or cls.__name__ == "Binary":
        return "binData"
    if isinstance(value, dt.datetime):
        return "date"
    if cls.__name__ == "ObjectId":
        return "objectId"
    if isinstance(value, re.Pattern) or cls.__name__ == "Regex":
        return "regex"
    if cls.__name__ == "Timestamp":
        return "timestamp"
    if cls.__name__ == "MinKey":
        return "minKey"
    if cls.__name__ == "MaxKey":
        return "maxKey"
    return "object"


TYPE_CODES: Final[dict[str, int]] = {
    "double": 1,
    "string": 2,
    "object": 3,
    "array": 4,
    "binData": 5,
    "undefined": 6,
    "objectId": 7,
    "bool": 8,
    "date": 9,
    "null": 10,
    "regex": 11,
    "dbPointer": 12,
    "javascript": 13,
    "symbol": 14,
    "int": 16,
    "timestamp": 17,
    "long": 18,
    "decimal": 19,
    "minKey": -1,
    "maxKey": 127,
}

_RANK_BY_TYPE: Final[dict[str, int]] = {
    "minKey": _RANK_MINKEY,
    "missing": _RANK_MISSING,
    "null": _RANK_NULL,
    "int": _RANK_NUMBER,
    "long": _RANK_NUMBER,
    "double": _RANK_NUMBER,
    "decimal": _RANK_NUMBER,
    "string": _RANK_STRING,
    "object": _RANK_OBJECT,
    "array": _RANK_ARRAY,
    "binData": _RANK_BINARY,
    "objectId": _RANK_OBJECTID,
    "bool": _RANK_BOOL,
    "date": _RANK_DATE,
    "timestamp": _RANK_TIMESTAMP,
    "regex": _RANK_REGEX,
    "maxKey": _RANK_MAXKEY,
}


def type_rank(value: Any) -> int:
    """Position of the value's type class in MongoDB's cross-type order."""
    cls = value.__class__
    if cls is str:
        return _RANK_STRING
    if cls is int or cls is float:
        return _RANK_NUMBER
    return _RANK_BY_TYPE[type_name(value)]


def _as_float_or_decimal(value: Any) -> Any:
    if value.__class__.__name__ == "Decimal128":
        return value.to_decimal()
    return value


def _compare_numbers(a: Any, b: Any) -> int:
    a = _as_float_or_decimal(a)
    b = _as_float_or_decimal(b)
    a_nan = (isinstance(a, float) and math.isnan(a)) or (isinstance(a, Decimal) and a.is_nan())
    b_nan = (isinstance(b, float) and math.isnan(b)) or (isinstance(b, Decimal) and b.is_nan())
    if a_nan or b_nan:  # NaN sorts below every other number and equals itself
        return 0 if a_nan and b_nan else (-1 if a_nan else 1)
    if isinstance(a, Decimal) and isinstance(b, float) and math.isinf(b):
        return -1 if b > 0 else 1
    if isinstance(b, Decimal) and isinstance(a, float) and math.isinf(a):
        return 1 if a > 0 else -1
    if isinstance(a, Decimal) != isinstance(b, Decimal):
        a, b = Decimal(a), Decimal(b)
    return -1 if a < b else (1 if a > b else 0)


def _compare_same_rank(rank: int, a: Any, b: Any) -> int:
    if rank == _RANK_NUMBER:
        return _compare_numbers(a, b)
    if rank in (_RANK_STRING, _RANK_OBJECTID, _RANK_BINARY):
        a_key = a if rank == _RANK_STRING else _bytes_key(a)
        b_key = b if rank == _RANK_STRING else _bytes_key(b)
        return -1 if a_key < b_key else (1 if a_key > b_key else 0)
    if rank == _RANK_OBJECT:
        return _compare_objects(a, b)
    if rank == _RANK_ARRAY:
        return _compare_arrays(a, b)
    if rank in (_RANK_BOOL, _RANK_DATE):
        return -1 if a < b else (1 if a > b else 0)
    if rank == _RANK_TIMESTAMP:
        return -1 if (a.time, a.inc) < (b.time, b.inc) else (1 if (a.time, a.inc) > (b.time, b.inc) else 0)
    if rank == _RANK_REGEX:
        ka, kb = _regex_key(a), _regex_key(b)
        return -1 if ka < kb else (1 if ka > kb else 0)
    return 0  # null, missing, minKey, maxKey: all equal within their class


def _bytes_key(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    binary = getattr(value, "binary", None)
    return binary if isinstance(binary, bytes) else str(value).encode()


def _regex_key(value: Any) -> tuple[str, str]:
    if isinstance(value, re.Pattern):
        return (value.pattern, str(value.flags))
    return (str(getattr(value, "pattern", value)), str(getattr(value, "flags", "")))


def _compare_objects(a: dict[str, Any], b: dict[str, Any]) -> int:
    """Objects compare field by field, in order: type of value, name, then value."""
    for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=False):
        ra, rb = type_rank(va), type_rank(vb)
        if ra != rb:
            return -1 if ra < rb else 1
        if ka != kb:
            return -1 if ka < kb else 1
        c = compare(va, vb)
        if c:
            return c
    return -1 if len(a) < len(b) else (1 if len(a) > len(b) else 0)


def _compare_arrays(a: list[Any], b: list[Any]) -> int:
    for va, vb in zip(a, b, strict=False):
        c = compare(va, vb)
        if c:
            return c
    return -1 if len(a) < len(b) else (1 if len(a) > len(b) else 0)


def compare(a: Any, b: Any) -> int:
    """Three-way comparison in MongoDB's order (-1, 0, 1).

    In expressions a missing field sorts just below null (``{$eq: ["$nope", null]}``
    is false); sorts and group keys turn missing into null before comparing.
    """
    ca, cb = a.__class__, b.__class__
    if ca is cb and (ca is str or ca is int or ca is float):
        if ca is float and (a != a or b != b):
            return _compare_numbers(a, b)
        return -1 if a < b else (1 if a > b else 0)
    ra, rb = type_rank(a), type_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    return _compare_same_rank(ra, a, b)


def equal(a: Any, b: Any) -> bool:
    """MongoDB equality (1 == 1.0, objects ordered, missing equal to null in expressions)."""
    ca = a.__class__
    if ca is b.__class__ and (ca is str or ca is int):
        return bool(a == b)
    return compare(a, b) == 0


sort_key = functools.cmp_to_key(compare)
"""Key function sorting values in MongoDB order."""


def hashable(value: Any) -> Any:
    """A hashable key equal for values MongoDB groups together (1 and 1.0; key order matters)."""
    cls = value.__class__
    if cls is str:
        return value
    if value is None or value is MISSING:
        return None
    if cls is bool:
        return ("bool", value)
    if cls is int or cls is float:
        return value if value == value else ("nan",)
    if isinstance(value, Decimal):
        return ("nan",) if value.is_nan() else (float(value) if value == float(value) else value)
    if isinstance(value, dict):
        return ("obj", tuple((k, hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("arr", tuple(hashable(v) for v in value))
    if isinstance(value, dt.datetime):
        return ("date", value)
    if isinstance(value, (bytes, bytearray)):
        return ("bin", bytes(value))
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return (cls.__name__, value)


def to_array_friendly(value: Any) -> Any:
    """Missing becomes null where a value must exist (inside arrays and output documents)."""
    return None if value is MISSING else value


def is_truthy(value: Any) -> bool:
    """Aggregation truthiness: false, null, missing, 0 are false; everything else (even [] and "") true."""
    if value is None or value is MISSING or value is False:
        return False
    if is_number(value):
        return bool(value != 0)
    return True
