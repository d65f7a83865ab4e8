"""nginx for the local stack: the same generated config as the cluster's proxy.

Only the listen address and port, the resolver (the stack's dnsmasq), the file
paths (a prefix inside the state directory) and the limits the machine allows
differ from the Kubernetes proxy.
"""

from __future__ import annotations

import os
import pwd
import resource
import subprocess
from pathlib import Path

from session_runtime.backends.local.processes import find_system_binary
from session_runtime.errors import BackendError
from session_runtime.nginx import (
    DEFAULT_CONNECTIONS_PER_CLIENT,
    RESOLVER_VALID_S,
    NginxConfig,
    render_nginx_conf,
)

__all__ = [
    "PROXY_LISTEN_ADDRESS",
    "check_config",
    "find_nginx",
    "local_nginx_config",
    "nginx_argv",
    "write_config",
]

PROXY_LISTEN_ADDRESS = "127.0.0.1"


def find_nginx() -> str:
    """Return the nginx binary, or raise with an install hint."""
    return find_system_binary("nginx", "nginx-light")


def local_nginx_config(
    *,
    prefix: Path,
    logs_dir: Path,
    port: int,
    dns_port: int,
    session_domain: str,
    console_dir: Path | None = None,
    connections_per_client: int = DEFAULT_CONNECTIONS_PER_CLIENT,
    worker_user: str | None = None,
) -> NginxConfig:
    """Return the proxy config for a local stack rooted at ``prefix``.

    Args:
        prefix: nginx's own directory in the state dir (config, pid, temp files).
        logs_dir: where access and error logs go.
        port: the proxy's port on 127.0.0.1.
        dns_port: the stack's dnsmasq port on 127.0.0.1.
        session_domain: the domain sessions are registered under.
        console_dir: the console page's directory, served at ``/console/`` (None: no page).
        connections_per_client: connections one client address may hold.
        worker_user: as root, the unprivileged user nginx's workers run as (the
            ``user`` directive); None keeps the master's identity.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 65536
    nofile = max(1024, min(65536, limit))
    user = (worker_user or pwd.getpwuid(0).pw_name) if os.geteuid() == 0 else None
    return NginxConfig(
        listen_address=PROXY_LISTEN_ADDRESS,
        listen_port=port,
        resolver=f"127.0.0.1:{dns_port}",
        # The cluster's default (1 s) too: a re-created session is found at once.
        resolver_valid_s=RESOLVER_VALID_S,
        resolver_timeout_s=2,
        session_domain=session_domain,
        connect_timeout_s=2,
        worker_rlimit_nofile=nofile,
        worker_connections=max(512, min(32768, nofile // 2)),
        pid_path=str(prefix / "nginx.pid"),
        temp_dir=str(prefix / "temp"),
        error_log=str(logs_dir / "nginx-error.log"),
        access_log=str(logs_dir / "nginx-access.log"),
        user=user,
        console_dir=str(console_dir) if console_dir is not None else None,
        connections_per_client=connections_per_client,
    )


def write_config(prefix: Path, config: NginxConfig) -> Path:
    """Render ``config`` into ``prefix/nginx.conf`` and create its temp directory."""
    (prefix / "temp").mkdir(mode=0o700, parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(render_nginx_conf(config), encoding="utf-8")
    return path


def nginx_argv(binary: str, *, prefix: Path, conf: Path, error_log: Path) -> list[str]:
    """Return the argv of an nginx master in the foreground with its own prefix.

    Args:
        binary: path of nginx.
        prefix: the ``-p`` prefix.
        conf: the rendered config.
        error_log: start-up errors go here before the config is read (``-e``).
    """
    return [
        binary,
        "-p",
        str(prefix),
        "-c",
        str(conf),
        "-e",
        str(error_log),
        "-g",
        "daemon off;",
    ]


def check_config(binary: str, *, prefix: Path, conf: Path, error_log: Path) -> None:
    """Run ``nginx -t`` on the config; raise with nginx's own words if it is refused.

    Args:
        binary: path of nginx.
        prefix: the ``-p`` prefix.
        conf: the rendered config.
        error_log: the ``-e`` log.
    """
    result = subprocess.run(
        [binary, "-t", "-q", "-p", str(prefix), "-c", str(conf), "-e", str(error_log)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise BackendError(
            "nginx refused the generated configuration",
            cause=(result.stderr.strip() or result.stdout.strip())[-500:],
            hint=f"see {conf}",
        )
