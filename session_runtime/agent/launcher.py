"""How GAM processes are born: the seam between the session and the runner.

``warm``: forked from a zygote that imported GAM once (tens of ms per command);
``cold``: GAM_BIN executed per command (Python start-up plus GAM's imports,
about 0.6 s). Warm needs GAM_BIN to be the console script of the installed
``gam7`` distribution (a fake script or a PyInstaller build runs cold) and
``SESSION_GAM_MODE`` not set to ``cold``. The zygote starts in the background
after the agent listens; until it is ready, and whenever it has died, commands
run cold and a new zygote is started, so a command never fails because of it.
The version comes from the package metadata, never from running ``gam version``,
so nothing holds the command lock while the agent starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from session_runtime.agent.config import AgentConfig
from session_runtime.agent.log import log_event
from session_runtime.agent.processes import Child, spawn_cold
from session_runtime.agent.zygote_client import ZygoteGone, ZygoteProcess
from session_runtime.protocol import GamMode

if TYPE_CHECKING:
    from collections.abc import Mapping

    from session_runtime.agent.stdio import ChildStdio

__all__ = [
    "GAM_DISTRIBUTION",
    "GamLauncher",
    "PythonGam",
    "find_python_gam",
    "installed_gam_version",
]

#: The PyPI distribution that provides the ``gam`` package and entry point.
GAM_DISTRIBUTION = "gam7"
_VERSION = re.compile(r"^\d+\.\d+[\w.\-]*$")
#: Zygote starts that may fail in a row before the agent stays cold for good.
MAX_ZYGOTE_FAILURES = 3
#: Seconds the first command waits for the agent's first zygote, still importing GAM,
#: before it runs cold. Importing is most of a cold start, so waiting is never much
#: slower, and a cold start beside the import would compete with it for the CPU.
#: After a zygote died, commands run cold while the next one starts (no wait).
BOOT_WAIT_S = 3.0


def installed_gam_version() -> str | None:
    """Return the installed GAM's version from its package metadata, or None."""
    try:
        version = importlib.metadata.version(GAM_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    return version if _VERSION.match(version) else None


@dataclass(frozen=True)
class PythonGam:
    """GAM_BIN resolved as the installed Python GAM: what a zygote needs to imitate it."""

    #: The script's path, as a cold exec sees it in ``sys.argv[0]``.
    script: str
    #: The interpreter its shebang names.
    interpreter: str
    #: The console-script entry point (``gam.__main__:main``).
    entry: str


def find_python_gam(gam_bin: str) -> PythonGam | None:
    """Return how to run GAM_BIN warm, or None when it is not the installed ``gam7`` script.

    Args:
        gam_bin: GAM_BIN, a path or a name looked up on PATH.
    """
    resolved = shutil.which(gam_bin)
    if resolved is None:
        return None
    try:
        entry_points = importlib.metadata.distribution(GAM_DISTRIBUTION).entry_points
    except importlib.metadata.PackageNotFoundError:
        return None
    scripts = {ep.name: ep.value for ep in entry_points if ep.group == "console_scripts"}
    entry = scripts.get(Path(resolved).name)
    if entry is None:
        return None
    interpreter = _shebang_interpreter(Path(resolved))
    if interpreter is None:
        return None
    return PythonGam(resolved, interpreter, entry)


def _shebang_interpreter(path: Path) -> str | None:
    """The Python a console script runs with, or None for a binary or a non-GAM script."""
    try:
        head = path.read_bytes()[:4096]
    except OSError:
        return None
    if not head.startswith(b"#!") or not (b"from gam" in head or b"import gam" in head):
        return None
    words = shlex.split(head[2:].split(b"\n", 1)[0].decode("utf-8", "replace"))
    if words and Path(words[0]).name == "env":
        words = words[1:]
    if len(words) != 1:  # interpreter flags would change what a child inherits
        return None
    return shutil.which(words[0])


class GamLauncher:
    """Starts GAM processes for one session, warm when it can, cold otherwise.

    Args:
        config: the agent configuration (GAM_BIN, the mode asked for).
        python_gam: what to fork warm; found from GAM_BIN when omitted (tests
            pass a stand-in entry point to exercise the zygote without GAM).
    """

    def __init__(self, config: AgentConfig, *, python_gam: PythonGam | None = None) -> None:
        self.config = config
        self._gam = python_gam or find_python_gam(config.gam_bin)
        self._want_warm = config.gam_mode == "warm" and self._gam is not None
        self._zygote: ZygoteProcess | None = None
        self._booting: asyncio.Task[None] | None = None
        self._first_boot: asyncio.Task[None] | None = None
        self._failures = 0

    @property
    def mode(self) -> GamMode:
        """The mode the next command starts in."""
        zygote = self._zygote
        return "warm" if zygote is not None and zygote.alive else "cold"

    @property
    def zygote_pid(self) -> int | None:
        """The running zygote's pid (for memory accounting and tests)."""
        zygote = self._zygote
        return zygote.pid if zygote is not None and zygote.alive else None

    @property
    def gam_version(self) -> str | None:
        """The GAM version to report, when GAM_BIN is the installed Python GAM."""
        return installed_gam_version() if self._gam is not None else None

    async def start(self) -> None:
        """Start the zygote in the background (warm mode); returns at once."""
        self._boot()
        self._first_boot = self._booting

    def _boot(self) -> None:
        if self._zygote is not None and not self._zygote.alive:
            self._zygote = None
        if not self._want_warm or self._failures >= MAX_ZYGOTE_FAILURES:
            return
        if self._booting is None or self._booting.done():
            self._booting = asyncio.get_running_loop().create_task(self._start_zygote())

    async def _start_zygote(self) -> None:
        assert self._gam is not None  # noqa: S101 - _want_warm implies it
        from session_runtime.agent.session import gam_environment  # noqa: PLC0415 - cycle

        try:
            zygote = await ZygoteProcess.start(
                self._gam.interpreter,
                self._gam.entry,
                env=gam_environment(self.config),
                cwd=self.config.gam_config_dir,
                on_lost=self._boot,
            )
        except (OSError, ZygoteGone, TimeoutError) as exc:
            self._failures += 1
            log_event(
                "zygote_failed",
                level="warning",
                message=f"{type(exc).__name__}: {exc}",
                failures=self._failures,
                staying_cold=self._failures >= MAX_ZYGOTE_FAILURES,
            )
            return
        self._failures = 0
        self._zygote = zygote
        log_event("zygote_ready", pid=zygote.pid, gam_entry=self._gam.entry)

    async def spawn(
        self, argv: list[str], *, env: Mapping[str, str], cwd: Path, stdio: ChildStdio
    ) -> tuple[Child, GamMode]:
        """Start ``argv`` with ``stdio``'s child fds; warm when the zygote is up.

        The agent's first zygote, still starting, is waited for (at most
        :data:`BOOT_WAIT_S`).

        Args:
            argv: GAM_BIN and GAM's arguments.
            env: the command's environment.
            cwd: its working directory.
            stdio: the fds it gets.

        Raises:
            OSError: GAM_BIN cannot be executed (cold).
        """
        if self._first_boot is not None and not self._first_boot.done():
            await asyncio.wait({self._first_boot}, timeout=BOOT_WAIT_S)
        zygote = self._zygote
        if zygote is not None and zygote.alive and self._gam is not None:
            try:
                child = await zygote.spawn(
                    [self._gam.script, *argv[1:]], env=env, cwd=cwd, fds=stdio.child, tty=stdio.tty
                )
            except ZygoteGone:
                log_event("zygote_lost", level="warning", pid=zygote.pid)
            except OSError as exc:
                log_event("zygote_spawn_failed", level="warning", message=str(exc))
            else:
                return child, "warm"
        if zygote is not None and not zygote.alive:
            await zygote.close()
        self._boot()
        return await spawn_cold(argv, env=env, cwd=cwd, stdio=stdio), "cold"

    async def close(self) -> None:
        """Stop the zygote (and a start in progress)."""
        self._want_warm = False
        if self._booting is not None:
            self._booting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._booting
        if self._zygote is not None:
            await self._zygote.close()
            self._zygote = None
