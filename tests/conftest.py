"""Shared test configuration: markers for what needs the outside world skip with a reason.

Hypothesis runs derandomized by default (the ``deterministic`` profile): the same
examples every run, so a red run is reproducible and a green one is not luck.
``HYPOTHESIS_PROFILE=explore`` draws fresh random examples (with the example
database) for hunting new failures locally.
"""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import Phase, settings

#: Every phase but ``explain``, whose tracer makes shrinking far slower on Python < 3.12.
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
settings.register_profile(
    "deterministic", derandomize=True, database=None, phases=_PHASES, print_blob=True
)
settings.register_profile("explore", phases=_PHASES, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


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
