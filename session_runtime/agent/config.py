"""The agent's configuration, read once from the environment and validated.

Every variable name comes from :mod:`session_runtime.naming`; a bad value stops
the agent at start-up with a :class:`~session_runtime.errors.SettingsError`
naming the variable. The token is held as a ``SecretStr`` and never printed.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, ConfigDict, SecretStr

from session_runtime import naming
from session_runtime.errors import InvalidSessionIdError, SettingsError
from session_runtime.ids import validate_session_id
from session_runtime.protocol import GamMode

__all__ = [
    "DEFAULT_COMMAND_TIMEOUT_S",
    "DEFAULT_GAM_MODE",
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_REPLAY_BYTES",
    "MAX_CONNECTIONS_LIMIT",
    "MAX_REPLAY_BYTES",
    "AgentConfig",
    "TokenSpentError",
    "load_config",
]

DEFAULT_IDLE_TIMEOUT_S = 0.0
DEFAULT_COMMAND_TIMEOUT_S = 3600.0
#: Fork GAM from a zygote when GAM_BIN is the installed Python GAM (cold otherwise).
DEFAULT_GAM_MODE: GamMode = "warm"
#: Connections one session accepts at once: a user's tabs, not a crowd.
DEFAULT_MAX_CONNECTIONS = 8
MAX_CONNECTIONS_LIMIT = 10_000
#: Bytes of each command's messages kept for clients that attach (or re-attach) later.
DEFAULT_REPLAY_BYTES = 4 * 1024 * 1024
MAX_REPLAY_BYTES = 1024 * 1024 * 1024
_MAX_TOKEN_BYTES = 4096


class TokenSpentError(SettingsError):
    """The token hand-off on a memory volume is empty: this container already read it.

    In a pod the hand-off runs once per pod, so a restarted agent container finds
    nothing; only a new pod gets a token. The agent exits with
    :data:`~session_runtime.naming.AGENT_EXIT_TOKEN_SPENT` so the reaper can tell.
    """


class AgentConfig(BaseModel):
    """Everything the agent needs; built by :func:`load_config`."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    token: SecretStr
    host: str = "0.0.0.0"  # noqa: S104 - a pod listens on its own IP
    port: int = naming.AGENT_PORT
    gam_bin: str = "gam"
    initial_command: str | None = None
    #: Seconds without client activity or a running command before exiting; 0 = never.
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    #: Seconds a single command may run before it is terminated; 0 = no limit.
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S
    credentials_dir: Path | None = None
    gam_config_dir: Path
    #: Most simultaneous WebSocket connections to this session.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: Seconds between keep-alive pings; well under a proxy's read timeout.
    ping_interval_s: float = 20.0
    #: Seconds between SIGTERM and SIGKILL when a command is cancelled.
    kill_grace_s: float = 5.0
    #: Bytes of each retained command's messages kept for replay (oldest dropped first).
    replay_bytes: int = DEFAULT_REPLAY_BYTES
    #: Seconds a command with no client attached keeps running before it is cancelled;
    #: 0 = never (the command timeout still applies). Default: the idle timeout.
    detach_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    #: ``warm`` asks for the GAM zygote; the launcher falls back to cold where it cannot.
    gam_mode: GamMode = DEFAULT_GAM_MODE
    #: A file audit lines are appended to, besides stdout (the local stack sets it).
    audit_file: Path | None = None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(
            f"{name} must be a number of seconds", cause=f"got {raw[:40]!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{name} must be a finite number >= 0", cause=f"got {raw[:40]!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise SettingsError(
            f"{name} must be an integer from 1 to {high}", cause=f"got {raw[:40]!r}"
        )
    return int(raw)


def _port(env: Mapping[str, str]) -> int:
    raw = env.get(naming.ENV_AGENT_PORT, "").strip()
    if not raw:
        return naming.AGENT_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SettingsError(
            f"{naming.ENV_AGENT_PORT} must be a TCP port (1-65535)", cause=f"got {raw[:40]!r}"
        )
    return int(raw)


def _gam_mode(env: Mapping[str, str]) -> GamMode:
    raw = env.get(naming.ENV_GAM_MODE, "").strip().lower()
    if not raw:
        return DEFAULT_GAM_MODE
    for mode in get_args(GamMode):
        if raw == mode:
            return mode  # type: ignore[no-any-return]
    raise SettingsError(
        f"{naming.ENV_GAM_MODE} must be one of {', '.join(get_args(GamMode))}",
        cause=f"got {raw[:40]!r}",
    )


#: File systems whose files live only in memory: a token there is deleted once read.
_MEMORY_FS_TYPES = frozenset({"tmpfs", "ramfs"})
_FD_PATH = re.compile(r"^/(?:dev|proc/self)/fd/(\d+)$")


def _mount_fs_type(path: Path) -> str | None:
    """Return the file-system type of the mount holding ``path`` (Linux mountinfo)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    target, best, fs_type = str(path.parent.resolve()), -1, None
    for line in lines:
        before, _, after = line.partition(" - ")
        fields = before.split()
        if len(fields) < 5 or not after:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > best:
            best, fs_type = len(mount_point), after.split()[0]
    return fs_type


def _read_token_once(path: str) -> str:
    """Read the token file, then leave nothing behind that GAM (same uid) could read.

    A ``/dev/fd/N`` pipe (the local stack's hand-off) is closed; a file on a
    memory-backed volume (the pod's hand-off ``emptyDir``) is deleted. A file
    elsewhere is left alone: it belongs to whoever wrote it.
    """
    fd = _FD_PATH.fullmatch(path)
    if fd is None and not Path(path).exists() and _mount_fs_type(Path(path)) in _MEMORY_FS_TYPES:
        raise TokenSpentError(
            f"{naming.ENV_SESSION_TOKEN_FILE} was already read: this container restarted",
            cause=f"{path} is gone from its memory volume",
            hint="a pod's token is handed over once per pod; the reaper replaces a "
            "default-session pod in this state, or delete the pod",
        )
    try:
        if fd is not None:  # read the descriptor itself: no /proc lookup, then it is closed
            with os.fdopen(int(fd.group(1)), "rb", closefd=True) as handle:
                token = handle.read(_MAX_TOKEN_BYTES + 1).decode("utf-8").strip()
        else:
            token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"{naming.ENV_SESSION_TOKEN_FILE} cannot be read",
            cause=f"{path}: {type(exc).__name__}",
            hint="a pod's token is handed over once per container start: delete the pod "
            "to get a fresh one",
        ) from None
    if fd is None and _mount_fs_type(Path(path)) in _MEMORY_FS_TYPES:
        try:
            Path(path).unlink()
        except OSError as exc:
            raise SettingsError(
                f"{naming.ENV_SESSION_TOKEN_FILE} could not be removed after reading",
                cause=f"{path}: {exc.strerror}",
                hint="mount the token hand-off volume writable (an emptyDir, medium Memory)",
            ) from None
    return token


def _token(env: Mapping[str, str]) -> SecretStr:
    path = env.get(naming.ENV_SESSION_TOKEN_FILE, "").strip()
    if path:
        token = _read_token_once(path)
        source = naming.ENV_SESSION_TOKEN_FILE
    else:
        token = env.get(naming.ENV_SESSION_TOKEN, "").strip()
        source = naming.ENV_SESSION_TOKEN
    if not token:
        raise SettingsError(
            "The agent refuses to start without a session token",
            cause=f"{naming.ENV_SESSION_TOKEN_FILE} and {naming.ENV_SESSION_TOKEN} are unset "
            "or empty",
            hint="the session spec mounts the token Secret and sets SESSION_TOKEN_FILE",
        )
    if len(token.encode()) > _MAX_TOKEN_BYTES or not token.isprintable() or " " in token:
        raise SettingsError(
            f"{source} must be one printable word of at most {_MAX_TOKEN_BYTES} bytes"
        )
    return SecretStr(token)


def _gam_config_dir(env: Mapping[str, str]) -> Path:
    raw = env.get(naming.ENV_GAMCFGDIR, "").strip()
    path = Path(raw) if raw else Path(tempfile.mkdtemp(prefix="gamgui-gamcfg-"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"{naming.ENV_GAMCFGDIR} cannot be created", cause=f"{path}: {exc.strerror}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SettingsError(
            f"{naming.ENV_GAMCFGDIR} must be a writable directory",
            cause=str(path),
            hint="mount an emptyDir (medium: Memory) there",
        )
    return path


def load_config(env: Mapping[str, str] | None = None) -> AgentConfig:
    """Build the configuration from environment variables.

    Args:
        env: the environment; ``os.environ`` when omitted.

    Raises:
        SettingsError: a variable is missing or invalid; the message names it.
    """
    env = os.environ if env is None else env
    raw_id = env.get(naming.ENV_SESSION_ID, "").strip()
    if not raw_id:
        raise SettingsError(f"{naming.ENV_SESSION_ID} is required")
    try:
        session_id = validate_session_id(raw_id)
    except InvalidSessionIdError as exc:
        raise SettingsError(
            f"{naming.ENV_SESSION_ID} is invalid", cause=exc.message, hint=exc.hint
        ) from None
    token = _token(env)
    credentials = env.get(naming.ENV_CREDENTIALS_DIR, "").strip()
    initial = env.get(naming.ENV_SESSION_COMMAND, "").strip()
    idle_timeout = _number(env, naming.ENV_IDLE_TIMEOUT, DEFAULT_IDLE_TIMEOUT_S)
    audit_file = env.get(naming.ENV_AUDIT_FILE, "").strip()
    return AgentConfig(
        session_id=session_id,
        token=token,
        host=env.get(naming.ENV_AGENT_HOST, "").strip() or "0.0.0.0",  # noqa: S104
        port=_port(env),
        gam_bin=env.get(naming.ENV_GAM_BIN, "").strip() or "gam",
        initial_command=initial or None,
        idle_timeout_s=idle_timeout,
        detach_timeout_s=_number(env, naming.ENV_DETACH_TIMEOUT, idle_timeout),
        command_timeout_s=_number(env, naming.ENV_COMMAND_TIMEOUT, DEFAULT_COMMAND_TIMEOUT_S),
        credentials_dir=Path(credentials) if credentials else None,
        gam_config_dir=_gam_config_dir(env),
        max_connections=_count(
            env, naming.ENV_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS_LIMIT
        ),
        replay_bytes=_count(env, naming.ENV_REPLAY_BYTES, DEFAULT_REPLAY_BYTES, MAX_REPLAY_BYTES),
        gam_mode=_gam_mode(env),
        audit_file=Path(audit_file) if audit_file else None,
    )
