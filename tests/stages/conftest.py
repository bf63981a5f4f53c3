"""Shared helpers for the stage engine tests: loading case files with dates and decimals."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

CASES = Path(__file__).parent / "cases"


def ejson(value: Any) -> Any:
    """Turn the case files' ``{$date: ...}``, ``{$numberDecimal: ...}``, ``{$float: ...}`` into values."""
    if isinstance(value, list):
        return [ejson(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            key, inner = next(iter(value.items()))
            if key == "$date":
                parsed = dt.datetime.fromisoformat(inner.replace("Z", "+00:00"))
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
            if key == "$numberDecimal":
                return Decimal(inner)
            if key == "$float":
                return float(inner)
        return {k: ejson(v) for k, v in value.items()}
    return value


def load(name: str) -> Any:
    return yaml.safe_load((CASES / name).read_text())
