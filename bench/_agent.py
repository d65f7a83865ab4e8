"""Run the session agent with its per-session connection limit raised (benchmark only).

The agent reads everything from its environment (``load_config``) but keeps the
most connections per session at a built-in default; the scale benchmark needs
thousands of connections on a few sessions, so this launcher takes the limit from
``BENCH_AGENT_MAX_CONNECTIONS`` and otherwise runs exactly ``run_agent``.

    BENCH_AGENT_MAX_CONNECTIONS=500 SESSION_ID=... python bench/_agent.py
"""

from __future__ import annotations

import asyncio
import os
import sys

from session_runtime.agent.app import run_agent
from session_runtime.agent.config import load_config

__all__ = ["ENV_MAX_CONNECTIONS", "main"]

ENV_MAX_CONNECTIONS = "BENCH_AGENT_MAX_CONNECTIONS"


def main() -> int:
    """Load the agent's configuration, raise the connection limit, serve."""
    config = load_config()
    raw = os.environ.get(ENV_MAX_CONNECTIONS, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            print(f"{ENV_MAX_CONNECTIONS} must be a positive integer", file=sys.stderr)
            return 2
        config = config.model_copy(update={"max_connections": int(raw)})
    return asyncio.run(run_agent(config))


if __name__ == "__main__":
    raise SystemExit(main())
