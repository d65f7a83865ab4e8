"""Start real session agents for tests: ``with running_agent(...) as agent:``.

The agent runs as ``python -m session_runtime.agent`` (exactly as the local
backend starts it) on a free loopback port, with its JSON log in a file. The
context manager waits until ``/healthz`` answers and always stops the process
it started: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from session_runtime import naming

__all__ = ["RunningAgent", "free_port", "real_gam_bin", "running_agent", "start_agent"]

_REPO_ROOT = Path(__file__).resolve().parents[2]
_STARTUP_TIMEOUT_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def real_gam_bin() -> str:
    """Return the ``gam`` installed beside this Python (the gam7 package), else ``gam``."""
    candidate = Path(sys.executable).parent / "gam"
    return str(candidate) if candidate.exists() else "gam"


@dataclass
class RunningAgent:
    """A started agent process and how to reach it."""

    session_id: str
    token: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    gam_config_dir: Path

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the agent."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The WebSocket URL of the session path."""
        return f"ws://{self.host}:{self.port}{naming.session_path(self.session_id)}"

    def health(self, timeout: float = 5.0) -> dict[str, object]:
        """GET /healthz and return the JSON body."""
        with urllib.request.urlopen(  # noqa: S310 - http to loopback only
            f"{self.http_url}{naming.HEALTH_PATH}", timeout=timeout
        ) as response:
            data: dict[str, object] = json.loads(response.read())
            return data

    def log_lines(self) -> list[dict[str, object]]:
        """Return the JSON lines the agent logged so far (other lines skipped)."""
        lines = []
        for raw in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(raw)
                if isinstance(record, dict):
                    lines.append(record)
        return lines

    def events(self, name: str) -> list[dict[str, object]]:
        """Return the logged records whose ``event`` is ``name``."""
        return [r for r in self.log_lines() if r.get("event") == name]

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit by itself and return its status."""
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        return int(self.process.returncode)


def start_agent(
    session_id: str,
    token: str,
    *,
    tmp_path: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    gam_bin: str | None = None,
    extra_env: dict[str, str] | None = None,
    wait: bool = True,
) -> RunningAgent:
    """Start an agent process; the caller must :meth:`RunningAgent.stop` it.

    Args:
        session_id: SESSION_ID.
        token: SESSION_TOKEN (empty string: left unset, to test refusal).
        tmp_path: where the log and GAMCFGDIR go.
        host: loopback address to listen on.
        port: a port, or ``None`` for a free one.
        gam_bin: GAM_BIN; the real gam7 when ``None``.
        extra_env: more variables (they override the defaults set here).
        wait: wait until /healthz answers.
    """
    port = port or free_port(host)
    run_dir = tmp_path / f"agent-{session_id}-{port}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "agent.log"
    gam_config_dir = run_dir / "gamcfg"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SESSION_", "GAM")) and k != "PYTHONPATH"
    }
    env.update(
        {
            "PYTHONPATH": str(_REPO_ROOT),
            naming.ENV_SESSION_ID: session_id,
            naming.ENV_AGENT_HOST: host,
            naming.ENV_AGENT_PORT: str(port),
            naming.ENV_GAM_BIN: gam_bin or real_gam_bin(),
            naming.ENV_GAMCFGDIR: str(gam_config_dir),
        }
    )
    if token:
        env[naming.ENV_SESSION_TOKEN] = token
    env.update(extra_env or {})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "session_runtime.agent"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=run_dir,
        )
    agent = RunningAgent(session_id, token, host, port, process, log_path, gam_config_dir)
    if wait:
        try:
            _wait_healthy(agent)
        except BaseException:
            agent.stop()
            raise
    return agent


def _wait_healthy(agent: RunningAgent) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if agent.process.poll() is not None:
            raise RuntimeError(
                f"agent exited with {agent.process.returncode} before answering /healthz:\n"
                + agent.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            )
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            agent.health(timeout=1.0)
            return
        time.sleep(0.05)
    raise TimeoutError(f"agent did not answer /healthz within {_STARTUP_TIMEOUT_S}s")


@contextlib.contextmanager
def running_agent(
    session_id: str,
    token: str,
    *,
    tmp_path: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    gam_bin: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[RunningAgent]:
    """Run an agent for the duration of a ``with`` block; it is always stopped.

    Args:
        session_id: SESSION_ID.
        token: SESSION_TOKEN.
        tmp_path: where the log and GAMCFGDIR go.
        host: loopback address to listen on.
        port: a port, or ``None`` for a free one.
        gam_bin: GAM_BIN; the real gam7 when ``None`` (see ``fake_gam.fake_gam_bin``).
        extra_env: more agent environment variables.
    """
    agent = start_agent(
        session_id,
        token,
        tmp_path=tmp_path,
        host=host,
        port=port,
        gam_bin=gam_bin,
        extra_env=extra_env,
    )
    try:
        yield agent
    finally:
        agent.stop()
