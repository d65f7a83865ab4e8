"""``python -m session_runtime.agent``: run the session agent."""

import sys

from session_runtime.agent.hardening import make_undumpable

# Before the token is read: from here on GAM (same uid) cannot read our memory.
make_undumpable()

from session_runtime.agent.app import main  # noqa: E402 - after the process is hardened

sys.exit(main())
