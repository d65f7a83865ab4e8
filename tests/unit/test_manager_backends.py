"""get_backend: the backend named by the settings; Kubernetes needs lightkube, said clearly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from session_runtime.backends import get_backend
from session_runtime.backends.local import LocalBackend
from session_runtime.errors import BackendUnavailableError
from session_runtime.settings import load_settings


def test_the_local_backend_gets_the_state_dir_and_timeouts(tmp_path: Path) -> None:
    settings = load_settings(
        backend="local", local_state_dir=tmp_path, idle_timeout=12, command_timeout=34
    )
    backend = get_backend(settings)
    assert isinstance(backend, LocalBackend)
    assert backend.state.root == tmp_path
    assert (backend.idle_timeout, backend.command_timeout) == (12, 34)


def test_kubernetes_without_lightkube_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "lightkube", None)  # makes `import lightkube` fail
    with pytest.raises(BackendUnavailableError, match="needs the lightkube package") as caught:
        get_backend(load_settings(backend="kubernetes"))
    assert "gamgui-websocket[server]" in (caught.value.hint or "")
    assert "WEBSOCKET_BACKEND=local" in (caught.value.hint or "")


def test_importing_the_runtime_does_not_import_the_kubernetes_client() -> None:
    import subprocess

    code = (
        "import sys, session_runtime.manager, session_runtime.cli, session_runtime.backends; "
        "print('lightkube' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
