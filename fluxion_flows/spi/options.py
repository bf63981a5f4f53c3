"""Typed connector options: the Python form of Fluxion's ``ConnectorOption``.

A provider declares its options once; the registry validates a block's raw
values against them (types coerced, defaults applied, unknown names rejected
unless the provider accepts pass-through properties) before ``create`` runs,
so connectors only ever see clean, typed values.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fluxion_flows.errors import OptionError, PathPart
from fluxion_flows.spi.secret import Secret


class OptionType(enum.Enum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DURATION = "duration"
    ENUM = "enum"
    LIST = "list"
    MAP = "map"
    SECRET = "secret"
    ANY = "any"


_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
_UNIT_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<u>ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds from an ISO-8601 duration (``PT0.5S``), ``500ms``/``2s``/``1m``, or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        iso = _ISO_DURATION.match(text)
        if iso and text.upper() not in ("P", "PT"):
            parts = {k: float(v) if v else 0.0 for k, v in iso.groupdict().items()}
            return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
        unit = _UNIT_DURATION.match(text)
        if unit:
            return float(unit["n"]) * _UNIT_SECONDS[unit["u"]]
        try:
            return parse_duration(float(text))
        except ValueError:
            pass
    raise ValueError("expected an ISO-8601 duration like PT0.5S, or a number of seconds")


@dataclass(frozen=True)
class ConnectorOption:
    """One option a provider accepts."""

    name: str
    type: OptionType = OptionType.STRING
    required: bool = False
    default: Any = None
    description: str = ""
    choices: Sequence[str] = ()
    secret: bool = False
    aliases: Sequence[str] = ()

    @property
    def is_secret(self) -> bool:
        return self.secret or self.type is OptionType.SECRET

    def coerce(self, value: Any) -> Any:
        """The value converted to this option's type; raises ValueError saying what was expected."""
        coerce = _COERCERS[self.type]
        if isinstance(value, Secret) and self.type not in (
            OptionType.STRING,
            OptionType.SECRET,
            OptionType.ANY,
        ):
            try:
                return coerce(self, value.reveal())
            except ValueError:
                raise ValueError(f"expected {self.describe_type()} (the value came from a secret)") from None
        result = coerce(self, value)
        if self.secret and not isinstance(result, Secret) and isinstance(result, str):
            return Secret(result)
        return result

    def describe_type(self) -> str:
        if self.type is OptionType.ENUM:
            return "one of " + " | ".join(self.choices)
        return str(self.type.value)


def _string(option: ConnectorOption, value: Any) -> Any:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, found {type_name(value)}")


def to_int(value: Any) -> int:
    """An integer from YAML/JSON/env text: ints, integral floats and numeric strings; no booleans."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, found a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an integer, found {type_name(value)} {value!r}")


def _int(option: ConnectorOption, value: Any) -> int:
    return to_int(value)


def _float(option: ConnectorOption, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, found a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, found {type_name(value)} {value!r}")


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def to_bool(value: Any) -> bool:
    """A boolean from YAML/JSON/env text: true/false, yes/no, on/off, 1/0 (strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, found {type_name(value)} {value!r}")


def _bool(option: ConnectorOption, value: Any) -> bool:
    return to_bool(value)


def _duration(option: ConnectorOption, value: Any) -> float:
    return parse_duration(value)


def _enum(option: ConnectorOption, value: Any) -> str:
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value)
        for choice in option.choices:
            if choice == text or choice.lower() == text.lower():
                return choice
    raise ValueError(f"expected one of {', '.join(option.choices)}, found {value!r}")


def _list(option: ConnectorOption, value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    raise ValueError(f"expected a list, found {type_name(value)}")


def _map(option: ConnectorOption, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise ValueError(f"expected a map, found {type_name(value)}")


def _secret(option: ConnectorOption, value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret(value)
    raise ValueError(f"expected a secret string, found {type_name(value)}")


def _any(option: ConnectorOption, value: Any) -> Any:
    return value


_COERCERS: dict[OptionType, Callable[[ConnectorOption, Any], Any]] = {
    OptionType.STRING: _string,
    OptionType.INT: _int,
    OptionType.FLOAT: _float,
    OptionType.BOOL: _bool,
    OptionType.DURATION: _duration,
    OptionType.ENUM: _enum,
    OptionType.LIST: _list,
    OptionType.MAP: _map,
    OptionType.SECRET: _secret,
    OptionType.ANY: _any,
}


def type_name(value: Any) -> str:
    """A user-facing name for a value's JSON type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "map"
    return type(value).__name__


@dataclass(frozen=True)
class OptionSchema:
    """All options of one provider, plus its pass-through rule for client properties."""

    options: Sequence[ConnectorOption] = ()
    pass_through: re.Pattern[str] | None = None
    pass_through_help: str = ""
    by_name: dict[str, ConnectorOption] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table: dict[str, ConnectorOption] = {}
        for option in self.options:
            table[option.name] = option
            for alias in option.aliases:
                table[alias] = option
        object.__setattr__(self, "by_name", table)

    def accepts_pass_through(self, name: str) -> bool:
        return (
            self.pass_through is not None
            and isinstance(name, str)
            and bool(self.pass_through.fullmatch(name))
        )

    def validate(
        self, raw: Mapping[str, Any], *, file: str | None = None, path: Sequence[PathPart] = ()
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Typed option values with defaults applied, and the pass-through properties kept aside."""
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        names = [o.name for o in self.options]
        for key, value in raw.items():
            option = self.by_name.get(key)
            if option is None:
                if self.accepts_pass_through(key):
                    extra[key] = value
                    continue
                raise OptionError(
                    f"unknown option `{key}`",
                    file=file,
                    path=(*path, key),
                    found=str(key),  # YAML allows non-string keys (`0: x`)
                    valid=names,
                    hint=self.pass_through_help or None,
                )
            if value is None:
                continue
            try:
                values[option.name] = option.coerce(value)
            except ValueError as exc:
                reason = "expected a secret string" if option.is_secret else str(exc)
                raise OptionError(
                    f"invalid value for option `{option.name}`: {reason}",
                    file=file,
                    path=(*path, key),
                ) from None
        for option in self.options:
            if option.name in values:
                continue
            if option.required:
                raise OptionError(
                    f"missing required option `{option.name}` ({option.describe_type()})",
                    file=file,
                    path=(*path, option.name),
                    hint=option.description or None,
                )
            if option.default is not None:
                values[option.name] = option.coerce(option.default)
        return values, extra
