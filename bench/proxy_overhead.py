"""Benchmark 1 - proxy overhead: WebSocket round trips and message throughput,
direct to the agent vs through nginx (rendered by session_runtime.nginx, resolving
through dnsmasq), measured in one run against the same agent.

A round trip is one protocol ``ping`` answered by the agent's ``pong``. Direct and
proxied samples are interleaved one by one so both see the same machine load.
Throughput keeps a window of pings in flight and counts pongs per second.

    python bench/proxy_overhead.py [--rounds 5000] [--messages 20000] [--write]
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

from _common import (
    Row,
    Summary,
    base_parser,
    fmt_ratio,
    print_rows,
    summarize,
    update_benchmarks_md,
)
from _stack import Agent, BenchStack
from websockets.asyncio.client import ClientConnection, connect

from session_runtime import naming

__all__ = ["main"]

PING = json.dumps({"type": "ping"})


async def open_session(url: str, agent: Agent) -> ClientConnection:
    """Open a session WebSocket and consume the agent's welcome.

    Args:
        url: direct or proxied URL of the session.
        agent: the agent (for its token).
    """
    ws = await connect(
        url,
        subprotocols=[naming.SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {agent.token}"},
        compression=None,
        max_size=None,
        ping_interval=None,
    )
    welcome = json.loads(await ws.recv())
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"expected a welcome, got {welcome.get('type')!r}")
    return ws


async def _pong(ws: ClientConnection) -> None:
    while True:
        message = json.loads(await ws.recv())
        if message.get("type") == "pong":
            return


async def round_trip(ws: ClientConnection) -> float:
    """Return the seconds one ping takes to come back as a pong.

    Args:
        ws: an open session.
    """
    start = time.perf_counter()
    await ws.send(PING)
    await _pong(ws)
    return time.perf_counter() - start


async def frame_round_trip(ws: ClientConnection) -> float:
    """Return the seconds a WebSocket ping frame takes to come back as a pong frame.

    Args:
        ws: an open session (the agent's websockets library answers, not the session).
    """
    start = time.perf_counter()
    waiter = await ws.ping()
    await waiter
    return time.perf_counter() - start


async def throughput(ws: ClientConnection, messages: int, window: int) -> float:
    """Return pongs per second with ``window`` pings in flight.

    Args:
        ws: an open session.
        messages: how many pings in total.
        window: how many may be unanswered at once.
    """
    sent = received = 0
    start = time.perf_counter()
    while received < messages:
        while sent < messages and sent - received < window:
            await ws.send(PING)
            sent += 1
        await _pong(ws)
        received += 1
    return messages / (time.perf_counter() - start)


async def measure(
    stack: BenchStack, rounds: int, messages: int, window: int, repeats: int
) -> tuple[Summary, Summary, list[float], list[float], Summary, Summary]:
    """Measure both paths in one run: interleaved round trips, then alternating bursts.

    Args:
        stack: the running stack.
        rounds: round trips per path.
        messages: pings per throughput burst.
        window: pings in flight during a burst.
        repeats: bursts per path.
    """
    agent = stack.agents[0]
    direct = await open_session(stack.direct_url(agent), agent)
    proxied = await open_session(stack.proxy_url(agent), agent)
    try:
        for _ in range(min(500, rounds)):  # warm-up: caches, DNS answer, JIT-free but lazy paths
            await round_trip(direct)
            await round_trip(proxied)
        d_rtt: list[float] = []
        p_rtt: list[float] = []
        for i in range(rounds):
            first, second = (direct, proxied) if i % 2 == 0 else (proxied, direct)
            a = await round_trip(first)
            b = await round_trip(second)
            d_rtt.append(a if first is direct else b)
            p_rtt.append(b if first is direct else a)
        d_frame: list[float] = []
        p_frame: list[float] = []
        for i in range(rounds):
            first, second = (direct, proxied) if i % 2 == 0 else (proxied, direct)
            a = await frame_round_trip(first)
            b = await frame_round_trip(second)
            d_frame.append(a if first is direct else b)
            p_frame.append(b if first is direct else a)
        d_tp: list[float] = []
        p_tp: list[float] = []
        for _ in range(repeats):
            d_tp.append(await throughput(direct, messages, window))
            p_tp.append(await throughput(proxied, messages, window))
        return (
            summarize(d_rtt),
            summarize(p_rtt),
            d_tp,
            p_tp,
            summarize(d_frame),
            summarize(p_frame),
        )
    finally:
        await direct.close()
        await proxied.close()


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def build_rows(
    d: Summary,
    p: Summary,
    d_tp: Sequence[float],
    p_tp: Sequence[float],
    *,
    d_frame: Summary,
    p_frame: Summary,
) -> list[Row]:
    """Turn the measurements into table rows (reference: the direct path)."""
    d_best, p_best = max(d_tp), max(p_tp)
    return [
        Row(
            "1a",
            "proxy overhead: WebSocket RTT median (direct vs through nginx)",
            "proxy adds <= 10% (ratio <= 1.10x)",
            f"{_us(p.median)} through nginx",
            f"{_us(d.median)} direct",
            fmt_ratio(p.median, d.median),
        ),
        Row(
            "1b",
            "proxy overhead: WebSocket RTT p99",
            "proxy adds <= 10% (ratio <= 1.10x)",
            f"{_us(p.p99)} through nginx",
            f"{_us(d.p99)} direct",
            fmt_ratio(p.p99, d.p99),
        ),
        Row(
            "1c",
            "proxy overhead: message throughput (ping/pong, window in flight)",
            "close to direct",
            f"{p_best:,.0f} msg/s through nginx",
            f"{d_best:,.0f} msg/s direct",
            fmt_ratio(p_best, d_best),
        ),
        Row(
            "1d",
            "proxy overhead: WebSocket ping-frame RTT median (agent's library answers; "
            "no session work, so nginx's share shows most)",
            "reported",
            f"{_us(p_frame.median)} through nginx",
            f"{_us(d_frame.median)} direct",
            fmt_ratio(p_frame.median, d_frame.median),
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print its figures; with ``--write`` update BENCHMARKS.md."""
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "proxy overhead")
    parser.add_argument("--rounds", type=int, default=5000, help="round trips per path")
    parser.add_argument("--messages", type=int, default=20000, help="pings per burst")
    parser.add_argument("--window", type=int, default=32, help="pings in flight")
    parser.add_argument("--repeats", type=int, default=3, help="bursts per path")
    args = parser.parse_args(argv)
    for name in ("rounds", "messages", "window", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")

    with BenchStack(sessions=1) as stack:
        d, p, d_tp, p_tp, d_frame, p_frame = asyncio.run(
            measure(stack, args.rounds, args.messages, args.window, args.repeats)
        )
    rows = build_rows(d, p, d_tp, p_tp, d_frame=d_frame, p_frame=p_frame)
    added = p.median - d.median
    extra = [
        f"RTT direct: median {_us(d.median)}, p95 {_us(d.p95)}, p99 {_us(d.p99)} (n={d.n})",
        f"RTT nginx:  median {_us(p.median)}, p95 {_us(p.p95)}, p99 {_us(p.p99)} (n={p.n})",
        f"nginx adds {_us(added)} per round trip at the median",
        f"ping frames: direct median {_us(d_frame.median)} p99 {_us(d_frame.p99)}; "
        f"nginx median {_us(p_frame.median)} p99 {_us(p_frame.p99)}",
        f"throughput bursts direct: {', '.join(f'{x:,.0f}' for x in d_tp)} msg/s",
        f"throughput bursts nginx:  {', '.join(f'{x:,.0f}' for x in p_tp)} msg/s",
    ]
    print_rows("1. proxy overhead", rows, extra)
    if args.write:
        command = (
            f"python bench/proxy_overhead.py --rounds {args.rounds} --messages {args.messages}"
            f" --window {args.window} --repeats {args.repeats} --write"
        )
        notes = f"""### 1. Proxy overhead

One agent, one nginx (worker_processes as rendered by `session_runtime.nginx`), the
session name resolved by nginx through dnsmasq exactly as in the local stack. Two
WebSockets to the same session are open at once, one straight to the agent's loopback
address and one through nginx; a round trip is a protocol `ping` answered by the
agent's `pong`, and direct and proxied samples alternate one by one (n={d.n} each, after
a warm-up) so both paths see the same machine load. Throughput keeps {args.window} pings
in flight for {args.messages:,} messages; best of {args.repeats} bursts per path is
reported (all bursts: direct {", ".join(f"{x:,.0f}" for x in d_tp)}; nginx
{", ".join(f"{x:,.0f}" for x in p_tp)} msg/s). The client is the asyncio `websockets`
library without compression, identical for both paths. Throughput is CPU-bound: client,
nginx and agent share the 2 cores, so the cycles nginx spends are taken from the other two
and the proxied figure falls further behind than the added latency alone would explain.

- RTT direct: median {_us(d.median)}, p95 {_us(d.p95)}, p99 {_us(d.p99)}
- RTT through nginx: median {_us(p.median)}, p95 {_us(p.p95)}, p99 {_us(p.p99)}
- nginx adds {_us(added)} per round trip at the median ({fmt_ratio(p.median, d.median)}).
- WebSocket ping frames (answered inside the agent's `websockets` library, no session
  code): direct median {_us(d_frame.median)}, p99 {_us(d_frame.p99)}; through nginx median
  {_us(p_frame.median)}, p99 {_us(p_frame.p99)} ({fmt_ratio(p_frame.median, d_frame.median)}).
  This is the smallest round trip the agent can give, so nginx's fixed cost is the
  largest share of it; the session-message RTT above is the one users see.
"""
        update_benchmarks_md(1, rows, command, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
