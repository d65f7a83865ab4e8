"""The local stack started by an ordinary user: it starts, works, and says it is one identity.

The test (as root) creates a user, then runs ``gamgui-session local up``,
``send`` and ``local down`` as that user, the way a developer on a laptop does.
Everything the stack starts runs as that user, and ``local up`` says plainly
that sessions share it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from session_runtime.backends.local import LocalStack
from session_runtime.backends.local.processes import find_system_binary
from tests.security.conftest import require_stack_tools
from tests.support.session_users import (
    SharedRuntime,
    public_directory,
    shared_runtime,
    temporary_user,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="creating the test's user needs root and useradd",
)

_USER = "gamgui-test-dev"
_TIMEOUT_S = 180


@dataclass(frozen=True)
class Developer:
    """The created user, their state directory and how to run the CLI as them."""

    user: pwd.struct_passwd
    state_dir: Path
    runtime: SharedRuntime
    home: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        sbin = str(Path(find_system_binary("nginx", "nginx-light")).parent)
        env = {
            "PATH": f"{self.runtime.root}:{sbin}:/usr/sbin:/usr/bin:/bin",
            "HOME": str(self.home),
            "USER": self.user.pw_name,
            "LANG": "C.UTF-8",
            "PYTHONPATH": self.runtime.pythonpath,
            "WEBSOCKET_LOCAL_STATE_DIR": str(self.state_dir),
        }
        return subprocess.run(
            [self.runtime.cli, *args],
            env=env,
            cwd=self.home,
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )


@pytest.fixture
def developer() -> Iterator[Developer]:
    require_stack_tools()
    with contextlib.ExitStack() as cleanup:
        try:
            runtime = cleanup.enter_context(shared_runtime())
        except RuntimeError as exc:
            pytest.skip(str(exc))
        user = cleanup.enter_context(temporary_user(_USER))
        home = cleanup.enter_context(public_directory("gamgui-dev-home-"))
        os.chown(home, user.pw_uid, user.pw_gid)
        state_dir = home / "state"
        cleanup.callback(LocalStack(state_dir).down)  # a stack left by a failed step
        yield Developer(user, state_dir, runtime, home)


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(pid)


def test_an_ordinary_user_runs_the_stack_as_one_identity_and_is_told_so(
    developer: Developer,
) -> None:
    up = developer.cli("local", "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "identity: sessions share one identity" in up.stdout
    assert f"uid {developer.user.pw_uid}, not root" in up.stdout

    status = developer.cli("local", "status")
    assert status.returncode == 0 and "sessions share one identity" in status.stdout

    sent = developer.cli("send", "--id", "default", "--", "version")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "GAM" in sent.stdout

    stack = LocalStack(developer.state_dir)
    record = stack.state.read_stack()
    assert record is not None and record.session_users is False
    default = stack.state.read_session("default")
    assert default is not None
    uid = developer.user.pw_uid
    assert {_uid(record.dns.pid), _uid(record.proxy.pid), _uid(default.process.pid)} == {uid}
    assert developer.state_dir.stat().st_uid == uid

    down = developer.cli("local", "down")
    assert down.returncode == 0, down.stderr
    assert developer.cli("local", "status").returncode != 0
