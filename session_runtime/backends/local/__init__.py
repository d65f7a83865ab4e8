"""The local stack: real nginx and dnsmasq plus agent processes on loopback addresses.

The embedded default (no cluster needed) and the ground the integration tests
stand on. :class:`LocalStack` brings the stack up and down; :class:`LocalBackend`
implements :class:`~session_runtime.backends.base.SessionBackend` on it. Modules:
``state`` (the shared state directory), ``processes`` (start/stop/ports),
``dns`` (dnsmasq), ``proxy`` (nginx), ``backend`` and ``stack``.
"""

from __future__ import annotations

from session_runtime.backends.local.backend import LocalBackend, agent_health, default_gam_bin
from session_runtime.backends.local.stack import LocalStack, ProcessStatus, StackStatus
from session_runtime.backends.local.state import StateDir

__all__ = [
    "LocalBackend",
    "LocalStack",
    "ProcessStatus",
    "StackStatus",
    "StateDir",
    "agent_health",
    "default_gam_bin",
]
