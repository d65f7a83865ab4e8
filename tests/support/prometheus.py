"""A runtime registry read back as a scraper reads it: samples by name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from session_runtime.metrics import RuntimeMetrics

__all__ = ["Samples", "count", "samples"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: RuntimeMetrics) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.snapshot())
        for s in family.samples
    }


def count(s: Samples, name: str, **labels: str) -> float:
    """Sum the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in s.items() if n == name and want <= set(lab))
