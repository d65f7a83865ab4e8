"""Functions run in ``multiprocessing`` workers: concurrent creates from separate processes.

Each worker waits for a "go" file so that all of them start at nearly the same
moment, then creates its share of sessions from one thread per id. Results
are plain strings (``"created"`` or ``"<ErrorType>: <message>"``) so they
pickle back to the test unchanged.
"""

from __future__ import annotations

from typing import Any

from tests.support.concurrent_creates import create_concurrently

__all__ = ["kubernetes_creates", "local_creates"]


def local_creates(
    state_dir: str, gam_bin: str, session_ids: list[str], max_sessions: int, go_file: str
) -> list[str]:
    """Concurrent creates on the local stack at ``state_dir`` (agents run ``gam_bin``)."""
    from session_runtime.backends.local import LocalBackend

    return create_concurrently(
        lambda: LocalBackend(state_dir, gam_bin=gam_bin, idle_timeout=0),
        session_ids,
        max_sessions,
        go_file,
    )


def kubernetes_creates(
    kubeconfig: dict[str, Any],
    namespace: str,
    session_ids: list[str],
    max_sessions: int,
    go_file: str,
) -> list[str]:
    """Concurrent creates against the Kubernetes API at ``kubeconfig`` (the emulator)."""
    from lightkube.config.kubeconfig import KubeConfig

    from session_runtime.backends.kubernetes import (
        KubernetesBackend,
        RetryPolicy,
    )
    from session_runtime.settings import WebSocketSettings

    settings = WebSocketSettings(
        _env_file=None,
        backend="kubernetes",
        namespace=namespace,
        max_sessions=max_sessions,
    )
    retry = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, request_timeout=10.0)
    return create_concurrently(
        lambda: KubernetesBackend(
            settings,
            config=KubeConfig.from_dict(kubeconfig),
            retry=retry,
            trust_env=False,
        ),
        session_ids,
        max_sessions,
        go_file,
    )
