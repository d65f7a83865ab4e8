"""The console page: a reference browser client served by the local stack at ``/console/``.

The page itself is one file, ``index.html`` (HTML and inline JavaScript, no build
step), packaged with this module. It needs xterm.js and its fit addon, which
``scripts/bootstrap.sh`` installs from the npm registry into
:data:`VENDOR_NODE_MODULES`. :func:`install_console` puts the page and those files
into one directory the stack's nginx serves; when xterm.js is missing the page
still loads and says how to install it.

The served directory lives under the system temp directory, not in the
stack's state directory: nginx workers may run as an unprivileged user who can
reach no part of a private state directory (nor of its parents). Its name is
derived from the state directory, so every process of the stack finds it, and
it is trusted only when it is a real directory owned by the stack's user.

The session id and token travel in the URL *fragment* (``#id=...&token=...``),
which browsers never send to a server, so they land in no access log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from importlib import resources
from pathlib import Path
from urllib.parse import urlencode

from session_runtime.errors import BackendError

__all__ = [
    "CONSOLE_PATH",
    "VENDOR_FILES",
    "VENDOR_NODE_MODULES",
    "console_dir_for",
    "console_url",
    "install_console",
    "missing_vendor_files",
    "remove_console",
]

#: Where the proxy serves the page (local stack only).
CONSOLE_PATH = "/console/"
#: Where ``scripts/bootstrap.sh`` installs the npm packages (a checkout's ``.tools``).
VENDOR_NODE_MODULES = Path(__file__).resolve().parents[2] / ".tools" / "xterm" / "node_modules"
#: Served name -> path inside ``node_modules``; ``index.html`` loads them as ``vendor/<name>``.
VENDOR_FILES: dict[str, str] = {
    "xterm.js": "@xterm/xterm/lib/xterm.js",
    "xterm.css": "@xterm/xterm/css/xterm.css",
    "addon-fit.js": "@xterm/addon-fit/lib/addon-fit.js",
}
_PAGE = "index.html"


def missing_vendor_files(console_dir: Path) -> list[str]:
    """Return the xterm.js files an installed console directory lacks (empty: none).

    Args:
        console_dir: a directory :func:`install_console` filled.
    """
    return [name for name in VENDOR_FILES if not (console_dir / "vendor" / name).is_file()]


def console_dir_for(state_root: Path) -> Path:
    """Return the directory the stack rooted at ``state_root`` serves at ``/console/``.

    Args:
        state_root: the local stack's state directory.
    """
    digest = hashlib.sha256(str(state_root.resolve()).encode("utf-8")).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"gamgui-console-{os.geteuid()}-{digest}"


def _ours(path: Path) -> bool:
    """Whether ``path`` exists as a real directory of this user; raise if it is anything else."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise BackendError(
            "The console directory is not the local stack's",
            cause=f"{path} is a symlink, a file or owned by uid {info.st_uid}",
            hint="remove it, then start the local stack again",
        )
    return True


def install_console(target: Path, node_modules: Path = VENDOR_NODE_MODULES) -> Path:
    """Copy the page and the xterm.js files found into ``target``; return ``target``.

    The directory is rebuilt each time, so a stack started after an upgrade
    serves the new page. Everything is world-readable (public files only):
    nginx workers may run as another user than the stack.

    Args:
        target: the directory to (re)create (:func:`console_dir_for`).
        node_modules: where the npm packages are installed.

    Raises:
        BackendError: ``target`` exists but is not this user's directory.
    """
    if _ours(target):
        shutil.rmtree(target)
    target.mkdir(mode=0o755)  # exclusive: fails if another user slipped one in
    target.chmod(0o755)  # whatever the umask
    vendor = target / "vendor"
    vendor.mkdir(mode=0o755)
    vendor.chmod(0o755)
    page = resources.files(__package__).joinpath(_PAGE).read_bytes()
    (target / _PAGE).write_bytes(page)
    for name, rel in VENDOR_FILES.items():
        source = node_modules / rel
        if source.is_file():
            shutil.copyfile(source, vendor / name)
    for path in (target / _PAGE, *vendor.iterdir()):
        path.chmod(0o644)
    return target


def remove_console(target: Path) -> None:
    """Remove a directory :func:`install_console` made (nothing when it is absent).

    Args:
        target: the directory (:func:`console_dir_for`).

    Raises:
        BackendError: ``target`` exists but is not this user's directory.
    """
    if _ours(target):
        shutil.rmtree(target)


def console_url(proxy_url: str, session_id: str, token: str) -> str:
    """Return the console URL for a session: the proxy's page, id and token in the fragment.

    Args:
        proxy_url: the proxy's base URL, ``http://127.0.0.1:PORT``.
        session_id: the session to open.
        token: the session's token (it stays in the fragment, never sent to a server).
    """
    fragment = urlencode({"id": session_id, "token": token})
    return f"{proxy_url.rstrip('/')}{CONSOLE_PATH}#{fragment}"
