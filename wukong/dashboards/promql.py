"""PromQL text, written for the dashboards and read back by their checks.

The dashboards build their expressions with `rate` and `quantiles` so that
every panel aggregates the same way (`sum by`, `$__rate_interval`, never a fixed
range). The reading side is deliberately small, not a PromQL parser: it finds
the series names and grouping labels of the expressions this project writes
(dashboards and alert rules), which is what tests check against the metric
contract, substitutes Grafana variables the way Grafana does before a query
is sent to Prometheus, and turns a variable's `label_values(...)` into PromQL.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Identifiers that are PromQL keywords, never series names.
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset"}
_KEYWORDS |= {"group_left", "group_right", "inf", "nan"}
# Label lists: `by (...)`, `without (...)`, `on (...)`, `group_left (...)`, ...
_GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
# Grafana's variable query `label_values(label)` or `label_values(selector, label)`.
_LABEL_VALUES = re.compile(
    r"\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*"
)


@dataclass(frozen=True, kw_only=True)
class Query:
    """One PromQL expression of a panel and how its series are named."""

    expr: str
    legend: str  # Grafana's legend format, e.g. "p99 {{controller}}"


def rate(metric: str, *, selector: str, by: str) -> str:
    """Per-second rate of a counter, summed by the `by` labels."""
    return f"sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval]))"


def quantile(q: float, metric: str, *, selector: str, by: str) -> str:
    """The `q` quantile of a histogram over the `by` labels."""
    return (
        f"histogram_quantile({q}, sum by ({by}, le) "
        f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))"
    )


def quantiles(
    metric: str, *, selector: str, by: str, legend: str, qs: Sequence[float] = (0.5, 0.99)
) -> list[Query]:
    """One query per quantile, legends prefixed `p50 `, `p99 `, ..."""
    return [
        Query(
            expr=quantile(q, metric, selector=selector, by=by), legend=f"p{round(q * 100)} {legend}"
        )
        for q in qs
    ]


def metric_names(expr: str) -> set[str]:
    """Identifiers in `expr` that name series: not functions, keywords or label names."""
    stripped = re.sub(r'"[^"]*"', "", expr)  # string literals
    stripped = re.sub(r"\{[^}]*\}", "", stripped)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # range durations
    stripped = re.sub(_GROUPING, "", stripped)  # label lists
    identifiers = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", stripped)
    return {name for name in identifiers if name.lower() not in _KEYWORDS}


def grouping_labels(expr: str) -> set[str]:
    """Labels named in the aggregation and vector-matching clauses of `expr`."""
    clauses = re.findall(_GROUPING, expr)
    return {label.strip() for clause in clauses for label in clause.split(",") if label.strip()}


def substitute_variables(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with Grafana variables (`$name`, `${name}`) replaced, as Grafana would."""
    # Longest names first, so $__rate_interval is not read as $__rate + "_interval".
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return expr


def label_values_expr(query: str) -> str:
    """A variable's `label_values(...)` query as PromQL: the series of
    `group by (label) (selector)` carry exactly the values Grafana would list."""
    matched = _LABEL_VALUES.fullmatch(query)
    if matched is None:
        raise ValueError(f"not a label_values(...) query: {query}")
    label = matched["label"]
    selector = matched["selector"] or f'{{{label}!=""}}'
    return f"group by ({label}) ({selector})"
