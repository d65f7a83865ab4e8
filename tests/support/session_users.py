"""A layout session users can run, for tests of the local stack's per-session identities.

The test machine's Python may live under a 0700 ``/root`` (pyenv), where no
other user can reach it. :func:`shared_runtime` writes, into a directory every
user can search, small ``#!`` launchers for the agent, the real GAM and the fake
GAM that use a Python other users can run (this one when it is reachable, else
the system's ``python3`` of the same minor version) with this checkout and the
venv's packages on ``sys.path``. That is what docs/local-stack.md asks of a
real installation: the agent and GAM readable and executable by every user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from session_runtime.backends.local.identity import blocked_path
from tests.support import fake_gam

__all__ = [
    "SharedRuntime",
    "public_directory",
    "reachable_python",
    "shared_runtime",
    "temporary_user",
]

_REPO = Path(__file__).resolve().parents[2]


def reachable_python() -> str | None:
    """Return a Python of this minor version that every user can run, or None."""
    candidates = [sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"]
    for candidate in candidates:
        if Path(candidate).exists() and blocked_path(candidate) is None:
            return candidate
    return None


@dataclass(frozen=True)
class SharedRuntime:
    """Launchers every user can run: ``agent_argv`` for the backend, two GAMs."""

    root: Path
    agent: str
    gam: str
    fake_gam: str
    #: ``python -m session_runtime`` (the ``gamgui-session`` CLI).
    cli: str

    @property
    def pythonpath(self) -> str:
        """``PYTHONPATH`` for processes the CLI starts with its own interpreter (agents)."""
        return os.pathsep.join(_import_paths())

    @property
    def agent_argv(self) -> list[str]:
        return [self.agent]


def _import_paths() -> list[str]:
    return [str(_REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]


def _launcher(path: Path, python: str, body: str) -> str:
    paths = _import_paths()
    path.write_text(f"#!{python}\nimport sys\nsys.path[:0] = {paths!r}\n{body}", encoding="utf-8")
    path.chmod(0o755)
    return str(path)


@contextlib.contextmanager
def public_directory(prefix: str) -> Iterator[Path]:
    """A fresh directory under /tmp that every user can search (0755), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # needs o+x
    try:
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def shared_runtime() -> Iterator[SharedRuntime]:
    """Write the launchers into a public directory; yield them; remove them afterwards.

    Skips (via ``pytest.skip`` in the caller) are the caller's business: this
    raises ``RuntimeError`` when no Python is reachable by other users.
    """
    python = reachable_python()
    if python is None:
        raise RuntimeError("no Python of this version is reachable by other users")
    with public_directory("gamgui-runtime-") as root:
        agent = _launcher(
            root / "agent",
            python,
            "import runpy\nrunpy.run_module('session_runtime.agent', run_name='__main__')\n",
        )
        gam = _launcher(
            root / "gam",
            python,
            "import warnings\nwarnings.simplefilter('ignore', FutureWarning)\n"
            "from gam.__main__ import main\nsys.argv[0] = 'gam'\nsys.exit(main())\n",
        )
        fake = str(Path(fake_gam.__file__).resolve())
        body = (
            f"import runpy\nsys.argv[0] = {fake!r}\nrunpy.run_path({fake!r}, run_name='__main__')\n"
        )
        fake_bin = _launcher(root / "fake-gam", python, body)
        cli = _launcher(
            root / "gamgui-session",
            python,
            "import runpy\nrunpy.run_module('session_runtime', run_name='__main__')\n",
        )
        yield SharedRuntime(root=root, agent=agent, gam=gam, fake_gam=fake_bin, cli=cli)


@contextlib.contextmanager
def temporary_user(name: str) -> Iterator[pwd.struct_passwd]:
    """Create a login-less system user (with its group) for one test; delete it afterwards.

    Args:
        name: the user name (removed first if a crashed run left it behind).
    """
    useradd, userdel = shutil.which("useradd"), shutil.which("userdel")
    if os.geteuid() != 0 or not useradd or not userdel:
        raise RuntimeError("creating a user needs root and useradd/userdel")
    subprocess.run([userdel, name], capture_output=True, check=False)
    subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        capture_output=True,
        check=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run([userdel, name], capture_output=True, check=False)
