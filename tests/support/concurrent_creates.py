"""Concurrent creates: one thread (and one backend) per id, started together.

Run inside ``multiprocessing`` workers by the limit tests of both backends, so
creates race across processes and threads as separate servers' would. Each
worker waits for a "go" file so all start at nearly the same moment. Results are
plain strings (``"created"`` or ``"<ErrorType>: <message>"``) so they pickle back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.base import SessionBackend
from session_runtime.errors import SessionError
from session_runtime.models import CreateRequest

__all__ = ["create_concurrently"]


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
