"""LocalStack: bring the whole system up on one machine, report on it, take it down.

``up`` starts dnsmasq (the stand-in for cluster DNS), then nginx with the same
generated config as the cluster's proxy, then the default session's agent, and
returns once each answers. ``down`` stops every process it recorded (sessions
first), then proves by pid and port that nothing is left. All of it is
recorded in the state directory, so ``up`` in one process and ``down`` in
another work on the same stack.
"""

from __future__ import annotations

import http.client
import os
import random
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from session_runtime import naming
from session_runtime.backends.local import dns, proxy
from session_runtime.backends.local.backend import LocalBackend, require_running_stack
from session_runtime.backends.local.identity import (
    SESSION_UID_RANGE,
    STACK_USER,
    Identity,
    blocked_path,
    can_separate_users,
    ensure_stack_user,
    remove_session_user,
)
from session_runtime.backends.local.processes import (
    free_port,
    is_alive,
    kill_commands_of,
    port_is_free,
    spawn,
    stop,
    wait_for_port,
)
from session_runtime.backends.local.state import ProcessRecord, StackRecord, StateDir
from session_runtime.console import console_dir_for, install_console, remove_console
from session_runtime.errors import BackendError
from session_runtime.ids import DEFAULT_SESSION_ID
from session_runtime.models import ProgressCallback, SessionStatus, report_progress
from session_runtime.nginx import DEFAULT_CONNECTIONS_PER_CLIENT

__all__ = ["LocalStack", "ProcessStatus", "StackStatus"]


def _blocked_state(root: Path) -> str | None:
    """Why session users could not reach homes under ``root``, or None."""
    blocked = blocked_path(root.parent)
    if blocked is None:
        return None
    return f"session users cannot reach {root} ({blocked} is not searchable by others)"


_START_ATTEMPTS = 3


class ProcessStatus(BaseModel):
    """One process of the stack as ``status`` sees it."""

    model_config = ConfigDict(frozen=True)

    name: str
    pid: int
    alive: bool
    address: str


class StackStatus(BaseModel):
    """What is running. ``running`` is true only when resolver and proxy both run."""

    model_config = ConfigDict(frozen=True)

    state_dir: str
    running: bool
    proxy_url: str | None = None
    session_domain: str | None = None
    #: True when every session runs as its own Unix user.
    session_users: bool = False
    #: One plain sentence on who sessions run as (``local up`` prints it).
    identity: str | None = None
    processes: list[ProcessStatus] = []


def _identity_sentence(stack: StackRecord) -> str:
    if stack.session_users:
        low, high = SESSION_UID_RANGE.start, SESSION_UID_RANGE.stop - 1
        return (
            f"each session runs as its own Unix user (uids {low}-{high}); "
            f"nginx workers and dnsmasq run as {STACK_USER}"
        )
    return (
        "sessions share one identity: every session can read every other session's "
        f"files and token ({stack.shared_identity_reason}); multi-user safe only when "
        "started as root with the agent and GAM readable by every user"
    )


def _proxy_healthy(port: int) -> bool:
    connection = http.client.HTTPConnection(proxy.PROXY_LISTEN_ADDRESS, port, timeout=1.0)
    try:
        connection.request("GET", naming.HEALTH_PATH)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class LocalStack:
    """The local stack rooted at ``state_dir``.

    Args:
        state_dir: where every pid, port, session record, token and log lives.
        gam_bin: the GAM the default session runs (default: the backend's).
        agent_argv: how agents are started (default: the backend's). As root, ``up``
            checks that session users can run both before it separates them.
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        gam_bin: str | None = None,
        agent_argv: Sequence[str] | None = None,
    ) -> None:
        self.state = StateDir(state_dir)
        self._runtime: dict[str, object] = {"gam_bin": gam_bin, "agent_argv": agent_argv}

    def backend(self, **options: object) -> LocalBackend:
        """Return a :class:`LocalBackend` on this stack (keyword options passed through)."""
        return LocalBackend(self.state.root, **{**self._runtime, **options})  # type: ignore[arg-type]

    def proxy_url(self) -> str | None:
        """Return ``http://127.0.0.1:PORT`` of the running proxy, or None when it is not up."""
        stack = self.state.read_stack()
        if stack is None or not is_alive(stack.proxy):
            return None
        return f"http://{proxy.PROXY_LISTEN_ADDRESS}:{stack.proxy_port}"

    def status(self) -> StackStatus:
        """Report the stack's processes and whether it is running."""
        stack = self.state.read_stack()
        processes = []
        if stack is not None:
            processes += [
                ProcessStatus(
                    name="dnsmasq",
                    pid=stack.dns.pid,
                    alive=is_alive(stack.dns),
                    address=f"{dns.DNS_LISTEN_ADDRESS}:{stack.dns_port}",
                ),
                ProcessStatus(
                    name="nginx",
                    pid=stack.proxy.pid,
                    alive=is_alive(stack.proxy),
                    address=f"{proxy.PROXY_LISTEN_ADDRESS}:{stack.proxy_port}",
                ),
            ]
        processes += [
            ProcessStatus(
                name=f"session {r.session_id}",
                pid=r.process.pid,
                alive=is_alive(r.process),
                address=f"{r.address}:{r.port}",
            )
            for r in self.state.list_sessions()
        ]
        running = stack is not None and processes[0].alive and processes[1].alive
        return StackStatus(
            state_dir=str(self.state.root),
            running=running,
            proxy_url=self.proxy_url() if running else None,
            session_domain=stack.session_domain if stack else None,
            session_users=bool(stack and stack.session_users),
            identity=_identity_sentence(stack) if stack else None,
            processes=processes,
        )

    def up(
        self,
        *,
        timeout: float = 30.0,
        log_dns_queries: bool = False,
        default_session: bool = True,
        connections_per_client: int = DEFAULT_CONNECTIONS_PER_CLIENT,
        progress: ProgressCallback | None = None,
    ) -> StackStatus:
        """Start dnsmasq, nginx and the default session; return once all answer.

        Idempotent: a running stack is left as it is (a missing default session is
        started). A half-running one is stopped and started afresh.

        Args:
            timeout: seconds for each part to answer.
            log_dns_queries: log every DNS query to ``logs/dnsmasq.log`` (tests read it).
            default_session: start the always-available ``default`` session.
            connections_per_client: connections one client address may hold at the proxy
                (``WEBSOCKET_PROXY_CONNECTIONS_PER_CLIENT``); used when nginx starts.
            progress: receives one event per step.

        Raises:
            BackendUnavailableError: nginx or dnsmasq is not installed.
            BackendError: a part did not start; everything started is stopped again.
        """
        dnsmasq_bin, nginx_bin = dns.find_dnsmasq(), proxy.find_nginx()
        with self.state.locked():
            stack = self.state.read_stack()
            if stack is not None and not (is_alive(stack.dns) and is_alive(stack.proxy)):
                self._stop_all()
                stack = None
            if stack is None:
                try:
                    stack = self._start(
                        dnsmasq_bin,
                        nginx_bin,
                        timeout,
                        log_dns_queries=log_dns_queries,
                        connections_per_client=connections_per_client,
                        progress=progress,
                    )
                except BaseException:
                    self._stop_all()
                    raise
        if default_session:
            try:
                self._ensure_default(timeout, progress)
            except BaseException:
                self.down()
                raise
        return self.status()

    def down(self, *, timeout: float = 10.0) -> StackStatus:
        """Stop every session, nginx and dnsmasq; verify no process and no port is left.

        Args:
            timeout: seconds each process gets to exit before it is killed.

        Raises:
            BackendError: something survived (named, with its pid or port).
        """
        with self.state.locked():
            survivors = self._stop_all(grace=timeout)
        if survivors:
            raise BackendError(
                "The local stack did not stop completely",
                cause=", ".join(survivors),
                hint="stop those processes by pid, then run `gamgui-session local down` again",
            )
        return self.status()

    # --- internals ------------------------------------------------------------------
    def _start(
        self,
        dnsmasq_bin: str,
        nginx_bin: str,
        timeout: float,
        *,
        log_dns_queries: bool,
        connections_per_client: int,
        progress: ProgressCallback | None,
    ) -> StackRecord:
        domain = naming.session_domain()
        session_users, reason, service = self._identities()
        # dnsmasq drops to the stack user only where that user can reach its hosts file.
        dns_user = (
            service if service is not None and _blocked_state(self.state.root) is None else None
        )
        self.state.open_homes(shared=dns_user is not None)
        # A loopback /24 of its own, so several stacks on one machine never share
        # an agent address (the agent port is the same for all of them).
        subnet = f"127.{random.randint(16, 254)}.{random.randint(0, 255)}"  # noqa: S311
        service_gid = dns_user.gid if dns_user else None
        if dns_user is not None:  # dnsmasq, as the stack user, re-reads the hosts file
            os.chown(self.state.dns_dir, 0, dns_user.gid)
            os.chmod(self.state.dns_dir, 0o750)  # noqa: S103 - the group is the stack user
        self.state.write_text(
            self.state.hosts_path,
            dns.render_hosts([]),
            0o600 if service_gid is None else 0o640,
            service_gid,
        )
        dns_record, dns_port = self._start_dnsmasq(
            dnsmasq_bin, domain, timeout, log_dns_queries, dns_user.name if dns_user else None
        )
        report_progress(
            progress, DEFAULT_SESSION_ID, "dns", f"dnsmasq answers on 127.0.0.1:{dns_port}"
        )
        try:
            proxy_record, proxy_port = self._start_nginx(
                nginx_bin,
                dns_port,
                domain,
                timeout,
                connections_per_client,
                service.name if service else None,
            )
        except BaseException:
            stop(dns_record)
            raise
        report_progress(
            progress, DEFAULT_SESSION_ID, "proxy", f"nginx answers on 127.0.0.1:{proxy_port}"
        )
        stack = StackRecord(
            dns=dns_record,
            dns_port=dns_port,
            proxy=proxy_record,
            proxy_port=proxy_port,
            subnet=subnet,
            session_domain=domain,
            started_at=datetime.now(UTC),
            session_users=session_users,
            shared_identity_reason=reason,
            service_gid=service_gid,
        )
        self.state.write_stack(stack)
        report_progress(progress, DEFAULT_SESSION_ID, "identity", _identity_sentence(stack))
        return stack

    def _identities(self) -> tuple[bool, str | None, Identity | None]:
        """Decide who sessions run as: (own users?, why not, the stack's service user)."""
        if not can_separate_users():
            return False, f"started as uid {os.geteuid()}, not root", None
        service = ensure_stack_user()
        blocker = self.backend().runtime_blocker() or _blocked_state(self.state.root)
        return blocker is None, blocker, service

    def _start_dnsmasq(
        self, binary: str, domain: str, timeout: float, log_queries: bool, user: str | None
    ) -> tuple[ProcessRecord, int]:
        log = self.state.logs_dir / "dnsmasq.log"
        for _ in range(_START_ATTEMPTS):
            port = free_port(dns.DNS_LISTEN_ADDRESS, udp=True)
            argv = dns.dnsmasq_argv(
                binary,
                port=port,
                domain=domain,
                hosts_file=self.state.hosts_path,
                pid_file=self.state.dns_dir / "dnsmasq.pid",
                log_queries=log_queries,
                log_file=log,
                user=user,
            )
            record = spawn(
                argv,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                log_path=log,
                cwd=self.state.dns_dir,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and is_alive(record):
                if dns.answers((dns.DNS_LISTEN_ADDRESS, port), f"probe.{domain}"):
                    return record, port
                time.sleep(0.05)
            stop(record)  # port taken between choosing and binding, or too slow: try again
        raise BackendError("dnsmasq did not start", hint=f"see {log}")

    def _start_nginx(  # noqa: PLR0917 - one start-up step, all of it needed
        self,
        binary: str,
        dns_port: int,
        domain: str,
        timeout: float,
        connections_per_client: int,
        worker_user: str | None,
    ) -> tuple[ProcessRecord, int]:
        prefix, logs = self.state.nginx_dir, self.state.logs_dir
        error_log = logs / "nginx-error.log"
        console_dir = install_console(console_dir_for(self.state.root))
        for _ in range(_START_ATTEMPTS):
            port = free_port(proxy.PROXY_LISTEN_ADDRESS)
            config = proxy.local_nginx_config(
                prefix=prefix,
                logs_dir=logs,
                port=port,
                dns_port=dns_port,
                session_domain=domain,
                console_dir=console_dir,
                connections_per_client=connections_per_client,
                worker_user=worker_user,
            )
            conf = proxy.write_config(prefix, config)
            proxy.check_config(binary, prefix=prefix, conf=conf, error_log=error_log)
            record = spawn(
                proxy.nginx_argv(binary, prefix=prefix, conf=conf, error_log=error_log),
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                log_path=logs / "nginx-stdout.log",
                cwd=prefix,
            )
            if wait_for_port(proxy.PROXY_LISTEN_ADDRESS, port, record, timeout):
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and is_alive(record):
                    if _proxy_healthy(port):
                        return record, port
                    time.sleep(0.05)
            stop(record)
        raise BackendError("nginx did not start", hint=f"see {error_log}")

    def _ensure_default(self, timeout: float, progress: ProgressCallback | None) -> None:
        backend = self.backend()
        existing = backend.get(DEFAULT_SESSION_ID)
        if existing is None or existing.status in (SessionStatus.FINISHED, SessionStatus.FAILED):
            backend.create_default(secrets.token_urlsafe(32), progress)
        backend.wait_ready(DEFAULT_SESSION_ID, timeout, progress)

    def _stop_all(self, grace: float = 10.0) -> list[str]:
        """Stop sessions, nginx, dnsmasq (lock held); return what is still alive or bound."""
        survivors: list[str] = []
        stack = self.state.read_stack()
        for record in self.state.list_sessions():
            if not stop(record.process, grace=grace):
                survivors.append(f"session {record.session_id} (pid {record.process.pid})")
                continue
            kill_commands_of(self.state.session_home(record.session_id) / "gamcfg")
            self.state.remove_session(record.session_id)
            if can_separate_users():
                remove_session_user(self.state.root, record.session_id)
            if not port_is_free(record.address, record.port):
                survivors.append(f"session {record.session_id} port {record.address}:{record.port}")
        gid = stack.service_gid if stack else None
        self.state.write_text(
            self.state.hosts_path, dns.render_hosts([]), 0o600 if gid is None else 0o640, gid
        )
        if stack is not None:
            checks = [
                ("nginx", stack.proxy, proxy.PROXY_LISTEN_ADDRESS, stack.proxy_port, False),
                ("dnsmasq", stack.dns, dns.DNS_LISTEN_ADDRESS, stack.dns_port, True),
            ]
            for name, process, address, port, udp in checks:
                if not stop(process, grace=grace):
                    survivors.append(f"{name} (pid {process.pid})")
                elif not port_is_free(address, port, udp=udp):
                    survivors.append(f"{name} port {address}:{port}")
            if not survivors:
                self.state.clear_stack()
                remove_console(console_dir_for(self.state.root))
        return survivors

    def require_running(self) -> StackRecord:
        """Return the stack record, or raise when the stack is not running.

        Raises:
            BackendUnavailableError: resolver or proxy is not running.
        """
        return require_running_stack(self.state)
