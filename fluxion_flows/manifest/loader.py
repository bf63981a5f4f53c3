"""Reading manifests (YAML or JSON) into the model, with errors that point into the file.

Pydantic's validation errors are translated into :class:`ManifestError` with
the path as the user wrote it (union and discriminator markers removed), the
offending value, the valid choices and a "did you mean" for near misses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fluxion_flows.errors import ManifestError, PathPart, did_you_mean
from fluxion_flows.manifest import model as m

_MODEL_AT: dict[str, type[BaseModel]] = {
    "runtime": m.RuntimeConfig,
    "errorPolicy": m.ErrorPolicyConfig,
    "checkpoint": m.CheckpointConfig,
    "execution": m.StreamingExecution,
    "scope": m.ConnectionScope,
}


@dataclass(frozen=True)
class LoadedManifest:
    manifest: m.Manifest
    raw: dict[str, Any]
    file: str | None
    base_dir: Path


def read_document(path: str | Path, *, what: str = "manifest") -> Any:
    """Parse a YAML or JSON file (YAML's safe loader), reporting syntax errors with line and column."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{what} file not found", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read {what} file: {exc}", file=file) from None
    return parse_text(text, file=file, json_only=file.endswith(".json"))


def parse_text(text: str, *, file: str | None, json_only: bool = False) -> Any:
    if json_only:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(
                f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", file=file
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ManifestError(f"invalid YAML{where}: {exc.problem}", file=file) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"invalid YAML: {exc}", file=file) from None


def load_manifest(
    source: str | Path | Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    operation: str | None = None,
) -> LoadedManifest:
    """A validated manifest from a file path, a YAML/JSON string, or an already-parsed mapping."""
    file: str | None
    if isinstance(source, Mapping):
        raw: Any = dict(source)
        file, base_dir = None, Path.cwd()
    elif isinstance(source, str) and ("\n" in source or source.lstrip().startswith("{")):
        raw = parse_text(source, file=None)
        file, base_dir = None, Path.cwd()
    else:
        raw = read_document(source)
        file, base_dir = str(source), Path(source).resolve().parent
    if not isinstance(raw, dict):
        raise ManifestError("a manifest must be a map at the top level", file=file)
    if overrides:
        raw = apply_overrides(raw, overrides, operation, file=file)
    _check_near_miss_keys(raw, file)
    manifest = validate_model(m.Manifest, raw, file=file)
    return LoadedManifest(manifest, raw, file, base_dir)


def validate_model(
    model: type[BaseModel], raw: Any, *, file: str | None, prefix: Sequence[PathPart] = ()
) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise translate(exc, raw, file=file, prefix=prefix, model=model) from None


def translate(
    exc: ValidationError,
    raw: Any,
    *,
    file: str | None,
    prefix: Sequence[PathPart] = (),
    model: type[BaseModel] = m.Manifest,
) -> ManifestError:
    """The most useful pydantic error as a ManifestError anchored at the user's path.

    ``model`` is the model ``raw`` was validated against (it names the valid keys at the top level).
    """
    # Deepest first; at equal depth a missing key comes last, as it is often the result of a typo'd one.
    errors = sorted(exc.errors(), key=lambda e: (-_depth(raw, e["loc"]), e["type"] == "missing"))
    first = errors[0]
    relative = _real_path(raw, first["loc"])
    path = (*prefix, *relative)
    if first["type"] == "extra_forbidden":
        owner = model if len(relative) == 1 else _MODEL_AT.get(str(relative[-2]))
        if len(relative) == 3 and relative[0] == "pipelines":
            owner = m.PipelineDef
        key = str(relative[-1])
        valid = list(owner.model_fields) if owner else None
        error = ManifestError(f"unknown key `{key}`", file=file, path=path, found=key, valid=valid)
    else:
        error = _describe(first, path, raw, file)
    others = len({tuple(_real_path(raw, e["loc"])) for e in errors}) - 1
    if others > 0:
        error.hint = f"{error.hint + '; ' if error.hint else ''}{others} more problem(s) after this one"
        error.args = (error._render(),)
    return error


def _describe(error: Any, path: tuple[PathPart, ...], raw: Any, file: str | None) -> ManifestError:
    kind = error["type"]
    key = str(path[-1]) if path else ""
    if kind == "missing":
        return ManifestError(f"missing required key `{key}`", file=file, path=path)
    if kind == "union_tag_not_found":
        valid = ["streaming", *m.OTHER_EXECUTION_TYPES]
        return ManifestError(
            "missing required key `type` (the execution type)", file=file, path=(*path, "type"), valid=valid
        )
    if kind == "union_tag_invalid":
        tag = str(error.get("ctx", {}).get("tag", ""))
        valid = ["streaming", *m.OTHER_EXECUTION_TYPES]
        return ManifestError(
            f"unknown execution type `{tag}`", file=file, path=(*path, "type"), found=tag, valid=valid
        )
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        found = str(error.get("input"))
        return ManifestError(f"invalid value `{found}`", file=file, path=path, found=found, valid=expected)
    message = str(error["msg"]).removeprefix("Value error, ")
    found = error.get("input")
    shown = f" (found {_short(found)})" if isinstance(found, str | int | float | bool) else ""
    return ManifestError(f"{message}{shown}", file=file, path=path)


def _real_path(raw: Any, loc: Sequence[Any]) -> list[PathPart]:
    """Drop pydantic's union/discriminator markers: keep only loc parts that exist in the document.

    The one exception is the last part of a "missing" error, which names a key that is absent.
    """
    path: list[PathPart] = []
    node = raw
    for position, part in enumerate(loc):
        if _has(node, part):
            path.append(part)
            node = node[part]
        elif position == len(loc) - 1 and isinstance(node, Mapping) and isinstance(part, str):
            path.append(part)
    return path


def _has(node: Any, part: Any) -> bool:
    """Whether ``node[part]`` exists in a parsed document (a key of a map, or an index of a list)."""
    if isinstance(node, Mapping):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _depth(raw: Any, loc: Sequence[Any]) -> int:
    return len(_real_path(raw, loc))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_near_miss_keys(raw: dict[str, Any], file: str | None) -> None:
    """Root and operation maps allow Fluxion's other keys, but a near-miss of ours is surely a typo."""
    _near_miss(raw, m.KNOWN_ROOT_KEYS, (), file)
    for section in ("operationDefs", "operations"):
        entries = raw.get(section)
        for name, op in entries.items() if isinstance(entries, dict) else ():
            if isinstance(op, dict) and "$ref" not in op:
                _near_miss(op, m.KNOWN_OPERATION_KEYS, (section, name), file)


def _near_miss(
    node: dict[str, Any], known: Sequence[str], path: tuple[PathPart, ...], file: str | None
) -> None:
    for key in node:
        if key not in known and isinstance(key, str) and did_you_mean(key, known):
            raise ManifestError(f"unknown key `{key}`", file=file, path=(*path, key), found=key, valid=known)


# ------------------------------------------------------------------ overrides
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(text: str) -> list[PathPart]:
    parts: list[PathPart] = []
    for name, index in _SEGMENT.findall(text):
        parts.append(int(index) if index else name)
    if not parts:
        raise ManifestError(f"empty override path `{text}`")
    return parts


def parse_override(assignment: str) -> tuple[str, Any]:
    """``path=value`` from the command line; the value is read as YAML (numbers, booleans, lists).

    A value that is not valid YAML (``{half``) is taken as the plain string the user typed.
    """
    path, sep, value = assignment.partition("=")
    if not sep or not path.strip():
        raise ManifestError(f"expected path=value, found `{assignment}`")
    if not value.strip():
        return path.strip(), ""
    try:
        return path.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return path.strip(), value


def apply_overrides(
    raw: dict[str, Any], overrides: Mapping[str, Any], operation: str | None, *, file: str | None
) -> dict[str, Any]:
    """Set values by path. Paths not starting at a top-level key are relative to the operation's execution."""
    import copy

    result = copy.deepcopy(raw)
    for text, value in overrides.items():
        parts = parse_path(text)
        if parts[0] not in m.KNOWN_ROOT_KEYS:
            name = operation or _only_operation(result, file)
            parts = ["operationDefs", name, "execution", *parts]
        _set(result, parts, value, text, file)
    return result


def _only_operation(raw: dict[str, Any], file: str | None) -> str:
    defs = raw.get("operationDefs") or {}
    streaming = [
        k
        for k, v in defs.items()
        if isinstance(v, dict) and (v.get("execution") or {}).get("type") == "streaming"
    ]
    if len(streaming) != 1:
        raise ManifestError(
            "relative override paths need --operation when the manifest has several streaming operations",
            file=file,
            valid=streaming,
        )
    return str(streaming[0])


def _set(node: Any, parts: list[PathPart], value: Any, text: str, file: str | None) -> None:
    for index, part in enumerate(parts[:-1]):
        following = parts[index + 1]
        if isinstance(node, dict):
            if part == "errorPolicy" and isinstance(node.get(part), str):
                node[part] = {"policy": node[part]}  # the shorthand, so errorPolicy.x=... can be set
            node = node.setdefault(part, [] if isinstance(following, int) else {})
        elif _has(node, part):
            node = node[part]
        else:
            raise ManifestError(
                f"override `{text}` does not match the manifest's structure",
                file=file,
                path=parts[: index + 1],
            )
    last = parts[-1]
    if isinstance(node, dict) or _has(node, last):
        node[last] = value
    else:
        raise ManifestError(
            f"override `{text}` does not match the manifest's structure", file=file, path=parts
        )
