"""Aggregation expression operators; importing this package registers all of them."""

from fluxion_flows.stages.expressions import (  # noqa: F401 - importing registers the operators
    arithmetic,
    arrays,
    conversion,
    dates,
    external,
    logic,
    objects,
    strings,
)
from fluxion_flows.stages.expressions.core import (
    OPERATORS,
    Ctx,
    Fn,
    Node,
    Variables,
    compile_expr,
)

__all__ = ["OPERATORS", "Ctx", "Fn", "Node", "Variables", "compile_expr"]
