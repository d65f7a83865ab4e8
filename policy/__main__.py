"""Entry point the Pulumi CLI runs for ``--policy-pack policy``.

The rules import the project's own modules (the image rule, the session labels),
so the repository root goes on ``sys.path`` first; the pack runs in the project's
virtualenv (see PulumiPolicy.yaml).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.rules import POLICIES

PolicyPack(
    name="gamgui-websocket",
    policies=POLICIES,
    enforcement_level=EnforcementLevel.MANDATORY,
    description="Mandatory security and sizing rules for the gamgui WebSocket stack.",
)
