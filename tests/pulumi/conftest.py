"""Fixtures: the dev stack (and variants) run once per module under Pulumi mocks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.pulumi.harness import StackRun, dev_config, run_stack


@pytest.fixture(scope="session")
def dev_run() -> StackRun:
    return run_stack(dev_config())


@pytest.fixture
def variant() -> Any:
    """Run the dev stack with some keys changed (None removes a key)."""

    def run(**changes: Any) -> StackRun:
        config = dev_config()
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        return run_stack(config)

    return run
