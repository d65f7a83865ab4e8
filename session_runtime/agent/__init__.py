"""The session agent: the WebSocket server in every session pod that runs GAM.

Run it with ``python -m session_runtime.agent``; it is configured by the
environment variables named in :mod:`session_runtime.naming` (``ENV_*``).
Modules: ``config`` (environment), ``log`` (JSON lines), ``credentials``
(copying the read-only mount), ``runner`` (one process, streamed with
backpressure), ``replay`` (a command's numbered frames, bounded in bytes),
``live`` (a command as its attached clients see it), ``inbox`` (a command's
input in arrival order), ``clients`` (who is on a connection), ``observe``
(the events audit and metrics hear), ``session`` (state shared by
connections), ``server`` (HTTP, auth, WebSocket handling), ``app``
(start-up, signals, idle exit), and the observers: ``audit`` (audit lines),
``metrics`` (Prometheus, ``/metrics``) and ``telemetry`` (both behind the
one observer interface).
"""

from session_runtime import __version__ as AGENT_VERSION

__all__ = ["AGENT_VERSION"]
