"""gamgui WebSocket session runtime: create, use and close GAM sessions.

Importable by the gamgui server without Pulumi. The public surface is
:class:`~session_runtime.manager.SessionManager`, the settings and the errors.
"""

__version__ = "0.1.0"
