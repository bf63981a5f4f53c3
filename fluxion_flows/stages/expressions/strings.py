"""String operators, with MongoDB's code-point versus byte distinction.

``*Bytes`` operators count UTF-8 bytes (``$strLenBytes: "é"`` is 2) and fail
when an index would split a character; ``*CP`` operators count Unicode code
points, which is what Python ``str`` indexes. ``$substr`` is ``$substrBytes``.
"""

from __future__ import annotations

import re
from typing import Any

from fluxion_flows.stages.expressions.conversion import double_to_string
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
from fluxion_flows.stages.values import MISSING, is_nullish, is_number

# MongoDB's default $trim characters: whitespace plus the null character.
_WHITESPACE = (
    "\u0000\u0020\u0009\u000a\u000b\u000c\u000d\u00a0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)


def _text(ctx: Ctx, name: str, value: Any, null_as: Any = "") -> Any:
    """Coerce an operand the way MongoDB's string operators do (null -> ``null_as``)."""
    if value is None or value is MISSING:
        return null_as
    if isinstance(value, str):
        return value
    if is_number(value) and not isinstance(value, bool):
        return double_to_string(value) if isinstance(value, float) else str(value)
    raise ctx.runtime(name, f"requires a string argument, found {describe(value)}")


@operator("$concat")
def _concat(spec: Any, ctx: Ctx) -> Node:
    fns = [n.fn for n in compile_args(spec, ctx, "$concat")]

    def run(doc: Any, v: Variables) -> Any:
        parts = []
        for fn in fns:
            value = fn(doc, v)
            if value is None or value is MISSING:
                return None
            if not isinstance(value, str):
                raise ctx.runtime("$concat", f"only supports strings, not {describe(value)}")
            parts.append(value)
        return "".join(parts)

    return Node(run)


def _case(name: str, upper: bool) -> None:
    @operator(name)
    def compile_case(spec: Any, ctx: Ctx) -> Node:
        (arg,) = (n.fn for n in compile_args(spec, ctx, name, 1))

        def run(doc: Any, v: Variables) -> str:
            text = _text(ctx, name, arg(doc, v))
            # MongoDB changes the case of ASCII letters only.
            return (
                "".join((c.upper() if upper else c.lower()) if c.isascii() else c for c in text)
                if not text.isascii()
                else (text.upper() if upper else text.lower())
            )

        return Node(run)


_case("$toUpper", upper=True)
_case("$toLower", upper=False)


def _trimmer(name: str, left: bool, right: bool) -> None:
    @operator(name)
    def compile_trim(spec: Any, ctx: Ctx) -> Node:
        args = named_args(spec, ctx, name, ("input",), ("chars",))
        input_fn = compile_expr(args["input"], ctx.at("input")).fn
        chars_fn = compile_expr(args["chars"], ctx.at("chars")).fn if "chars" in args else None

        def run(doc: Any, v: Variables) -> Any:
            text = input_fn(doc, v)
            if is_nullish(text):
                return None
            if not isinstance(text, str):
                raise ctx.runtime(name, f"requires its input to be a string, got {describe(text)}")
            chars = _WHITESPACE
            if chars_fn is not None:
                chars = chars_fn(doc, v)
                if is_nullish(chars):
                    return None
                if not isinstance(chars, str):
                    raise ctx.runtime(name, f"requires 'chars' to be a string, got {describe(chars)}")
            if left and right:
                return text.strip(chars)
            return text.lstrip(chars) if left else text.rstrip(chars)

        return Node(run)


_trimmer("$trim", True, True)
_trimmer("$ltrim", True, False)
_trimmer("$rtrim", False, True)


@operator("$split")
def _split(spec: Any, ctx: Ctx) -> Node:
    text_fn, sep_fn = (n.fn for n in compile_args(spec, ctx, "$split", 2))

    def run(doc: Any, v: Variables) -> Any:
        text, sep = text_fn(doc, v), sep_fn(doc, v)
        if is_nullish(text):
            return None
        if not isinstance(text, str):
            raise ctx.runtime(
                "$split",
                f"requires a string as the first argument, found: {describe(text)}",
            )
        if not isinstance(sep, str):
            raise ctx.runtime("$split", f"requires a string delimiter, found: {describe(sep)}")
        if not sep:
            raise ctx.runtime("$split", "requires a non-empty separator")
        return text.split(sep)

    return Node(run)


@operator("$strcasecmp")
def _strcasecmp(spec: Any, ctx: Ctx) -> Node:
    left, right = (n.fn for n in compile_args(spec, ctx, "$strcasecmp", 2))

    def run(doc: Any, v: Variables) -> int:
        a = _text(ctx, "$strcasecmp", left(doc, v)).upper()
        b = _text(ctx, "$strcasecmp", right(doc, v)).upper()
        a_bytes, b_bytes = a.encode(), b.encode()
        return -1 if a_bytes < b_bytes else (1 if a_bytes > b_bytes else 0)

    return Node(run)


def _index(ctx: Ctx, name: str, value: Any, what: str) -> int:
    if not is_number(value) or int(value) != value:
        raise ctx.runtime(name, f"{what} must be a numeric integer, found {describe(value)}")
    return int(value)


def _substr_bytes(name: str) -> None:
    @operator(name)
    def compile_substr(spec: Any, ctx: Ctx) -> Node:
        text_fn, start_fn, length_fn = (n.fn for n in compile_args(spec, ctx, name, 3))

        def run(doc: Any, v: Variables) -> str:
            data = _text(ctx, name, text_fn(doc, v)).encode()
            start = _index(ctx, name, start_fn(doc, v), "starting index")
            length = _index(ctx, name, length_fn(doc, v), "length")
            if start < 0:
                raise ctx.runtime(name, "starting index must be non-negative")
            if start >= len(data):
                return ""
            end = len(data) if length < 0 else min(start + length, len(data))
            for edge in (start, end):
                if edge < len(data) and data[edge] & 0xC0 == 0x80:
                    raise ctx.runtime(
                        name, "invalid range, starting or ending index is a UTF-8 continuation byte"
                    )
            return str(data[start:end].decode())

        return Node(run)


_substr_bytes("$substrBytes")
_substr_bytes("$substr")


@operator("$substrCP")
def _substr_cp(spec: Any, ctx: Ctx) -> Node:
    text_fn, start_fn, length_fn = (n.fn for n in compile_args(spec, ctx, "$substrCP", 3))

    def run(doc: Any, v: Variables) -> str:
        text = _text(ctx, "$substrCP", text_fn(doc, v))
        start = _index(ctx, "$substrCP", start_fn(doc, v), "starting index")
        length = _index(ctx, "$substrCP", length_fn(doc, v), "length")
        if start < 0 or length < 0:
            raise ctx.runtime("$substrCP", "starting index and length must be non-negative")
        return str(text[start : start + length])

    return Node(run)


def _strlen(name: str, measure: Any) -> None:
    @operator(name)
    def compile_len(spec: Any, ctx: Ctx) -> Node:
        (arg,) = (n.fn for n in compile_args(spec, ctx, name, 1))

        def run(doc: Any, v: Variables) -> int:
            value = arg(doc, v)
            if not isinstance(value, str):
                raise ctx.runtime(name, f"only supports strings, not {describe(value)}")
            return int(measure(value))

        return Node(run)


_strlen("$strLenBytes", lambda s: len(s.encode()))
_strlen("$strLenCP", len)


def _index_of(name: str, in_bytes: bool) -> None:
    @operator(name)
    def compile_index_of(spec: Any, ctx: Ctx) -> Node:
        fns = [n.fn for n in compile_args(spec, ctx, name, (2, 4))]

        def run(doc: Any, v: Variables) -> Any:
            values = [fn(doc, v) for fn in fns]
            text, needle = values[0], values[1]
            if is_nullish(text):
                return None
            if not isinstance(text, str):
                raise ctx.runtime(name, f"requires a string as the first argument, found: {describe(text)}")
            if not isinstance(needle, str):
                raise ctx.runtime(
                    name, f"requires a string as the second argument, found: {describe(needle)}"
                )
            haystack: Any = text.encode() if in_bytes else text
            target: Any = needle.encode() if in_bytes else needle
            start = _index(ctx, name, values[2], "starting index") if len(values) > 2 else 0
            end = _index(ctx, name, values[3], "ending index") if len(values) > 3 else len(haystack)
            if start < 0 or end < 0:
                raise ctx.runtime(name, "indexes must be non-negative")
            if start > len(haystack) or start > end:
                return -1
            return int(haystack.find(target, start, end))

        return Node(run)


_index_of("$indexOfBytes", in_bytes=True)
_index_of("$indexOfCP", in_bytes=False)


def regex_flags(options: str, ctx: Ctx, name: str) -> int:
    flags = 0
    for letter in options:
        if letter not in "imsx":
            raise ctx.runtime(name, f"invalid flag in regex options: {letter}")
        flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[letter]
    return flags


@operator("$regexMatch")
def _regex_match(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$regexMatch", ("input", "regex"), ("options",))
    input_node = compile_expr(args["input"], ctx.at("input"))
    regex_node = compile_expr(args["regex"], ctx.at("regex"))
    options_node = compile_expr(args.get("options", ""), ctx.at("options"))
    cache: dict[tuple[str, int], re.Pattern[str]] = {}

    def pattern(doc: Any, v: Variables) -> re.Pattern[str] | None:
        regex, options = regex_node.fn(doc, v), options_node.fn(doc, v)
        if is_nullish(regex):
            return None
        if isinstance(regex, re.Pattern):
            return regex
        if not isinstance(regex, str):
            raise ctx.runtime(
                "$regexMatch", f"needs 'regex' to be of type string or regex, found {describe(regex)}"
            )
        flags = regex_flags(options if isinstance(options, str) else "", ctx, "$regexMatch")
        key = (regex, flags)
        if key not in cache:
            try:
                cache[key] = re.compile(regex, flags)
            except re.error as exc:
                raise ctx.runtime("$regexMatch", f"invalid regular expression: {exc}") from None
        return cache[key]

    def run(doc: Any, v: Variables) -> bool:
        text = input_node.fn(doc, v)
        compiled = pattern(doc, v)
        if is_nullish(text) or compiled is None:
            return False
        if not isinstance(text, str):
            raise ctx.runtime("$regexMatch", f"needs 'input' to be of type string, found {describe(text)}")
        return compiled.search(text) is not None

    return Node(run)
