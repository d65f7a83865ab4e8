"""The local stack's state directory: every fact shared by separate processes.

CLI invocations, test processes and server processes all open the same
directory, so nothing that matters lives in memory: the stack record (pids and
ports), one JSON record per session, tokens in files of mode 0600, logs, the
nginx prefix and the dnsmasq hosts file. Mutations happen under one exclusive
``fcntl`` lock on ``state.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from session_runtime.errors import BackendError
from session_runtime.ids import is_valid_session_id, validate_session_id

__all__ = [
    "ProcessRecord",
    "SessionRecord",
    "StackRecord",
    "StateDir",
]

_M = TypeVar("_M", bound=BaseModel)


class ProcessRecord(BaseModel):
    """One process the stack started: enough to find it again and to prove it is ours."""

    model_config = ConfigDict(frozen=True)

    pid: int
    #: Kernel start time (clock ticks since boot), so a reused pid is never mistaken for ours.
    start_ticks: int | None = None
    argv0: str


class StackRecord(BaseModel):
    """What ``up`` started: the resolver and the proxy, their ports, the session subnet."""

    model_config = ConfigDict(frozen=True)

    dns: ProcessRecord
    dns_port: int
    proxy: ProcessRecord
    proxy_port: int
    #: The first three octets of the loopback /24 the sessions live on, e.g. ``127.31.7``.
    subnet: str
    session_domain: str
    started_at: datetime
    #: True when every session runs as its own Unix user (the stack was started as root
    #: and session users can reach the agent and GAM); False: one shared identity.
    session_users: bool = False
    #: Why sessions share one identity (shown by ``local up`` and ``status``); None if not.
    shared_identity_reason: str | None = None
    #: The group that may read the DNS hosts file (dnsmasq's, as root); None: the owner's.
    service_gid: int | None = None


class SessionRecord(BaseModel):
    """One session's agent process, its address, and what it was started with."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    address: str
    port: int
    process: ProcessRecord
    created_at: datetime
    command: str | None = None
    credentials_secret: str | None = None
    is_default: bool = False


def _write_atomic(path: Path, data: str, mode: int = 0o600, gid: int | None = None) -> None:
    """Write ``data`` so readers see the old or the new file, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class StateDir:
    """Paths and records under one state directory (created with mode 0700).

    Args:
        root: the directory; created on first use.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()

    # --- layout -----------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.root / "state.lock"

    @property
    def stack_path(self) -> Path:
        return self.root / "stack.json"

    @property
    def sessions_dir(self) -> Path:
        return self.root / "sessions"

    @property
    def tokens_dir(self) -> Path:
        return self.root / "tokens"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def nginx_dir(self) -> Path:
        return self.root / "nginx"

    @property
    def dns_dir(self) -> Path:
        return self.root / "dns"

    @property
    def hosts_path(self) -> Path:
        return self.dns_dir / "hosts"

    @property
    def credentials_dir(self) -> Path:
        """Local stand-in for credential Secrets: ``credentials/<secret name>/``."""
        return self.root / "credentials"

    def session_home(self, session_id: str) -> Path:
        """A session's private directory (its GAM config lives here)."""
        return self.root / "homes" / validate_session_id(session_id)

    def session_log(self, session_id: str) -> Path:
        return self.logs_dir / f"session-{validate_session_id(session_id)}.log"

    @property
    def audit_log(self) -> Path:
        """The audit lines of every session of the stack (``SESSION_AUDIT_FILE``), kept after
        the sessions are gone."""
        return self.logs_dir / "audit.jsonl"

    def ensure(self) -> None:
        """Create the directory tree, private to the current user.

        The root and ``homes/`` may be 0711 (see :meth:`open_homes`): searchable,
        not listable, so a session user reaches its own home and nothing else.
        """
        for path in (
            self.root,
            self.sessions_dir,
            self.tokens_dir,
            self.logs_dir,
            self.nginx_dir,
            self.dns_dir,
            self.root / "homes",
        ):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(self.root.stat().st_mode) not in (0o700, 0o711):
            os.chmod(self.root, 0o700)

    @property
    def homes_dir(self) -> Path:
        return self.root / "homes"

    def open_homes(self, *, shared: bool) -> None:
        """Make the root and ``homes/`` searchable by others (0711) or private again (0700).

        Args:
            shared: True when sessions run as their own users and must reach their homes.
        """
        self.ensure()
        for path in (self.root, self.homes_dir):
            os.chmod(path, 0o711 if shared else 0o700)

    # --- locking ----------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive cross-process lock for the duration of the block."""
        self.ensure()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # --- stack record -------------------------------------------------------------
    def read_stack(self) -> StackRecord | None:
        """Return the stack record, or None when the stack is not up."""
        return self._read(self.stack_path, StackRecord)

    def write_stack(self, record: StackRecord) -> None:
        _write_atomic(self.stack_path, record.model_dump_json(indent=2))

    def clear_stack(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.stack_path.unlink()

    # --- sessions -----------------------------------------------------------------
    def _session_path(self, session_id: str) -> Path:
        return self.sessions_dir / f"{validate_session_id(session_id)}.json"

    def _token_path(self, session_id: str) -> Path:
        return self.tokens_dir / validate_session_id(session_id)

    def token_path(self, session_id: str) -> Path:
        """The session's token file (mode 0600), handed to its agent."""
        return self._token_path(session_id)

    def read_session(self, session_id: str) -> SessionRecord | None:
        return self._read(self._session_path(session_id), SessionRecord)

    def write_session(self, record: SessionRecord) -> None:
        """Store the session's record."""
        _write_atomic(self._session_path(record.session_id), record.model_dump_json(indent=2))

    def write_token(self, session_id: str, token: str) -> None:
        """Store the session's token in a file of mode 0600."""
        _write_atomic(self._token_path(session_id), token + "\n", 0o600)

    def read_token(self, session_id: str) -> str | None:
        try:
            return self._token_path(session_id).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def remove_session(self, session_id: str) -> bool:
        """Forget the session's record, token and home (its GAM config); True if any existed."""
        existed = False
        home = self.session_home(session_id)
        if home.exists():
            shutil.rmtree(home, ignore_errors=True)
            existed = True
        for path in (self._session_path(session_id), self._token_path(session_id)):
            try:
                path.unlink()
                existed = True
            except FileNotFoundError:
                pass
        return existed

    def list_sessions(self) -> list[SessionRecord]:
        """Every session record, oldest first."""
        records = []
        if not self.sessions_dir.is_dir():
            return []
        for path in self.sessions_dir.glob("*.json"):
            if not is_valid_session_id(path.stem):
                continue
            record = self._read(path, SessionRecord)
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda r: (r.created_at, r.session_id))

    # --- helpers ------------------------------------------------------------------
    @staticmethod
    def _read(path: Path, model: type[_M]) -> _M | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return model.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise BackendError(
                "The local stack's state is damaged",
                cause=f"{path}: {type(exc).__name__}",
                hint="run `gamgui-session local down`, then remove the state directory",
            ) from None

    def write_text(self, path: Path, text: str, mode: int = 0o600, gid: int | None = None) -> None:
        """Atomically write a file inside the state directory (group ``gid`` if given)."""
        _write_atomic(path, text, mode, gid)
