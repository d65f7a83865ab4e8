"""200 MB of output through the agent with its memory bounded by backpressure.

Prints the agent's peak RSS (not asserted on time; memory is asserted bounded).
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from session_runtime.client import SessionConnection
from tests.agent.conftest import TOKEN
from tests.support.agents import running_agent
from tests.support.memory import PeakRss

TOTAL_BYTES = 200 * 1024 * 1024
#: Far below what buffering 200 MB would take; the agent idles around 40 MB.
RSS_BOUND_BYTES = 160 * 1024 * 1024


def test_200_mb_streams_through_with_bounded_agent_memory(tmp_path: Path, fake_gam: str) -> None:
    with running_agent("stream", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam) as agent:
        baseline = psutil.Process(agent.process.pid).memory_info().rss
        received = 0
        chunks = 0
        with PeakRss(agent.process.pid) as rss, SessionConnection.open(agent.url, TOKEN) as conn:
            started = time.monotonic()
            stream = conn.stream(["spam", str(TOTAL_BYTES)], timeout=600)
            first = next(stream)
            received += len(first.data)
            time.sleep(1.0)  # a slow client: the agent must stall GAM, not buffer
            paused_rss = psutil.Process(agent.process.pid).memory_info().rss
            for chunk in stream:
                assert chunk.stream == "stdout"
                received += len(chunk.data)
                chunks += 1
            elapsed = time.monotonic() - started
        assert conn.last_exit is not None and conn.last_exit.code == 0
    assert received == TOTAL_BYTES
    print(
        f"\nstreamed {received / 2**20:.0f} MiB in {chunks + 1} chunks, {elapsed:.1f}s "
        f"({received / 2**20 / elapsed:.0f} MiB/s); agent RSS baseline "
        f"{baseline / 2**20:.1f} MiB, while paused {paused_rss / 2**20:.1f} MiB, "
        f"peak {rss.peak / 2**20:.1f} MiB"
    )
    assert paused_rss < RSS_BOUND_BYTES
    assert rss.peak < RSS_BOUND_BYTES
