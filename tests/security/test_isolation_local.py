"""On the real local stack started as root, session alice reaches nothing of bob's or the stack's.

alice and bob run the real GAM. Every file feature of GAM that reads or writes
a path a user chooses is pointed from alice at bob's token, home, GAM config
and credentials, at the stack's records, config and logs, at other processes'
memory and at root-only files: each fails with GAM's own error, bob's files are
byte for byte unchanged and bob's session still runs GAM. Add a case to
:data:`CASES` for every new GAM file feature found.

Identities come from ``/proc``: each agent and its GAM under a distinct uid of
the session range, nginx workers and dnsmasq as the stack user.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.local import LocalBackend, LocalStack
from session_runtime.backends.local.identity import SESSION_UID_RANGE, STACK_USER
from session_runtime.client import SessionConnection
from session_runtime.ids import generate_session_id
from session_runtime.models import CommandResult, CreateRequest
from tests.security.conftest import require_stack_tools
from tests.support.session_users import SharedRuntime, public_directory, shared_runtime

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="separating session users needs root and useradd",
)

_CREDENTIALS = {"oauth2service.json": '{"type": "service_account", "fake": true}\n'}
_COMMAND_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Lab:
    """The stack, its runtime, and the two users' tokens."""

    stack: LocalStack
    backend: LocalBackend
    runtime: SharedRuntime
    proxy_port: int
    tokens: dict[str, str]

    def run(self, sid: str, argv: list[str]) -> CommandResult:
        url = f"ws://127.0.0.1:{self.proxy_port}{naming.session_path(sid)}"
        with SessionConnection.open(url, self.tokens[sid]) as connection:
            return connection.run(argv, timeout=_COMMAND_TIMEOUT_S)

    def agent_pid(self, sid: str) -> int:
        record = self.stack.state.read_session(sid)
        assert record is not None
        return record.process.pid


def _create(backend: LocalBackend, sid: str, token: str) -> None:
    backend.create(
        CreateRequest(
            session_id=sid,
            token=SecretStr(token),
            credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
            max_sessions=10,
        )
    )
    backend.wait_ready(sid, timeout=60)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_stack_tools()
    with contextlib.ExitStack() as cleanup:
        try:
            runtime = cleanup.enter_context(shared_runtime())
        except RuntimeError as exc:
            pytest.skip(str(exc))
        base = cleanup.enter_context(public_directory("gamgui-isolation-"))
        stack = LocalStack(base / "state", gam_bin=runtime.gam, agent_argv=runtime.agent_argv)
        stack.state.ensure()
        credentials = stack.state.credentials_dir / naming.DEFAULT_CREDENTIALS_SECRET
        credentials.mkdir(parents=True, mode=0o700)
        for name, text in _CREDENTIALS.items():
            (credentials / name).write_text(text, encoding="utf-8")
        cleanup.callback(stack.down)
        status = stack.up(default_session=False, timeout=60.0)
        assert status.session_users, status.identity
        record = stack.state.read_stack()
        assert record is not None
        backend = stack.backend(idle_timeout=0)
        tokens = {sid: f"tok-{sid}-{generate_session_id()}" for sid in ("alice", "bob")}
        for sid, token in tokens.items():
            _create(backend, sid, token)
        lab = Lab(stack, backend, runtime, record.proxy_port, tokens)
        # GAM initialises both configs once, so later runs only read them.
        for sid in tokens:
            assert lab.run(sid, ["version"]).exit_code == 0
        yield lab


# --- the attacks ---------------------------------------------------------------------
@dataclass(frozen=True)
class Targets:
    """Paths alice aims at."""

    state: Path
    bob_home: Path
    bob_pid: int
    alice_pid: int

    @property
    def bob_gamcfg(self) -> Path:
        return self.bob_home / "gamcfg"


def _targets(lab: Lab) -> Targets:
    state = lab.stack.state
    return Targets(
        state.root, state.session_home("bob"), lab.agent_pid("bob"), lab.agent_pid("alice")
    )


_Build = Callable[[Targets], list[list[str]]]
_READ, _WRITE = "Unable to read File", "Unable to write File"

#: How each GAM feature reads a file a user names.
_READERS: dict[str, Callable[[str], list[str]]] = {
    "csvtest": lambda path: ["csvtest", path, "gam", "version"],
    "csv": lambda path: ["csv", path, "gam", "version"],
    "loop": lambda path: ["loop", path, "gam", "version"],
    "batch": lambda path: ["batch", path],
    "tbatch": lambda path: ["tbatch", path],
}
#: How each GAM feature writes a file a user names.
_WRITERS: dict[str, Callable[[str], list[str]]] = {
    "redirect-stdout": lambda path: ["redirect", "stdout", path, "version"],
    "redirect-stdout-append": lambda path: ["redirect", "stdout", path, "append", "version"],
    "redirect-stderr": lambda path: ["redirect", "stderr", path, "version"],
    "redirect-csv": lambda path: ["redirect", "csv", path, "version"],
}
#: What alice aims at.
_PLACES: dict[str, Callable[[Targets], str]] = {
    "bob-token": lambda t: f"{t.state}/tokens/bob",
    "bob-gam-cfg": lambda t: f"{t.bob_gamcfg}/gam.cfg",
    "bob-credentials": lambda t: f"{t.bob_gamcfg}/oauth2service.json",
    "bob-credentials-copy": lambda t: f"{t.bob_home}/credentials/oauth2service.json",
    "bob-home": lambda t: f"{t.bob_home}/planted",
    "bob-session-record": lambda t: f"{t.state}/sessions/bob.json",
    "stack-record": lambda t: f"{t.state}/stack.json",
    "stack-credentials": lambda t: f"{t.state}/credentials/gam-credentials/oauth2service.json",
    "nginx-config": lambda t: f"{t.state}/nginx/nginx.conf",
    "dns-hosts": lambda t: f"{t.state}/dns/hosts",
    "nginx-access-log": lambda t: f"{t.state}/logs/nginx-access.log",
    "bob-agent-log": lambda t: f"{t.state}/logs/session-bob.log",
    "stack-logs": lambda t: f"{t.state}/logs/planted.log",
    "bob-agent-environ": lambda t: f"/proc/{t.bob_pid}/environ",
    "own-agent-environ": lambda t: f"/proc/{t.alice_pid}/environ",  # same uid, non-dumpable
    "own-agent-memory": lambda t: f"/proc/{t.alice_pid}/mem",
    "etc-shadow": lambda t: "/etc/shadow",
    "etc": lambda t: "/etc/gamgui-planted",
}


def _using(table: dict[str, Callable[[str], list[str]]], feature: str, place: str) -> _Build:
    return lambda t: [table[feature](_PLACES[place](t))]


_READ_CASES = [
    ("csvtest", "bob-token"),
    ("csv", "bob-gam-cfg"),
    ("batch", "bob-credentials"),
    ("tbatch", "bob-credentials-copy"),
    ("loop", "bob-session-record"),
    ("csvtest", "stack-record"),
    ("csvtest", "stack-credentials"),
    ("csv", "nginx-config"),
    ("batch", "dns-hosts"),
    ("loop", "nginx-access-log"),
    ("csvtest", "bob-agent-log"),
    ("csvtest", "bob-agent-environ"),
    ("csvtest", "own-agent-environ"),
    ("batch", "own-agent-memory"),
    ("csvtest", "etc-shadow"),
]
_WRITE_CASES = [
    ("redirect-stdout", "bob-home"),
    ("redirect-stderr", "bob-gam-cfg"),
    ("redirect-stdout-append", "bob-credentials"),
    ("redirect-csv", "bob-token"),
    ("redirect-stdout", "stack-logs"),
    ("redirect-stdout", "etc"),
]


def _config_dir_at_bob(t: Targets) -> list[list[str]]:
    """``config ... save`` rewrites alice's own gam.cfg only; what it points at stays closed."""
    return [["config", "config_dir", str(t.bob_gamcfg), "save"], ["info", "domain"]]


#: (name, the commands alice runs, the words of GAM's own error in the last one's output)
CASES: list[tuple[str, _Build, str]] = [
    *((f"{f}-{p}", _using(_READERS, f, p), _READ) for f, p in _READ_CASES),
    *((f"{f}-{p}", _using(_WRITERS, f, p), _WRITE) for f, p in _WRITE_CASES),
    ("config-save-config-dir-bob", _config_dir_at_bob, "Permission denied"),
]


def _snapshot(paths: list[Path]) -> dict[str, str]:
    """Hash every file under ``paths`` (read as root), plus each file's mode and owner."""
    found: dict[str, str] = {}
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            info = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path)] = f"{digest} {info.st_mode:o} {info.st_uid}"
    return found


def _bobs_files(lab: Lab) -> dict[str, str]:
    state = lab.stack.state
    return _snapshot(
        [state.session_home("bob"), state.token_path("bob"), state.sessions_dir, state.stack_path]
    )


@pytest.fixture
def alice_config_restored(lab: Lab) -> Iterator[None]:
    """Put alice's own gam.cfg back after a case that rewrote it with ``config ... save``."""
    path = lab.stack.state.session_home("alice") / "gamcfg" / "gam.cfg"
    before = path.read_bytes()
    yield
    path.write_bytes(before)


@pytest.mark.usefixtures("alice_config_restored")
@pytest.mark.parametrize(
    ("build", "error"), [(b, e) for _, b, e in CASES], ids=[n for n, _, _ in CASES]
)
def test_alice_cannot_reach_bob_or_the_stack_with_gam_file_features(
    lab: Lab, build: _Build, error: str
) -> None:
    before = _bobs_files(lab)
    *setup, attack = build(_targets(lab))
    for argv in setup:
        assert lab.run("alice", argv).exit_code == 0
    result = lab.run("alice", attack)
    output = result.stdout + result.stderr
    assert result.exit_code != 0, output
    assert "ERROR:" in output and error in output and "Permission denied" in output, output
    assert lab.tokens["bob"] not in output
    assert _bobs_files(lab) == before
    for planted in (Path("/etc/gamgui-planted"), lab.stack.state.logs_dir / "planted.log"):
        assert not planted.exists()
    bob = lab.run("bob", ["version"])
    assert bob.exit_code == 0 and "GAM" in bob.stdout


# --- identities, from /proc ----------------------------------------------------------------
def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("Uid:"):
            real, effective, saved, fs = (int(v) for v in line.split()[1:5])
            assert real == effective == saved == fs, line
            return real
    raise AssertionError(f"no Uid line for {pid}")


def _groups(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("Groups:"):
            return [int(v) for v in line.split()[1:]]
    return []


def _children(pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(pid).children()]


def _gam_uid_while_running(lab: Lab, backend: LocalBackend, sid: str, token: str) -> int:
    """Run the fake GAM's ``pidfile`` in ``sid`` and read its uid from /proc while it runs."""
    pid_file = lab.stack.state.session_home(sid) / "gam.pid"
    url = f"ws://127.0.0.1:{lab.proxy_port}{naming.session_path(sid)}"
    uid = -1
    with SessionConnection.open(url, token) as connection:
        for chunk in connection.stream(["pidfile", str(pid_file), "60"], timeout=90):
            if chunk.data.startswith("ready") and uid < 0:
                gam_pid = int(pid_file.read_text(encoding="ascii"))
                uid = _uid(gam_pid)
                assert _groups(gam_pid) == []
                connection.cancel()
    return uid


def test_each_agent_and_its_gam_run_under_their_own_uid_and_the_daemons_are_unprivileged(
    lab: Lab,
) -> None:
    agents = {sid: _uid(lab.agent_pid(sid)) for sid in ("alice", "bob")}
    assert len(set(agents.values())) == 2
    assert all(uid in SESSION_UID_RANGE for uid in agents.values())
    for sid in agents:
        assert _groups(lab.agent_pid(sid)) == []
        environ = Path(f"/proc/{lab.agent_pid(sid)}/environ").read_bytes().split(b"\0")
        home = str(lab.stack.state.session_home(sid)).encode()
        assert b"GAMCFGDIR=" + home + b"/gamcfg" in environ and b"HOME=" + home in environ
        assert not any(lab.tokens[sid].encode() in entry for entry in environ)
        assert all(b"/tokens" not in entry for entry in environ)

    # GAM itself, live: two sessions running the fake GAM on the same stack.
    fake = lab.stack.backend(idle_timeout=0, gam_bin=lab.runtime.fake_gam)
    tokens = {sid: f"tok-{sid}-{generate_session_id()}" for sid in ("carol", "dave")}
    try:
        for sid, token in tokens.items():
            _create(fake, sid, token)
        gams = {sid: _gam_uid_while_running(lab, fake, sid, token) for sid, token in tokens.items()}
        for sid, uid in gams.items():
            assert uid == _uid(lab.agent_pid(sid))
        assert len({*gams.values(), *agents.values()}) == 4 and 0 not in gams.values()
    finally:
        for sid in tokens:
            fake.delete(sid)

    stack_uid = pwd.getpwnam(STACK_USER).pw_uid
    record = lab.stack.state.read_stack()
    assert record is not None
    assert stack_uid != 0 and stack_uid not in SESSION_UID_RANGE
    assert _uid(record.dns.pid) == stack_uid
    workers = _children(record.proxy.pid)
    assert workers and all(_uid(pid) == stack_uid for pid in workers)


def test_homes_are_private_and_credentials_belong_to_their_session_only(lab: Lab) -> None:
    state = lab.stack.state
    assert (state.root.stat().st_mode & 0o777) == 0o711  # searchable, not listable
    for private in (state.tokens_dir, state.sessions_dir, state.logs_dir, state.nginx_dir):
        assert (private.stat().st_mode & 0o077) == 0 and private.stat().st_uid == 0
    for sid in ("alice", "bob"):
        home = state.session_home(sid)
        uid = _uid(lab.agent_pid(sid))
        assert home.stat().st_uid == uid and (home.stat().st_mode & 0o777) == 0o700
        copied = home / "gamcfg" / "oauth2service.json"
        assert copied.stat().st_uid == uid and (copied.stat().st_mode & 0o777) == 0o600
        assert copied.read_text(encoding="utf-8") == _CREDENTIALS["oauth2service.json"]


def test_a_deleted_session_leaves_no_user_behind(lab: Lab) -> None:
    token = f"tok-{generate_session_id()}"
    sid = generate_session_id()
    _create(lab.backend, sid, token)
    uid = _uid(lab.agent_pid(sid))
    name = pwd.getpwuid(uid).pw_name
    assert lab.backend.delete(sid)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    assert not lab.stack.state.session_home(sid).exists()


def test_each_session_user_writes_the_stacks_audit_trail_without_being_able_to_open_it(
    lab: Lab,
) -> None:
    audit_log = lab.stack.state.audit_log
    marker = f"audit-{generate_session_id()}"
    assert lab.run("alice", ["info", "user", marker]).exit_code != 0
    lines = [json.loads(line) for line in audit_log.read_text(encoding="utf-8").splitlines()]
    finished = [
        r
        for r in lines
        if r.get("action") == "command"
        and r.get("phase") == "finished"
        and r.get("session_id") == "alice"
        and marker in r.get("argv", [])
    ]
    assert len(finished) == 1, lines[-5:]
    assert audit_log.stat().st_uid == 0 and audit_log.stat().st_mode & 0o077 == 0
    # GAM, as alice, cannot open the file it is audited into.
    result = lab.run("alice", ["csvtest", str(audit_log), "gam", "version"])
    assert result.exit_code != 0 and "Permission denied" in result.stdout + result.stderr
