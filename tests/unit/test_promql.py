"""Reading PromQL back: the series names and grouping labels the contract checks use.

Dashboards and alert rules are checked against the metric contract by the names
`metric_names` finds, so it must find every series and nothing else: not
functions, keywords, label names, string literals or ranges.
"""

import pytest

from wukong.dashboards.promql import (
    grouping_labels,
    label_values_expr,
    metric_names,
    quantile,
    rate,
    substitute_variables,
)


def test_finds_series_and_ignores_functions_keywords_and_labels() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{x="y"}[5m]))) > 1 and b'
    assert metric_names(expr) == {"a_bucket", "b"}
    assert grouping_labels(expr) == {"le", "job"}


def test_reads_the_expressions_the_dashboards_build() -> None:
    selector = 'namespace=~"$namespace", controller=~"$controller"'
    counter = rate("wukong_reconcile_cancellations_total", selector=selector, by="reason")
    latency = quantile(0.5, "workqueue_work_duration_seconds", selector=selector, by="name")
    assert counter == (
        "sum by (reason) (rate(wukong_reconcile_cancellations_total"
        '{namespace=~"$namespace", controller=~"$controller"}[$__rate_interval]))'
    )
    assert metric_names(counter) == {"wukong_reconcile_cancellations_total"}
    assert metric_names(latency) == {"workqueue_work_duration_seconds_bucket"}
    assert grouping_labels(latency) == {"name", "le"}


def test_vector_matching_and_string_literals_are_not_series() -> None:
    expr = (
        'sum without (pod) (a_total) / on (job) group_left (name) b{x="not_a_metric"} '
        'unless label_replace(c, "dst", "$1", "src", "(.*)")'
    )
    assert metric_names(expr) == {"a_total", "b", "c"}
    assert grouping_labels(expr) == {"pod", "job", "name"}


def test_substitutes_grafana_variables_longest_name_first() -> None:
    expr = 'rate(x{job=~"$job"}[$__rate_interval]) + rate(y{job=~"${job}"}[$__rate])'
    values = {"job": "wukong", "__rate_interval": "1m", "__rate": "5m"}
    assert substitute_variables(expr, values) == (
        'rate(x{job=~"wukong"}[1m]) + rate(y{job=~"wukong"}[5m])'
    )


def test_label_values_as_promql() -> None:
    query = 'label_values(a_total{job=~"j", node=~"n"}, namespace)'
    assert label_values_expr(query) == 'group by (namespace) (a_total{job=~"j", node=~"n"})'
    assert label_values_expr("label_values(a_total, job)") == "group by (job) (a_total)"
    assert label_values_expr("label_values(job)") == 'group by (job) ({job!=""})'
    with pytest.raises(ValueError, match="not a label_values"):
        label_values_expr("query_result(up)")
