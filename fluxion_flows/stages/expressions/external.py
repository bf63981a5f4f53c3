"""``$function`` (user code by import reference) and the not-yet-available look-ups.

A manifest can never make us ``eval`` text: ``$function.body`` must name an
importable callable as ``"package.module:function"``, it is resolved once at
load time, and only when the run's configuration enables functions
(``allow_functions=True``). ``$httpCall``, ``$sqlQuery``, ``$enrich`` and
``$agentCall`` are planned for a later release and fail clearly at load time.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from fluxion_flows.stages.expressions.core import Ctx, Node, Variables, compile_expr, named_args, operator

_REFERENCE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


def resolve_callable(reference: str, ctx: Ctx) -> Any:
    """Import ``"pkg.mod:attr"`` and return the attribute, or raise a StageError."""
    if not _REFERENCE.fullmatch(reference):
        raise ctx.error(
            f'$function.body must be a reference like "mypackage.module:function", got {reference!r}',
            hint="code strings are never evaluated",
        )
    module_name, _, attribute = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ctx.error(f"cannot import module `{module_name}` for $function: {exc}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ctx.error(f"module `{module_name}` has no attribute `{attribute}`")
        target = getattr(target, part)
    if not callable(target):
        raise ctx.error(f"`{reference}` is not callable")
    return target


@operator("$function")
def _function(spec: Any, ctx: Ctx) -> Node:
    if not ctx.allow_functions:
        raise ctx.error(
            "$function is disabled for this run",
            hint="enable it in the run configuration (allow_functions) if you trust the referenced code",
        )
    args = named_args(spec, ctx, "$function", ("body",), ("args", "lang"))
    if args.get("lang", "python") != "python":
        raise ctx.at("lang").error('$function.lang must be "python"', valid=["python"])
    if not isinstance(args["body"], str):
        raise ctx.at("body").error('$function.body must be a "module:function" reference string')
    function = resolve_callable(args["body"], ctx.at("body"))
    raw_args = args.get("args", [])
    if not isinstance(raw_args, list):
        raise ctx.at("args").error("$function.args must be an array of expressions")
    arg_fns = [compile_expr(a, ctx.at("args", i)).fn for i, a in enumerate(raw_args)]

    def run(doc: Any, v: Variables) -> Any:
        values = [fn(doc, v) for fn in arg_fns]
        try:
            return function(*values)
        except Exception as exc:
            raise ctx.runtime("$function", f"{args['body']} raised {type(exc).__name__}: {exc}") from exc

    return Node(run)


def _not_yet(name: str) -> None:
    @operator(name)
    def compile_not_yet(spec: Any, ctx: Ctx) -> Node:
        raise ctx.error(
            f"`{name}` is not available yet in fluxion-flows", hint="it is planned for a later release"
        )


for _name in ("$httpCall", "$sqlQuery", "$enrich", "$agentCall"):
    _not_yet(_name)
