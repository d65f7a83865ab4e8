"""Shared test configuration: markers for what needs the outside world skip with a reason."""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cluster = os.environ.get("GAMGUI_TEST_CLUSTER") == "1"
    has_pulumi = shutil.which("pulumi") is not None
    skip_cluster = pytest.mark.skip(
        reason="needs a real Kubernetes cluster with the stack deployed (set GAMGUI_TEST_CLUSTER=1)"
    )
    skip_pulumi = pytest.mark.skip(reason="needs the Pulumi CLI on PATH (not installed here)")
    for item in items:
        if item.get_closest_marker("cluster") is not None and not has_cluster:
            item.add_marker(skip_cluster)
        if item.get_closest_marker("pulumi_cli") is not None and not has_pulumi:
            item.add_marker(skip_pulumi)
