"""``python -m session_runtime.agent``: run the session agent."""

import sys

from session_runtime.agent.app import main

sys.exit(main())
