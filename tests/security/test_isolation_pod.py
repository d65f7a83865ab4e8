"""In a pod, GAM runs under the agent's own uid and still cannot read the session token.

The agent is started as the pod starts it: an unprivileged user, the token in a
file on a memory-backed volume (the init container's hand-off copy, see
``session_runtime.spec``). A fake GAM then tries the three ways a same-uid
process has: the file, ``/proc/<agent>/environ`` and ``/proc/<agent>/mem``.
A control process of the same user shows that the fake's methods do work on a
process that has not made itself non-dumpable.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from session_runtime import naming
from session_runtime.client import SessionConnection
from session_runtime.ids import generate_session_id
from tests.support.session_users import (
    SharedRuntime,
    reachable_python,
    shared_runtime,
    temporary_user,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or not Path("/dev/shm").is_dir(),
    reason="running the agent as a pod's unprivileged user needs root, useradd and /dev/shm",
)

_USER = "gamgui-test-pod"
_MEMORY_VOLUME = Path("/dev/shm")
_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PodAgent:
    """An agent running as the pod's user, and where its token was handed over."""

    process: subprocess.Popen[bytes]
    token: str
    token_file: Path
    url: str
    uid: int
    gid: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(encoding="utf-8", errors="replace")
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{port}{naming.HEALTH_PATH}"
            with urllib.request.urlopen(url, timeout=1):
                return
        time.sleep(0.05)
    raise TimeoutError(log.read_text(encoding="utf-8", errors="replace"))


@contextlib.contextmanager
def _pod_agent(runtime: SharedRuntime, delivery: str) -> Iterator[PodAgent]:
    with contextlib.ExitStack() as cleanup:
        user = cleanup.enter_context(temporary_user(_USER))
        volume = Path(tempfile.mkdtemp(prefix="gamgui-pod-", dir=_MEMORY_VOLUME))
        cleanup.callback(shutil.rmtree, volume, True)
        logs = Path(tempfile.mkdtemp(prefix="gamgui-pod-log-"))
        cleanup.callback(shutil.rmtree, logs, True)
        os.chown(volume, user.pw_uid, user.pw_gid)
        token = f"tok-{generate_session_id()}-{generate_session_id()}"
        token_file = volume / naming.TOKEN_SECRET_KEY
        sid, port = generate_session_id(), _free_port()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(volume),
            naming.ENV_SESSION_ID: sid,
            naming.ENV_AGENT_HOST: "127.0.0.1",
            naming.ENV_AGENT_PORT: str(port),
            naming.ENV_GAM_BIN: runtime.fake_gam,
            naming.ENV_GAMCFGDIR: str(volume / "gamcfg"),
        }
        if delivery == "file":
            token_file.write_text(token + "\n", encoding="utf-8")  # as `cp` in the init container
            os.chown(token_file, user.pw_uid, user.pw_gid)
            token_file.chmod(0o400)
            env[naming.ENV_SESSION_TOKEN_FILE] = str(token_file)
        else:
            env[naming.ENV_SESSION_TOKEN] = token
        log = logs / "agent.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [runtime.agent],
                env=env,
                cwd=volume,
                user=user.pw_uid,
                group=user.pw_gid,
                extra_groups=[],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def stop() -> None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

        cleanup.callback(stop)
        _wait_healthy(port, process, log)
        url = f"ws://127.0.0.1:{port}{naming.session_path(sid)}"
        yield PodAgent(process, token, token_file, url, user.pw_uid, user.pw_gid)


@pytest.fixture(scope="module")
def runtime() -> Iterator[SharedRuntime]:
    try:
        with shared_runtime() as found:
            yield found
    except RuntimeError as exc:
        pytest.skip(str(exc))


def _steal(agent: PodAgent, target: str) -> tuple[dict[str, str], str]:
    with SessionConnection.open(agent.url, agent.token) as connection:
        result = connection.run(["steal", target, str(agent.token_file), agent.token], timeout=60)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stdout + result.stderr


@pytest.mark.parametrize("delivery", ["file", "environment"])
def test_gam_under_the_agents_uid_cannot_read_the_token(
    runtime: SharedRuntime, delivery: str
) -> None:
    with _pod_agent(runtime, delivery) as agent:
        assert not agent.token_file.exists()  # read once, then deleted from the memory volume
        stolen, output = _steal(agent, "parent")
        assert stolen["file"] == "denied:FileNotFoundError"
        assert stolen["environ"] == "denied:PermissionError"
        assert stolen["mem"] == "denied:PermissionError"
        assert stolen["self_environ"] == "read:"  # the fake can read a dumpable process
        assert agent.token not in output


def test_the_same_methods_work_on_a_process_that_stayed_dumpable(runtime: SharedRuntime) -> None:
    """The control: without PR_SET_DUMPABLE, a same-uid GAM reads environ and memory."""
    with _pod_agent(runtime, "file") as agent:
        needle = agent.token  # any secret the control holds, in its environment and memory
        python = reachable_python()
        assert python is not None
        control = subprocess.Popen(
            [python, "-c", "import time; time.sleep(120)"],
            env={"CONTROL_SECRET": needle},
            user=agent.uid,
            group=agent.gid,
            extra_groups=[],
            stdout=subprocess.DEVNULL,
        )
        try:
            stolen, _ = _steal(agent, str(control.pid))
        finally:
            control.kill()
            control.wait(timeout=10)
        assert stolen["environ"].startswith("read:") and needle in stolen["environ"]
        assert stolen["mem"] == "read:found"
