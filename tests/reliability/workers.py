"""Functions run in ``multiprocessing`` workers: concurrent creates from separate processes.

Each worker waits for a "go" file so that all of them start at nearly the same
moment, then creates its share of sessions from one thread per id. Results
are plain strings (``"created"`` or ``"<ErrorType>: <message>"``) so they
pickle back to the test unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.base import SessionBackend
from session_runtime.errors import SessionError
from session_runtime.models import CreateRequest

__all__ = ["create_concurrently", "kubernetes_creates", "local_creates"]


def _wait_for(go_file: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file) and time.monotonic() < deadline:
        time.sleep(0.005)


def create_concurrently(
    make_backend: Callable[[], SessionBackend],
    session_ids: list[str],
    max_sessions: int,
    go_file: str,
) -> list[str]:
    """Create ``session_ids`` at once, one thread (and one backend) per id.

    Args:
        make_backend: builds a backend (each thread gets its own, as separate servers do).
        session_ids: the ids to create.
        max_sessions: the limit each request carries.
        go_file: start when this file exists.
    """

    def one(session_id: str) -> str:
        backend = make_backend()
        request = CreateRequest(
            session_id=session_id,
            token=SecretStr(f"token-{session_id}-0123456789"),
            credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
            max_sessions=max_sessions,
        )
        try:
            backend.create(request)
        except SessionError as exc:
            return f"{type(exc).__name__}: {exc.message}"
        finally:
            close = getattr(backend, "close", None)
            if close is not None:
                close()
        return "created"

    _wait_for(go_file)
    with ThreadPoolExecutor(max_workers=len(session_ids)) as pool:
        return list(pool.map(one, session_ids))


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
