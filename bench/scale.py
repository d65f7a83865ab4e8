"""Benchmark 2 - scale: concurrent WebSockets held through one nginx worker to agents.

An asyncio client (the ``websockets`` library) opens N session WebSockets through
nginx and holds them all; every connection then proves it reaches its agent with
a protocol ping/pong. nginx runs with ``worker_processes 1`` for this measurement,
so the figure is what ONE nginx process holds. Client source addresses are spread
over 127.0.0.x (ephemeral ports are per source address), agents sit on their own
loopback addresses, and RLIMIT_NOFILE is raised for the benchmark and the processes
it starts. nginx memory per connection comes from /proc (RSS and PSS of the worker
before and after).

    python bench/scale.py [--connections 10000] [--sessions 20] [--write]
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import (
    Row,
    base_parser,
    fmt_ratio,
    print_rows,
    proc_memory,
    raise_nofile_limit,
    update_benchmarks_md,
)
from _stack import Agent, BenchStack
from websockets.asyncio.client import ClientConnection, connect

from session_runtime import naming

__all__ = ["main"]

#: What the system this replaces topped out at.
PREVIOUS_LIMIT = 500
GOAL = 10_000
PING = json.dumps({"type": "ping"})


@dataclass
class Outcome:
    """What holding N connections produced."""

    opened: int
    failures: Counter[str]
    ponged: int
    open_seconds: float
    before: dict[str, int]
    after: dict[str, int]
    master_after: dict[str, int]
    agents_before: int
    agents_after: int
    worker_nofile: str
    fd_errors: int


async def _open(url: str, agent: Agent, source: str, gate: asyncio.Semaphore) -> ClientConnection:
    async with gate:
        ws = await connect(
            url,
            subprotocols=[naming.SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {agent.token}"},
            compression=None,
            ping_interval=None,
            open_timeout=60,
            local_addr=(source, 0),
        )
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            await ws.close()
            raise RuntimeError(f"expected a welcome, got {welcome.get('type')!r}")
        return ws


async def _ping(ws: ClientConnection) -> bool:
    await ws.send(PING)
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if message.get("type") == "pong":
            return True


async def hold(stack: BenchStack, connections: int, sources: int, concurrency: int) -> Outcome:
    """Open ``connections`` WebSockets through nginx, check each, measure, then close.

    Args:
        stack: the running stack (nginx with one worker).
        connections: how many to hold at once.
        sources: how many client source addresses (127.0.0.10 onwards).
        concurrency: handshakes in flight at once.
    """
    (worker,) = stack.nginx_worker_pids()
    assert stack.nginx is not None
    before = proc_memory(worker)
    agents_before = _agents_rss(stack)
    gate = asyncio.Semaphore(concurrency)
    tasks = []
    for i in range(connections):
        agent = stack.agents[i % len(stack.agents)]
        source = f"127.0.0.{10 + i % sources}"
        tasks.append(asyncio.ensure_future(_open(stack.proxy_url(agent), agent, source, gate)))
    start = time.perf_counter()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    open_seconds = time.perf_counter() - start
    sockets = [r for r in results if isinstance(r, ClientConnection)]
    failures = Counter(
        f"{type(r).__name__}: {str(r)[:80]}" for r in results if isinstance(r, BaseException)
    )
    try:
        await asyncio.sleep(1)
        after = proc_memory(worker)
        master_after = proc_memory(stack.nginx.pid)
        agents_after = _agents_rss(stack)
        gate = asyncio.Semaphore(concurrency * 4)

        async def check(ws: ClientConnection) -> bool:
            async with gate:
                try:
                    return await _ping(ws)
                except Exception:
                    return False

        ponged = sum(await asyncio.gather(*(check(ws) for ws in sockets)))
    finally:
        closing = asyncio.Semaphore(concurrency * 4)

        async def close(ws: ClientConnection) -> None:
            async with closing:
                await ws.close()

        await asyncio.gather(*(close(ws) for ws in sockets), return_exceptions=True)
    return Outcome(
        len(sockets),
        failures,
        ponged,
        open_seconds,
        before,
        after,
        master_after,
        agents_before,
        agents_after,
        _open_files_limit(worker),
        _too_many_open_files(stack),
    )


def _open_files_limit(pid: int) -> str:
    """The 'Max open files' soft limit nginx's worker actually got (from /proc)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "unknown"


def _too_many_open_files(stack: BenchStack) -> int:
    """How often nginx logged EMFILE/ENFILE ("Too many open files")."""
    log = stack.workdir / "nginx-error.log"
    return log.read_text(errors="replace").count("Too many open files") if log.exists() else 0


def _agents_rss(stack: BenchStack) -> int:
    return sum(proc_memory(a.proc.pid)["rss"] for a in stack.agents if a.proc is not None)


def _mib(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def _nofile_note(got: int, wanted: int) -> str:
    if got >= wanted:
        return "enough for every socket."
    return (
        f"the hard limit here is {got} and this container does not grant CAP_SYS_RESOURCE, "
        "so not even root can raise it. One proxied WebSocket is two sockets in nginx (client "
        f"side and agent side), so one nginx worker can hold just under {got // 2:,} of them "
        "here (it also needs a few descriptors of its own: listening socket, logs, epoll): "
        "the connections beyond that were refused by nginx (HTTP 500, "
        '"Too many open files" in its error log), which is the figure\'s ceiling on this '
        "machine, not nginx's or the agents'."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print its figures; with ``--write`` update BENCHMARKS.md."""
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "scale")
    parser.add_argument("--connections", type=int, default=GOAL, help="WebSockets to hold")
    parser.add_argument("--sessions", type=int, default=20, help="agents (one session each)")
    parser.add_argument("--sources", type=int, default=20, help="client source addresses")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight")
    parser.add_argument(
        "--per-session-limit",
        type=int,
        default=0,
        help="agent connection limit to set (0: connections/sessions, rounded up)",
    )
    args = parser.parse_args(argv)
    if args.connections < 1 or not 1 <= args.sessions <= 250 or not 1 <= args.sources <= 240:
        parser.error("need connections >= 1, sessions 1..250, sources 1..240")
    per_session = -(-args.connections // args.sessions)
    limit = args.per_session_limit or per_session
    wanted = 4 * args.connections + 4096
    nofile = raise_nofile_limit(wanted)
    # Each held WebSocket is two nginx connections (client side, agent side).
    worker_connections = max(32768, 2 * args.connections + 1024)

    with BenchStack(
        sessions=args.sessions,
        worker_processes=1,
        agent_env={naming.ENV_MAX_CONNECTIONS: str(limit)},
        nginx_overrides={
            "worker_connections": worker_connections,
            "worker_rlimit_nofile": 2 * worker_connections,
        },
    ) as stack:
        out = asyncio.run(hold(stack, args.connections, args.sources, args.concurrency))

    grown_rss = out.after["rss"] - out.before["rss"]
    grown_pss = out.after["pss"] - out.before["pss"]
    per_rss = grown_rss / max(out.opened, 1)
    per_pss = grown_pss / max(out.opened, 1)
    rows = [
        Row(
            "2a",
            "scale: concurrent WebSockets held through one nginx worker to agents",
            f"{GOAL:,}",
            f"{out.ponged:,} held and answering (of {args.connections:,} attempted)"
            + (
                f"; {args.connections - out.opened} refused by nginx at this machine's "
                f"{out.worker_nofile} open-files hard limit"
                if out.fd_errors
                else ""
            ),
            f"{PREVIOUS_LIMIT} (the system replaced)",
            fmt_ratio(out.ponged, PREVIOUS_LIMIT),
        ),
        Row(
            "2b",
            "scale: nginx worker memory per held WebSocket (RSS / PSS growth)",
            "reported",
            f"{per_rss / 1024:.1f} KiB RSS / {per_pss / 1024:.1f} KiB PSS",
            "n/a",
            "n/a",
        ),
    ]
    failures = ", ".join(f"{n} x {k}" for k, n in out.failures.most_common(5)) or "none"
    extra = [
        f"opened {out.opened:,} in {out.open_seconds:.1f}s; failures: {failures}",
        f"nginx worker RSS {_mib(out.before['rss'])} -> {_mib(out.after['rss'])}, "
        f"PSS {_mib(out.before['pss'])} -> {_mib(out.after['pss'])}",
        f"nginx master RSS {_mib(out.master_after['rss'])}",
        f"agents' RSS (sum) {_mib(out.agents_before)} -> {_mib(out.agents_after)}",
        f"RLIMIT_NOFILE {nofile}; {args.sessions} agents, limit {limit} connections each",
        f"nginx worker's open-files limit {out.worker_nofile}; nginx logged "
        f"'Too many open files' {out.fd_errors} times",
    ]
    print_rows("2. scale", rows, extra)
    if args.write:
        command = (
            f"python bench/scale.py --connections {args.connections} --sessions {args.sessions}"
            f" --sources {args.sources} --write"
        )
        notes = f"""### 2. Scale

nginx rendered by `session_runtime.nginx` with `worker_processes` forced to **1** for this
measurement (the rendered default is `auto`), so the figure is what one nginx process
holds; otherwise the local stack's own config (`local_nginx_config`) with
`worker_connections` {worker_connections} and `worker_rlimit_nofile`
{2 * worker_connections}. One asyncio client
(`websockets`, no compression, no client keep-alive pings) opened {args.connections:,}
session WebSockets through nginx to {args.sessions} agents, each on its own 127.x address
({per_session} connections per session). The agent caps connections per session
(default 8); the agents ran with `{naming.ENV_MAX_CONNECTIONS}={limit}`, so the cap did not
limit the figure. {args.concurrency} handshakes were in flight at once, and client source
addresses were spread over {args.sources} addresses from 127.0.0.10 so ephemeral ports do
not run out. The benchmark asks for RLIMIT_NOFILE {wanted} (inherited
by nginx and the agents; nginx's worker also asks for `worker_rlimit_nofile`) and got
{nofile}: {_nofile_note(nofile, wanted)} After all were open, every connection sent a protocol
`ping` and counted only if its agent's `pong` came back through nginx.

- opened {out.opened:,} in {out.open_seconds:.1f} s; answered ping: {out.ponged:,};
  failures: {failures}
- nginx worker's open-files limit (from /proc/<pid>/limits): {out.worker_nofile}; nginx
  logged "Too many open files" {out.fd_errors} times
- nginx worker RSS {_mib(out.before["rss"])} -> {_mib(out.after["rss"])}, PSS
  {_mib(out.before["pss"])} -> {_mib(out.after["pss"])} (from /proc/<pid>/status and
  smaps_rollup): {per_rss / 1024:.1f} KiB RSS, {per_pss / 1024:.1f} KiB PSS per connection
  (each held WebSocket is two sockets in nginx: client side and agent side).
- the {args.sessions} agents together: RSS {_mib(out.agents_before)} ->
  {_mib(out.agents_after)} ({(out.agents_after - out.agents_before) / max(out.opened, 1) / 1024:.1f}
  KiB per connection, Python `websockets` server side).
"""
        update_benchmarks_md(2, rows, command, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
