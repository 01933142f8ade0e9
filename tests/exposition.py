"""Reading a /metrics exposition in tests, with prometheus_client's own parser."""

from prometheus_client.parser import text_string_to_metric_families


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples called exactly `name` (a counter's `_total` included), with their labels."""
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
