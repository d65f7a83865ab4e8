"""How GAM processes are born: the seam between the session and the runner.

The session asks the launcher which mode it is in (``warm``: forked from a
zygote that imported GAM once; ``cold``: GAM_BIN executed per command) and
which GAM version is installed; the runner asks it to start a process. The
version comes from the package metadata, never from running ``gam version``,
so nothing holds the command lock while the agent starts.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
from pathlib import Path

from session_runtime.agent.config import AgentConfig
from session_runtime.protocol import GamMode

__all__ = ["GAM_DISTRIBUTION", "GamLauncher", "installed_gam_version"]

#: The PyPI distribution that provides the ``gam`` package and entry point.
GAM_DISTRIBUTION = "gam7"
_VERSION = re.compile(r"^\d+\.\d+[\w.\-]*$")


def installed_gam_version() -> str | None:
    """Return the installed GAM's version from its package metadata, or None."""
    try:
        version = importlib.metadata.version(GAM_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    return version if _VERSION.match(version) else None


class GamLauncher:
    """Starts GAM processes for one session (cold: one exec per command).

    Args:
        config: the agent configuration (GAM_BIN, the mode asked for).
    """

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._python_gam = _is_python_gam(config.gam_bin)

    @property
    def mode(self) -> GamMode:
        """The mode commands start in right now."""
        return "cold"

    @property
    def gam_version(self) -> str | None:
        """The GAM version to report, when GAM_BIN is the installed Python GAM."""
        return installed_gam_version() if self._python_gam else None

    async def start(self) -> None:
        """Prepare to launch (nothing to do when cold)."""

    async def close(self) -> None:
        """Release what :meth:`start` prepared."""


def _is_python_gam(gam_bin: str) -> bool:
    """Whether GAM_BIN is the console script of the installed ``gam7`` distribution."""
    resolved = shutil.which(gam_bin)
    if resolved is None:
        return False
    try:
        entry_points = importlib.metadata.distribution(GAM_DISTRIBUTION).entry_points
    except importlib.metadata.PackageNotFoundError:
        return False
    names = {ep.name for ep in entry_points if ep.group == "console_scripts"}
    return Path(resolved).name in names and _script_imports_gam(Path(resolved))


def _script_imports_gam(path: Path) -> bool:
    try:
        head = path.read_bytes()[:4096]
    except OSError:
        return False
    return b"from gam" in head or b"import gam" in head
