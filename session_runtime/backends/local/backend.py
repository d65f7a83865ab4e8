"""LocalBackend: sessions as agent processes on loopback addresses, found by dnsmasq.

Each session is ``python -m session_runtime.agent`` listening on its own
address ``127.A.B.N`` at the agent port, registered as
``<id>.<session domain>`` in the hosts file dnsmasq answers from — the same
name shape the cluster's DNS gives a session pod, so nginx routes both the same
way. The session limit is checked and the address allocated under the state
directory's file lock, so it holds however many processes create at once.
"""

from __future__ import annotations

import builtins
import http.client
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.base import CheckResult, Diagnostic, SessionBackend
from session_runtime.backends.local import dns
from session_runtime.backends.local.identity import (
    Identity,
    blocked_path,
    can_separate_users,
    ensure_session_user,
    remove_session_user,
    script_interpreter,
)
from session_runtime.backends.local.processes import (
    is_alive,
    kill_commands_of,
    port_is_free,
    spawn,
    stop,
)
from session_runtime.backends.local.state import SessionRecord, StackRecord, StateDir
from session_runtime.errors import (
    BackendError,
    BackendUnavailableError,
    SessionLimitError,
    SessionNotFoundError,
    SessionStartError,
)
from session_runtime.ids import DEFAULT_SESSION_ID, validate_session_id
from session_runtime.models import (
    BackendSession,
    CreateRequest,
    ProgressCallback,
    ReapedSession,
    ReapReason,
    SessionStatus,
    report_progress,
)
from session_runtime.settings import WebSocketSettings

__all__ = [
    "LocalBackend",
    "agent_health",
    "default_gam_bin",
    "require_running_stack",
]

#: Host numbers handed to sessions inside the stack's loopback /24.
_HOST_NUMBERS = range(2, 255)
_POLL_S = 0.05
_DNS_REGISTER_TIMEOUT_S = 5.0
#: Variables of the caller that must not leak into an agent's environment.
_SCRUBBED_PREFIXES = ("SESSION_", "WEBSOCKET_", "GAM_CREDENTIALS_DIR", "GAMCFGDIR")
#: The caller's own places, which a session user must not be pointed at.
_SESSION_USER_SCRUBBED = (
    "PWD",
    "OLDPWD",
    "MAIL",
    "XDG_RUNTIME_DIR",
    "XDG_STATE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
)
#: The agent reads its token from the pipe on its stdin: no file, no environment.
_TOKEN_FROM_STDIN = "/dev/fd/0"


def default_gam_bin() -> str:
    """Return the ``gam`` beside this Python (a venv's), else the one on PATH, else ``gam``."""
    beside = Path(sys.executable).parent / "gam"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("gam") or "gam"


def agent_health(address: str, port: int, timeout: float = 1.0) -> dict[str, object] | None:
    """Return the agent's ``/healthz`` JSON, or None if it does not answer 200 with JSON.

    Args:
        address: the agent's loopback address.
        port: the agent's port.
        timeout: seconds for connect and read.
    """
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", naming.HEALTH_PATH)
        response = connection.getresponse()
        body = response.read(65536)
        if response.status != 200:
            return None
        data = json.loads(body)
        return data if isinstance(data, dict) else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        connection.close()


#: Why a session whose agent is gone ended, by status.
_EXIT_REASONS = {
    SessionStatus.FINISHED: "the agent exited",
    SessionStatus.FAILED: "the agent was killed or crashed (no clean stop in its log)",
}


def _stopped_cleanly(log: Path) -> bool:
    """Whether an exited agent's log ends with its ``stopped`` record (SIGTERM, idle exit).

    An agent that was killed or crashed never writes it: that session failed.
    """
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return False
    lines = tail.splitlines()
    # The log is appended to by every agent this id ever had: only the last one counts.
    starts = [i for i, line in enumerate(lines) if '"event": "listening"' in line]
    own = lines[starts[-1] :] if starts else lines[-3:]
    return any('"event": "stopped"' in line for line in own[-3:])


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip()[:300] for line in text.strip().splitlines()[-lines:])


def require_running_stack(state: StateDir) -> StackRecord:
    """Return the stack record when its resolver and proxy are alive.

    Args:
        state: the stack's state directory.

    Raises:
        BackendUnavailableError: the stack is not up, naming the fix.
    """
    stack = state.read_stack()
    if stack is None or not (is_alive(stack.dns) and is_alive(stack.proxy)):
        raise BackendUnavailableError(
            "The local stack is not running",
            cause=f"state directory {state.root}",
            hint="start it with `gamgui-session local up`",
        )
    return stack


class LocalBackend(SessionBackend):
    """Sessions of the local stack rooted at ``state_dir``.

    Args:
        state_dir: the stack's state directory (shared by every process using the stack).
        idle_timeout: seconds an agent waits idle before exiting (0 = never).
        command_timeout: seconds one command may run.
        gam_bin: the GAM executable agents run (default: :func:`default_gam_bin`).
        agent_argv: how to start an agent (default: this Python, ``-m session_runtime.agent``).
    """

    name = "local"

    def __init__(
        self,
        state_dir: Path | str,
        *,
        idle_timeout: float = 1800.0,
        command_timeout: float = 3600.0,
        gam_bin: str | None = None,
        agent_argv: Sequence[str] | None = None,
    ) -> None:
        if idle_timeout < 0 or command_timeout < 0:
            raise ValueError("idle_timeout and command_timeout must be >= 0")
        self.state = StateDir(state_dir)
        self.idle_timeout = idle_timeout
        self.command_timeout = command_timeout
        self.gam_bin = gam_bin or default_gam_bin()
        self.agent_argv = list(agent_argv or [sys.executable, "-m", "session_runtime.agent"])

    # --- SessionBackend -----------------------------------------------------------
    def create(
        self, request: CreateRequest, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Start an agent for ``request.session_id``, or return the running one.

        Args:
            request: id, token, command, credentials secret and the session limit.
            progress: receives ``starting`` and ``registered`` events.

        Raises:
            BackendUnavailableError: the local stack is not running.
            SessionLimitError: ``request.max_sessions`` sessions are already running.
        """
        return self._create(request, progress, is_default=False)

    def wait_ready(
        self, session_id: str, timeout: float, progress: ProgressCallback | None = None
    ) -> BackendSession:
        """Poll the agent's ``/healthz`` until it answers for this session.

        Args:
            session_id: the session.
            timeout: seconds.
            progress: receives a ``waiting`` event, then ``ready``.

        Raises:
            SessionNotFoundError: no such session.
            SessionStartError: the agent exited (with the end of its log) or timed out.
        """
        sid = validate_session_id(session_id)
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            record = self.state.read_session(sid)
            if record is None:
                raise SessionNotFoundError(
                    f"Error joining session: no session {sid!r} in the local stack",
                    hint="create it first (`gamgui-session create --id ...`)",
                )
            if not is_alive(record.process):
                raise SessionStartError(
                    f"Error joining session: the agent of {sid!r} exited while starting",
                    cause=_log_tail(self.state.session_log(sid)) or None,
                    hint=f"see {self.state.session_log(sid)}",
                )
            health = agent_health(record.address, record.port, timeout=1.0)
            if health is not None and health.get("session_id") == sid:
                report_progress(
                    progress, sid, "ready", f"agent answers at {record.address}:{record.port}"
                )
                return self._to_backend(record, SessionStatus.READY)
            if not announced:
                report_progress(
                    progress, sid, "waiting", f"waiting for the agent (pid {record.process.pid})"
                )
                announced = True
            if time.monotonic() >= deadline:
                raise SessionStartError(
                    f"Error joining session: the agent of {sid!r} did not answer within "
                    f"{timeout:g}s",
                    cause=_log_tail(self.state.session_log(sid)) or None,
                    hint=f"see {self.state.session_log(sid)}",
                )
            time.sleep(_POLL_S)

    def get(self, session_id: str) -> BackendSession | None:
        """Return the session with its token and current status, or None.

        Args:
            session_id: the session.
        """
        record = self.state.read_session(validate_session_id(session_id))
        return None if record is None else self._to_backend(record, self._status(record))

    def list(self) -> builtins.list[BackendSession]:
        """Return every session of the stack, oldest first."""
        return [self._to_backend(r, self._status(r)) for r in self.state.list_sessions()]

    def delete(self, session_id: str) -> bool:
        """Stop the session's agent, unregister its name, forget its record and token.

        Args:
            session_id: the session; a missing one is not an error.

        Raises:
            BackendError: the agent would not stop.
        """
        sid = validate_session_id(session_id)
        record = self.state.read_session(sid)
        if record is not None and not stop(record.process):
            raise BackendError(
                f"The agent of session {sid!r} would not stop", cause=f"pid {record.process.pid}"
            )
        if record is not None:
            kill_commands_of(self.state.session_home(sid) / "gamcfg")  # a killed agent's
        with self.state.locked():
            current = self.state.read_session(sid)
            if current is not None and (record is None or current.process != record.process):
                # (Re-)created meanwhile by another caller: that session stays.
                return record is not None
            removed = self.state.remove_session(sid)
            if can_separate_users():
                remove_session_user(self.state.root, sid)
            self._sync_dns()
        return removed

    def reap(
        self, *, idle_timeout: float, max_lifetime: float, now: datetime, dry_run: bool = False
    ) -> builtins.list[ReapedSession]:
        """Remove sessions whose agent exited, that outlived ``max_lifetime`` or idled too long.

        The default session is never reaped unless its agent exited.

        Args:
            idle_timeout: seconds since the agent's ``last_activity``.
            max_lifetime: seconds since creation.
            now: the current time (timezone-aware).
            dry_run: report without removing.
        """
        reaped = []
        for record in self.state.list_sessions():
            why = self._reap_reason(record, idle_timeout, max_lifetime, now)
            if why is None:
                continue
            code, reason, idle_since = why
            removed = False
            if not dry_run:
                removed = self.delete(record.session_id)
            reaped.append(
                ReapedSession(
                    session_id=record.session_id,
                    reason=reason,
                    reason_code=code,
                    removed=removed,
                    idle_since=idle_since,
                )
            )
        return reaped

    def endpoints(self, settings: WebSocketSettings) -> WebSocketSettings:
        """Point the proxy URL and connection template at the running local stack.

        The stack's proxy listens on a port chosen when it started, so the URLs
        come from its state directory unless the environment set them explicitly
        (pydantic's ``model_fields_set``). When the stack is not running, the
        settings are returned unchanged.

        Args:
            settings: the runtime's settings.
        """
        explicit = settings.model_fields_set
        if {"proxy_service_url", "session_connection_template"} <= explicit:
            return settings
        proxy_url = self._proxy_url()
        if proxy_url is None:
            return settings
        base = proxy_url.rstrip("/")
        ws_base = "ws://" + base.split("://", 1)[1]
        update: dict[str, object] = {}
        if "proxy_service_url" not in explicit:
            update["proxy_service_url"] = base
        if "session_connection_template" not in explicit:
            update["session_connection_template"] = ws_base + settings.session_path_template
        return settings.model_copy(update=update)

    def _proxy_url(self) -> str | None:
        from session_runtime.backends.local.stack import LocalStack  # noqa: PLC0415 - a cycle

        return LocalStack(self.state.root).proxy_url()

    def preflight(self) -> None:
        """Raise unless the local stack's resolver and proxy are running.

        Raises:
            BackendUnavailableError: naming ``gamgui-session local up``.
        """
        require_running_stack(self.state)

    def diagnostics(self, settings: WebSocketSettings) -> builtins.list[Diagnostic]:
        """Return doctor's one local check: the stack (nginx and dnsmasq) runs."""

        def local_stack() -> CheckResult:
            require_running_stack(self.state)  # raises with the fix when it is down
            return True, f"running; proxy at {self._proxy_url()}", None

        return [Diagnostic("local-stack", local_stack, gate=True)]

    # --- used by LocalStack -----------------------------------------------------------
    def create_default(self, token: str, progress: ProgressCallback | None = None) -> None:
        """Start the always-available default session (no limit, no idle timeout).

        Args:
            token: the default session's token.
            progress: receives progress events.
        """
        request = CreateRequest(
            session_id=DEFAULT_SESSION_ID,
            token=SecretStr(token),
            credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
            max_sessions=1,
        )
        self._create(request, progress, is_default=True)

    # --- internals --------------------------------------------------------------------
    def _create(
        self, request: CreateRequest, progress: ProgressCallback | None, *, is_default: bool
    ) -> BackendSession:
        sid = validate_session_id(request.session_id)
        with self.state.locked():
            stack = self._running_stack()
            existing = self.state.read_session(sid)
            if existing is not None and is_alive(existing.process):
                return self._to_backend(existing, self._status(existing))
            if existing is not None:
                self.state.remove_session(sid)  # its agent exited: start afresh
            if not is_default:
                running = [
                    r
                    for r in self.state.list_sessions()
                    if not r.is_default and is_alive(r.process)
                ]
                if len(running) >= request.max_sessions:
                    raise SessionLimitError(
                        request.max_sessions,
                        cause=f"{len(running)} sessions are running in the local stack",
                    )
            address = self._allocate_address(stack)
            record = self._start_agent(request, address, stack, is_default=is_default)
            report_progress(progress, sid, "starting", f"agent started (pid {record.process.pid})")
            self._sync_dns(stack)
        self._await_dns(stack, sid, address)
        report_progress(progress, sid, "registered", f"{sid}.{stack.session_domain} -> {address}")
        return self._to_backend(record, SessionStatus.STARTING).model_copy(update={"created": True})

    def _running_stack(self) -> StackRecord:
        return require_running_stack(self.state)

    def _allocate_address(self, stack: StackRecord) -> str:
        used = {r.address for r in self.state.list_sessions()}
        for number in _HOST_NUMBERS:
            address = f"{stack.subnet}.{number}"
            if address not in used and port_is_free(address, naming.AGENT_PORT):
                return address
        raise BackendError(
            "No free loopback address for another local session",
            cause=f"{stack.subnet}.0/24 is full",
            hint="close sessions or run `gamgui-session reap`",
        )

    def runtime_blocker(self) -> str | None:
        """Why a session user could not run this backend's agent and GAM, or None.

        Every directory down to the agent's program, GAM and the interpreters their
        ``#!`` lines name must be searchable by other users (a checkout or a Python
        under a 0700 ``/root`` is not).
        """
        needed = []
        for program in (self.agent_argv[0], self.gam_bin):
            path = shutil.which(program) or program
            interpreter = script_interpreter(path)
            needed += [path, *([interpreter] if interpreter else [])]
        for path in needed:
            blocked = blocked_path(path)
            if blocked is not None:
                return f"session users cannot reach {path} ({blocked} is not searchable by others)"
        return None

    def _prepare_home(
        self, request: CreateRequest, identity: Identity | None
    ) -> tuple[Path, Path | None]:
        """Create the session's home (0700, the session user's) and its credentials copy.

        Returns:
            The home and the credentials directory to hand to the agent (or None).
        """
        sid = request.session_id
        home = self.state.session_home(sid)
        gamcfg = home / "gamcfg"
        gamcfg.mkdir(mode=0o700, parents=True, exist_ok=True)
        source = self.state.credentials_dir / (request.credentials_secret or "")
        credentials = source if request.credentials_secret and source.is_dir() else None
        if identity is not None:
            if credentials is not None:
                # The agent cannot read the stack's credentials dir: a copy of its own,
                # readable by the session user only (the agent copies it into GAMCFGDIR).
                copy = home / "credentials"
                shutil.rmtree(copy, ignore_errors=True)
                copy.mkdir(mode=0o700)
                for item in source.iterdir():
                    if item.is_file():
                        target = copy / item.name
                        shutil.copyfile(item, target)
                        os.chown(target, identity.uid, identity.gid)
                        os.chmod(target, 0o600)
                os.chown(copy, identity.uid, identity.gid)
                credentials = copy
            for path in (gamcfg, home):
                os.chown(path, identity.uid, identity.gid)
                os.chmod(path, 0o700)
        return home, credentials

    def _agent_env(
        self,
        request: CreateRequest,
        address: str,
        *,
        is_default: bool,
        home: Path,
        credentials: Path | None,
        identity: Identity | None,
        audit_fd: int | None = None,
    ) -> dict[str, str]:
        sid = request.session_id
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(_SCRUBBED_PREFIXES)
        }
        if identity is not None:
            for key in _SESSION_USER_SCRUBBED:
                env.pop(key, None)
            env.update({"HOME": str(home), "USER": identity.name, "LOGNAME": identity.name})
        env.update(
            {
                naming.ENV_SESSION_ID: sid,
                naming.ENV_SESSION_TOKEN_FILE: _TOKEN_FROM_STDIN,
                naming.ENV_AGENT_HOST: address,
                naming.ENV_AGENT_PORT: str(naming.AGENT_PORT),
                naming.ENV_GAM_BIN: self.gam_bin,
                naming.ENV_IDLE_TIMEOUT: "0" if is_default else f"{self.idle_timeout:g}",
                naming.ENV_COMMAND_TIMEOUT: f"{self.command_timeout:g}",
                naming.ENV_GAMCFGDIR: str(home / "gamcfg"),
                naming.ENV_AUDIT_FILE: str(self.state.audit_log)
                if audit_fd is None
                else f"/dev/fd/{audit_fd}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if request.command:
            env[naming.ENV_SESSION_COMMAND] = request.command
        if credentials is not None:
            env[naming.ENV_CREDENTIALS_DIR] = str(credentials)
        return env

    def _open_audit_log(self) -> int:
        """Open the stack's audit file for appending (created 0600 for the stack's owner)."""
        return os.open(
            self.state.audit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )

    def _session_identity(self, stack: StackRecord, sid: str) -> Identity | None:
        """The session's own user when the stack separates users (fail closed), else None."""
        if not stack.session_users:
            return None
        blocker = self.runtime_blocker()
        if blocker is not None:
            raise SessionStartError(
                f"Error joining session: {sid!r} cannot run as its own user",
                cause=blocker,
                hint="install the agent and GAM where every user can read them "
                "(see docs/local-stack.md, 'Isolation')",
            )
        return ensure_session_user(self.state.root, sid, self.state.session_home(sid))

    def _start_agent(
        self, request: CreateRequest, address: str, stack: StackRecord, *, is_default: bool
    ) -> SessionRecord:
        sid = request.session_id
        token = request.token.get_secret_value()
        self.state.write_token(sid, token)  # the stack's copy (root only when separated)
        try:
            identity = self._session_identity(stack, sid)
            home, credentials = self._prepare_home(request, identity)
            # A session's own user cannot open the stack's audit file: hand it over open.
            audit_fd = None if identity is None else self._open_audit_log()
            try:
                env = self._agent_env(
                    request,
                    address,
                    is_default=is_default,
                    home=home,
                    credentials=credentials,
                    identity=identity,
                    audit_fd=audit_fd,
                )
                process = spawn(
                    self.agent_argv,
                    env=env,
                    log_path=self.state.session_log(sid),
                    cwd=home,
                    identity=identity,
                    stdin_data=token.encode() + b"\n",  # a pipe the agent reads once
                    pass_fds=() if audit_fd is None else (audit_fd,),
                )
            finally:
                if audit_fd is not None:
                    os.close(audit_fd)
        except (BackendError, SessionStartError):
            self.state.remove_session(sid)
            raise
        except OSError as exc:
            self.state.remove_session(sid)
            raise BackendError(
                f"Could not start the agent of session {sid!r}", cause=str(exc)
            ) from None
        record = SessionRecord(
            session_id=sid,
            address=address,
            port=naming.AGENT_PORT,
            process=process,
            created_at=datetime.now(UTC),
            command=request.command,
            credentials_secret=request.credentials_secret,
            is_default=is_default,
        )
        self.state.write_session(record)
        return record

    def _sync_dns(self, stack: StackRecord | None = None) -> None:
        """Rewrite the hosts file from the session records and tell dnsmasq (lock held)."""
        stack = stack or self.state.read_stack()
        domain = stack.session_domain if stack else naming.session_domain()
        entries = [(r.address, f"{r.session_id}.{domain}") for r in self.state.list_sessions()]
        gid = stack.service_gid if stack else None
        mode = 0o600 if gid is None else 0o640  # dnsmasq re-reads it as the stack user
        self.state.write_text(self.state.hosts_path, dns.render_hosts(entries), mode, gid)
        if stack is not None and is_alive(stack.dns):
            dns.reload(stack.dns)

    def _await_dns(self, stack: StackRecord, sid: str, address: str) -> None:
        """Wait until dnsmasq answers the new name (SIGHUP is handled asynchronously)."""
        name = f"{sid}.{stack.session_domain}"
        deadline = time.monotonic() + _DNS_REGISTER_TIMEOUT_S
        while time.monotonic() < deadline:
            if dns.query_a(("127.0.0.1", stack.dns_port), name) == address:
                return
            time.sleep(_POLL_S)
        raise BackendError(
            f"dnsmasq did not register session {sid!r}",
            cause=f"{name} does not resolve to {address}",
            hint=f"see {self.state.logs_dir / 'dnsmasq.log'}",
        )

    def _status(self, record: SessionRecord) -> SessionStatus:
        if not is_alive(record.process):
            if _stopped_cleanly(self.state.session_log(record.session_id)):
                return SessionStatus.FINISHED
            return SessionStatus.FAILED
        health = agent_health(record.address, record.port, timeout=0.5)
        return SessionStatus.READY if health is not None else SessionStatus.STARTING

    def _to_backend(self, record: SessionRecord, status: SessionStatus) -> BackendSession:
        token = self.state.read_token(record.session_id) or ""
        return BackendSession(
            session_id=record.session_id,
            token=SecretStr(token),
            status=status,
            created_at=record.created_at,
            command=record.command,
            credentials_secret=record.credentials_secret,
            agent_address=f"{record.address}:{record.port}",
            reason=_EXIT_REASONS.get(status),
        )

    def _reap_reason(
        self, record: SessionRecord, idle_timeout: float, max_lifetime: float, now: datetime
    ) -> tuple[ReapReason, str, datetime | None] | None:
        if not is_alive(record.process):
            status = self._status(record)
            code = ReapReason.FAILED if status == SessionStatus.FAILED else ReapReason.FINISHED
            return code, f"{status.value}: {_EXIT_REASONS.get(status, 'the agent exited')}", None
        if record.is_default:
            return None
        age = (now - record.created_at).total_seconds()
        if age > max_lifetime:
            return ReapReason.LIFETIME_EXCEEDED, f"expired: older than {max_lifetime:g}s", None
        health = agent_health(record.address, record.port, timeout=1.0)
        last = health.get("last_activity") if health else None
        if isinstance(last, int | float) and now.timestamp() - float(last) > idle_timeout:
            since = datetime.fromtimestamp(float(last), UTC)
            return (
                ReapReason.IDLE,
                f"idle: no activity since {since:%Y-%m-%dT%H:%M:%SZ} (more than {idle_timeout:g}s)",
                since,
            )
        return None
