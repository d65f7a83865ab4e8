"""Backends: where sessions live. ``get_backend`` picks one from the settings.

The Kubernetes backend is imported only when selected, so a server that runs
the local stack (or only imports the package) needs no Kubernetes client.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from session_runtime.backends.base import SessionBackend
from session_runtime.errors import BackendUnavailableError, SettingsError

if TYPE_CHECKING:
    from session_runtime.settings import WebSocketSettings

__all__ = ["SessionBackend", "get_backend"]


def get_backend(settings: WebSocketSettings) -> SessionBackend:
    """Return the backend named by ``settings.backend``.

    Args:
        settings: validated settings; ``backend`` is ``local`` or ``kubernetes``.

    Raises:
        BackendUnavailableError: the Kubernetes client library (lightkube) is missing.
        SettingsError: the backend name is unknown.
    """
    if settings.backend == "local":
        from session_runtime.backends.local import LocalBackend  # noqa: PLC0415

        return LocalBackend(
            Path(settings.local_state_dir),
            idle_timeout=settings.idle_timeout,
            command_timeout=settings.command_timeout,
        )
    if settings.backend == "kubernetes":
        try:
            import lightkube  # noqa: F401, PLC0415
        except ImportError as exc:
            raise BackendUnavailableError(
                "The Kubernetes backend needs the lightkube package",
                cause=str(exc),
                hint="pip install 'gamgui-websocket[server]', or set WEBSOCKET_BACKEND=local",
            ) from None
        from session_runtime.backends.kubernetes import KubernetesBackend  # noqa: PLC0415

        return KubernetesBackend(settings)
    raise SettingsError(  # unreachable with validated settings; kept for safety
        f"Unknown backend {settings.backend!r}",
        hint="set WEBSOCKET_BACKEND to local or kubernetes",
    )
