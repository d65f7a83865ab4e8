"""``metrics``: print a snapshot of the runtime's Prometheus registry.

Sessions by status come from the backend's list, so the snapshot is what any
server replica would report; the counters and the create histogram count what
this process did, so from a fresh CLI process they are zero (a server mounts
``SessionManager.metrics.registry`` to expose its own).
"""

from __future__ import annotations

import argparse
import sys

from prometheus_client.parser import text_string_to_metric_families

from session_runtime.cli._common import EXIT_OK, add_json_flag, emit_json, make_manager

__all__ = ["register", "snapshot_samples"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``metrics`` to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
    """
    metrics = subparsers.add_parser(
        "metrics",
        help="print the runtime's metrics (Prometheus text format, or --json samples)",
    )
    add_json_flag(metrics)
    metrics.set_defaults(handler=_metrics)


def snapshot_samples(text: str) -> list[dict[str, object]]:
    """Return every sample of a Prometheus text page as ``{name, labels, value}``.

    Args:
        text: the page, as ``generate_latest`` writes it.
    """
    return [
        {"name": s.name, "labels": dict(s.labels), "value": s.value}
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _metrics(args: argparse.Namespace) -> int:
    text = make_manager().metrics.snapshot()
    if args.json:
        emit_json(snapshot_samples(text))
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return EXIT_OK
