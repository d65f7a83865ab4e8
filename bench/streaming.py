"""Benchmark 4 - streaming: a large command output through the agent, and through
the agent and nginx, in MB/s, with each agent's peak RSS; a raw pipe on the same
machine is the physical reference.

The command is the test suite's fake GAM (``spam BYTES``: ``x`` lines in 64 KiB
writes), so GAM itself is not what is measured. References, each started from an
argv (no shell): ``head -c BYTES /dev/zero | cat > /dev/null`` (what a pipe moves on
this machine) and ``fake-gam spam BYTES | cat > /dev/null`` (how fast the generator
writes). MB = 10^6 bytes.

    python bench/streaming.py [--bytes 1000000000] [--write]
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import (
    REPO_ROOT,
    Row,
    base_parser,
    fmt_ratio,
    print_rows,
    proc_memory,
    stop_process,
    update_benchmarks_md,
)
from _stack import Agent, BenchStack
from websockets.asyncio.client import connect

from session_runtime import naming

__all__ = ["main"]

GIB = 1 << 30


@dataclass(frozen=True)
class Run:
    """One command streamed to completion."""

    received: int
    seconds: float
    exit_code: int
    frames: int
    rss_before: int
    hwm_after: int

    @property
    def mb_s(self) -> float:
        """Payload throughput, MB/s (10^6 bytes)."""
        return self.received / self.seconds / 1e6


async def stream_once(url: str, agent: Agent, size: int) -> Run:
    """Run ``spam size`` in the session and count the output bytes until ``exit``.

    Args:
        url: direct or proxied URL of the session.
        agent: the agent (token, pid).
        size: bytes the fake GAM writes.
    """
    assert agent.proc is not None
    rss_before = proc_memory(agent.proc.pid)["rss"]
    async with connect(
        url,
        subprotocols=[naming.SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {agent.token}"},
        compression=None,
        max_size=None,
        ping_interval=None,
    ) as ws:
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"expected a welcome, got {welcome.get('type')!r}")
        received = frames = 0
        start = time.perf_counter()
        await ws.send(json.dumps({"type": "command", "id": "bench", "argv": ["spam", str(size)]}))
        while True:
            message = json.loads(await ws.recv())
            kind = message.get("type")
            if kind == "output":
                received += len(message["data"])
                frames += 1
            elif kind == "exit":
                seconds = time.perf_counter() - start
                code = int(message["code"])
                break
            elif kind == "error":
                raise RuntimeError(f"agent error: {message.get('code')}: {message.get('message')}")
    hwm = proc_memory(agent.proc.pid)["hwm"]
    return Run(received, seconds, code, frames, rss_before, hwm)


def pipe_seconds(producer: Sequence[str]) -> float:
    """Time ``producer | cat > /dev/null`` (two argv processes joined by a pipe, no shell).

    Args:
        producer: argv of the writer.
    """
    start = time.perf_counter()
    writer = subprocess.Popen(list(producer), stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None
        reader = subprocess.Popen(["cat"], stdin=writer.stdout, stdout=subprocess.DEVNULL)
        writer.stdout.close()  # the reader owns the pipe's read end now
        try:
            reader.wait(timeout=600)
            writer.wait(timeout=60)
        finally:
            stop_process(reader)
    finally:
        stop_process(writer)
    if writer.returncode != 0 or reader.returncode != 0:
        raise RuntimeError(
            f"pipe failed: {producer[0]} {writer.returncode}, cat {reader.returncode}"
        )
    return time.perf_counter() - start


def _mib(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print its figures; with ``--write`` update BENCHMARKS.md."""
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "streaming")
    parser.add_argument("--bytes", type=int, default=GIB, help="output size (default 1 GiB)")
    args = parser.parse_args(argv)
    if args.bytes < 1:
        parser.error("--bytes must be at least 1")
    size = args.bytes
    sys.path.insert(0, str(REPO_ROOT))
    from tests.support.fake_gam import fake_gam_bin

    with tempfile.TemporaryDirectory(prefix="bench-gam-") as tmp:
        gam = fake_gam_bin(Path(tmp))
        raw = size / pipe_seconds(["head", "-c", str(size), "/dev/zero"]) / 1e6
        gen = size / pipe_seconds([gam, "spam", str(size)]) / 1e6
        with BenchStack(sessions=2, gam_bin=gam) as stack:
            direct_agent, proxy_agent = stack.agents
            direct = asyncio.run(stream_once(stack.direct_url(direct_agent), direct_agent, size))
            proxied = asyncio.run(stream_once(stack.proxy_url(proxy_agent), proxy_agent, size))
    for name, run in (("direct", direct), ("nginx", proxied)):
        if run.received != size or run.exit_code != 0:
            print(
                f"warning: {name} run received {run.received} of {size} bytes, exit {run.exit_code}"
            )

    label = f"{size / 1e9:.2f} GB" if size >= 10**8 else f"{size / 1e6:.1f} MB"
    rows = [
        Row(
            "4a",
            f"streaming: {label} output through the agent (direct), MB/s",
            "reported; bounded agent memory",
            f"{direct.mb_s:,.0f} MB/s",
            f"{raw:,.0f} MB/s raw pipe",
            fmt_ratio(direct.mb_s, raw),
        ),
        Row(
            "4b",
            f"streaming: {label} output through the agent and nginx, MB/s",
            "close to direct",
            f"{proxied.mb_s:,.0f} MB/s",
            f"{direct.mb_s:,.0f} MB/s direct to the agent",
            fmt_ratio(proxied.mb_s, direct.mb_s),
        ),
        Row(
            "4c",
            "streaming: agent peak RSS (VmHWM) while streaming through nginx",
            "bounded (independent of output size)",
            f"{_mib(proxied.hwm_after)} (direct run: {_mib(direct.hwm_after)})",
            f"{_mib(proxied.rss_before)} RSS before the command",
            fmt_ratio(proxied.hwm_after, proxied.rss_before),
        ),
    ]
    extra = [
        f"raw pipe head|cat: {raw:,.0f} MB/s; fake GAM spam|cat: {gen:,.0f} MB/s",
        f"direct: {direct.received:,} bytes in {direct.seconds:.2f}s, {direct.frames:,} frames",
        f"nginx:  {proxied.received:,} bytes in {proxied.seconds:.2f}s, {proxied.frames:,} frames",
    ]
    print_rows("4. streaming", rows, extra)
    if args.write:
        command = f"python bench/streaming.py --bytes {size} --write"
        notes = f"""### 4. Streaming

The fake GAM of the tests (`tests/support/fake_gam.py`, `spam {size}`: lines of `x`
written 64 KiB at a time) is run by an agent as a session command; one asyncio
`websockets` client (no compression) reads every `output` frame, decodes its JSON
and counts the `data` until the `exit` frame. Two agents of one stack: one read
directly, one through nginx (the local stack's config), so each agent's peak RSS
(`VmHWM` from /proc/<pid>/status) belongs to one run. MB = 10^6 bytes. All four
processes of a run (fake GAM, agent, nginx, client) share the machine's 2 cores.

- raw pipe `head -c {size} /dev/zero | cat > /dev/null` (argv processes, no shell):
  {raw:,.0f} MB/s; the generator itself, `fake-gam spam {size} | cat > /dev/null`:
  {gen:,.0f} MB/s
- direct to the agent: {direct.received:,} bytes in {direct.seconds:.2f} s =
  {direct.mb_s:,.0f} MB/s in {direct.frames:,} frames; agent RSS
  {_mib(direct.rss_before)} before, peak {_mib(direct.hwm_after)}
- through nginx: {proxied.received:,} bytes in {proxied.seconds:.2f} s =
  {proxied.mb_s:,.0f} MB/s in {proxied.frames:,} frames; agent RSS
  {_mib(proxied.rss_before)} before, peak {_mib(proxied.hwm_after)}
"""
        update_benchmarks_md(4, rows, command, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
