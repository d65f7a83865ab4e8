"""Pulumi components of the gamgui WebSocket infrastructure.

Only this layer imports ``pulumi``. The manifests come from pure builders
(:mod:`components.proxy_manifests`, :mod:`components.session_manifests`) over
:mod:`session_runtime.spec` and :mod:`session_runtime.nginx`, which tests call
without Pulumi. Import the component classes from their modules
(``components.proxy``...), so the pure parts load without the Pulumi SDK.
"""

from __future__ import annotations

__all__: list[str] = []
