"""``python -m session_runtime``: the same CLI as ``gamgui-session``."""

from __future__ import annotations

import sys

from session_runtime.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
