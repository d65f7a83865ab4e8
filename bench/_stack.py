"""A benchmark's own local stack: dnsmasq, session agents on loopback addresses and
nginx with the configuration rendered by :mod:`session_runtime.nginx`.

It is the local stack's shape (nginx resolves ``<id>.<session domain>`` through
dnsmasq to an agent on its own 127.x address) but owned by the benchmark, so it can
set what a measurement needs (``worker_processes``, agent limits) and every process
is stopped by its own handle when the ``with`` block ends, even on error. Addresses
are drawn from a random 127.x.y.0/24 so a run does not collide with other stacks
on the machine.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from _common import REPO_ROOT, free_port, started, wait_until

from session_runtime import naming

__all__ = ["Agent", "BenchStack", "fake_gam_argv"]

FAKE_GAM = REPO_ROOT / "tests" / "support" / "fake_gam.py"


def fake_gam_argv() -> list[str]:
    """Return the argv of the fake GAM used by the tests (a fast output generator)."""
    return [sys.executable, str(FAKE_GAM)]


def _udp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _tcp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _healthz(host: str, port: int, path: str = naming.HEALTH_PATH) -> dict[str, object]:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"{host}:{port}{path} answered {resp.status}")
        data = json.loads(body)
        assert isinstance(data, dict)
        return data
    finally:
        conn.close()


@dataclass
class Agent:
    """One session agent process on its own loopback address."""

    session_id: str
    token: str = field(repr=False)
    host: str
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def path(self) -> str:
        """The session's WebSocket path (the same on the agent and on the proxy)."""
        return naming.session_path(self.session_id)


class BenchStack:
    """dnsmasq + N agents + nginx, started on entry and stopped on exit.

    Args:
        sessions: how many agents (one session each).
        worker_processes: force nginx's ``worker_processes`` (None: as rendered).
        agent_env: extra environment for every agent (limits, timeouts).
        gam_argv: the GAM the agents run (default: the fake GAM of the tests).
        nginx_overrides: further NginxConfig fields.
        agent_argv: how to start an agent (default ``python -m session_runtime.agent``).
    """

    def __init__(
        self,
        *,
        sessions: int = 1,
        worker_processes: int | None = None,
        agent_env: Mapping[str, str] | None = None,
        gam_bin: str | None = None,
        nginx_overrides: Mapping[str, object] | None = None,
        agent_argv: list[str] | None = None,
    ) -> None:
        if not 1 <= sessions <= 250:
            raise ValueError(f"sessions must be within 1..250 (got {sessions})")
        self.sessions = sessions
        self.worker_processes = worker_processes
        self.agent_env = dict(agent_env or {})
        self.gam_bin = gam_bin
        self.nginx_overrides = dict(nginx_overrides or {})
        self.agent_argv = agent_argv or [sys.executable, "-m", "session_runtime.agent"]
        self.domain = naming.session_domain(naming.DEFAULT_NAMESPACE)
        self.agents: list[Agent] = []
        self.nginx: subprocess.Popen[bytes] | None = None
        self.dnsmasq: subprocess.Popen[bytes] | None = None
        self.proxy_port = 0
        self.dns_port = 0
        self.nginx_conf = ""
        self._stack = contextlib.ExitStack()
        self.workdir = Path()

    # --- addresses ----------------------------------------------------------------
    def _pick_addresses(self) -> tuple[list[str], int]:
        for _ in range(50):
            net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
            hosts = [f"{net}.{i}" for i in range(1, self.sessions + 1)]
            port = free_port(hosts[0])
            if all(_tcp_free(h, port) for h in hosts):
                return hosts, port
        raise RuntimeError("no free loopback /24 for the agents")

    # --- lifecycle ----------------------------------------------------------------
    def __enter__(self) -> BenchStack:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _start(self) -> None:
        self.workdir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        hosts, agent_port = self._pick_addresses()
        self.agents = [
            Agent(f"bench{i + 1}", secrets.token_urlsafe(32), host, agent_port)
            for i, host in enumerate(hosts)
        ]
        self._start_dnsmasq()
        for agent in self.agents:
            self._start_agent(agent)
        for agent in self.agents:
            wait_until(lambda a=agent: _healthz(a.host, a.port), 30, f"agent {agent.session_id}")
        self._start_nginx()
        wait_until(lambda: _healthz("127.0.0.1", self.proxy_port), 30, "nginx /healthz")

    def _start_dnsmasq(self) -> None:
        from session_runtime.backends.local.dns import dnsmasq_argv, find_dnsmasq, render_hosts

        for _ in range(20):
            port = free_port("127.0.0.1")
            if _udp_free("127.0.0.1", port):
                break
        self.dns_port = port
        hosts_file = self.workdir / "hosts"
        hosts_file.write_text(
            render_hosts((a.host, f"{a.session_id}.{self.domain}") for a in self.agents)
        )
        argv = dnsmasq_argv(
            find_dnsmasq(),
            port=port,
            domain=self.domain,
            hosts_file=hosts_file,
            pid_file=self.workdir / "dnsmasq.pid",
            log_queries=False,
            log_file=self.workdir / "dnsmasq.log",
        )
        self.dnsmasq = self._stack.enter_context(started(argv))
        wait_until(lambda: not _udp_free("127.0.0.1", port), 10, "dnsmasq")

    def _start_agent(self, agent: Agent) -> None:
        env = {
            **os.environ,
            naming.ENV_SESSION_ID: agent.session_id,
            naming.ENV_SESSION_TOKEN: agent.token,
            naming.ENV_AGENT_HOST: agent.host,
            naming.ENV_AGENT_PORT: str(agent.port),
            naming.ENV_IDLE_TIMEOUT: "0",
            naming.ENV_GAM_BIN: self.gam_bin or shutil.which("gam") or "gam",
            naming.ENV_GAMCFGDIR: str(self.workdir / f"gamcfg-{agent.session_id}"),
            **self.agent_env,
        }
        env.pop(naming.ENV_SESSION_TOKEN_FILE, None)
        log = (self.workdir / f"agent-{agent.session_id}.log").open("wb")
        self._stack.callback(log.close)
        agent.proc = self._stack.enter_context(
            started(
                self.agent_argv,
                env=env,
                stdout=log.fileno(),
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        )

    def _start_nginx(self) -> None:
        from session_runtime.backends.local.proxy import (
            check_config,
            find_nginx,
            local_nginx_config,
            nginx_argv,
        )
        from session_runtime.nginx import render_nginx_conf

        self.proxy_port = free_port("127.0.0.1")
        prefix = self.workdir / "nginx"
        (prefix / "temp").mkdir(parents=True)
        # The local stack's own config, pointed at this benchmark's agents' port.
        config = local_nginx_config(
            prefix=prefix,
            logs_dir=self.workdir,
            port=self.proxy_port,
            dns_port=self.dns_port,
            session_domain=self.domain,
        ).model_copy(update={"agent_port": self.agents[0].port, **self.nginx_overrides})
        text = render_nginx_conf(config)
        if self.worker_processes is not None:
            text, count = re.subn(
                r"^worker_processes\s+[^;]+;",
                f"worker_processes {self.worker_processes};",
                text,
                flags=re.MULTILINE,
            )
            if count != 1:
                raise RuntimeError("worker_processes not found in the rendered nginx.conf")
        self.nginx_conf = text
        conf = prefix / "nginx.conf"
        conf.write_text(text)
        binary = find_nginx()
        error_log = self.workdir / "nginx-error.log"
        check_config(binary, prefix=prefix, conf=conf, error_log=error_log)
        argv = nginx_argv(binary, prefix=prefix, conf=conf, error_log=error_log)
        log = (self.workdir / "nginx-stderr.log").open("wb")
        self._stack.callback(log.close)
        self.nginx = self._stack.enter_context(
            started(argv, stdout=log.fileno(), stderr=subprocess.STDOUT)
        )

    # --- what the benchmarks use ------------------------------------------------------
    def direct_url(self, agent: Agent) -> str:
        """The agent's own WebSocket URL (no proxy)."""
        return f"ws://{agent.host}:{agent.port}{agent.path}"

    def proxy_url(self, agent: Agent) -> str:
        """The session's WebSocket URL through nginx."""
        return f"ws://127.0.0.1:{self.proxy_port}{agent.path}"

    def nginx_worker_pids(self) -> list[int]:
        """The pids of nginx's worker processes (children of the master we started)."""
        assert self.nginx is not None
        children = Path(f"/proc/{self.nginx.pid}/task/{self.nginx.pid}/children")
        return [int(p) for p in children.read_text().split()]
