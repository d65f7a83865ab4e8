"""The console page: a reference browser client served by the local stack at ``/console/``.

The page itself is one file, ``index.html`` (HTML and inline JavaScript, no build
step), packaged with this module. It needs xterm.js and its fit addon, which
``scripts/bootstrap.sh`` installs from the npm registry into
:data:`VENDOR_NODE_MODULES`. :func:`install_console` puts the page and those files
into one directory the stack's nginx serves; when xterm.js is missing the page
still loads and says how to install it.

The session id and token travel in the URL *fragment* (``#id=...&token=...``),
which browsers never send to a server, so they land in no access log.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from urllib.parse import urlencode

__all__ = [
    "CONSOLE_DIR_NAME",
    "CONSOLE_PATH",
    "VENDOR_FILES",
    "VENDOR_NODE_MODULES",
    "console_url",
    "install_console",
    "missing_vendor_files",
]

#: Where the proxy serves the page (local stack only).
CONSOLE_PATH = "/console/"
#: The served directory's name inside the local stack's state directory. Not in nginx's
#: private prefix: nginx workers may run as an unprivileged user who must read it.
CONSOLE_DIR_NAME = "console"
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


def install_console(target: Path, node_modules: Path = VENDOR_NODE_MODULES) -> Path:
    """Copy the page and the xterm.js files found into ``target``; return ``target``.

    The directory is rebuilt each time, so a stack started after an upgrade
    serves the new page. Files are world-readable: nginx workers may run as
    another user than the stack.

    Args:
        target: the directory to (re)create, e.g. inside the stack's nginx prefix.
        node_modules: where the npm packages are installed.
    """
    if target.exists():
        shutil.rmtree(target)
    vendor = target / "vendor"
    vendor.mkdir(mode=0o755, parents=True)
    target.chmod(0o755)
    page = resources.files(__package__).joinpath(_PAGE).read_bytes()
    (target / _PAGE).write_bytes(page)
    for name, rel in VENDOR_FILES.items():
        source = node_modules / rel
        if source.is_file():
            shutil.copyfile(source, vendor / name)
    for path in (target / _PAGE, *vendor.iterdir()):
        path.chmod(0o644)
    return target


def console_url(proxy_url: str, session_id: str, token: str) -> str:
    """Return the console URL for a session: the proxy's page, id and token in the fragment.

    Args:
        proxy_url: the proxy's base URL, ``http://127.0.0.1:PORT``.
        session_id: the session to open.
        token: the session's token (it stays in the fragment, never sent to a server).
    """
    fragment = urlencode({"id": session_id, "token": token})
    return f"{proxy_url.rstrip('/')}{CONSOLE_PATH}#{fragment}"
