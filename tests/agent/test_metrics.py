"""The agent's /metrics: what each event counts, served without a token, never activity."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from session_runtime import naming
from session_runtime.agent.metrics import AgentMetrics, command_result
from session_runtime.agent.observe import ClientInfo, CommandInfo
from session_runtime.agent.runner import RunOutcome
from tests.agent.conftest import TOKEN
from tests.support.agents import RunningAgent, start_agent

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
CLIENT = ClientInfo("c1", "127.0.0.1")

REJECTED_CLIENT = ClientInfo(connection_id="c9", client="198.51.100.7", user=None)


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text page, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(agent: RunningAgent) -> tuple[str, Samples]:
    """GET /metrics (no token) and return the content type and the parsed samples."""
    with urllib.request.urlopen(  # noqa: S310 - loopback
        f"{agent.http_url}{naming.METRICS_PATH}", timeout=5
    ) as response:
        return response.headers["Content-Type"], parse(response.read().decode())


def test_each_result_is_classified() -> None:
    assert command_result(RunOutcome(0, 1)) == "ok"
    assert command_result(RunOutcome(2, 1)) == "error"
    assert command_result(RunOutcome(143, 1, cancelled=True)) == "cancelled"
    assert command_result(RunOutcome(143, 1, detached=True)) == "cancelled"
    assert command_result(RunOutcome(143, 1, cancelled=True, timed_out=True)) == "timed_out"


def test_events_move_exactly_their_metrics() -> None:
    metrics = AgentMetrics()
    cmd = CommandInfo("k", ("info",), started_by=CLIENT)
    metrics.connected(CLIENT)
    metrics.connected(CLIENT)
    metrics.disconnected(CLIENT, 1000)
    metrics.rejected(REJECTED_CLIENT, 401, "token")
    for _ in range(3):
        metrics.command_started(cmd)
    metrics.command_finished(cmd, RunOutcome(0, 20, gam_mode="warm"), 100)
    metrics.command_finished(cmd, RunOutcome(1, 1500), 5)
    metrics.command_finished(cmd, RunOutcome(143, 30, cancelled=True), 0)
    metrics.attached(CLIENT, "k", 0)
    metrics.cancel_requested(CLIENT, "k", "cancelled")
    s = parse(generate_latest(metrics.registry).decode())
    assert s[("gamgui_agent_commands_started_total", ())] == 3
    for result, count in {"ok": 1, "error": 1, "cancelled": 1, "timed_out": 0}.items():
        assert s[("gamgui_agent_commands_finished_total", (("result", result),))] == count
    assert s[("gamgui_agent_command_duration_seconds_count", ())] == 3
    assert s[("gamgui_agent_command_duration_seconds_sum", ())] == 1.55
    assert s[("gamgui_agent_command_duration_seconds_bucket", (("le", "0.05"),))] == 2
    assert s[("gamgui_agent_output_bytes_total", ())] == 105
    assert s[("gamgui_agent_gam_runs_total", (("mode", "warm"),))] == 1
    assert s[("gamgui_agent_gam_runs_total", (("mode", "cold"),))] == 2
    assert s[("gamgui_agent_connections_open", ())] == 1
    assert s[("gamgui_agent_connections_total", ())] == 2
    assert s[("gamgui_agent_handshakes_rejected_total", (("reason", "token"),))] == 1
    assert s[("gamgui_agent_attaches_total", ())] == 1
    assert s[("gamgui_agent_cancels_total", (("reason", "cancelled"),))] == 1
    assert s[("gamgui_agent_uptime_seconds", ())] >= 0


def test_metrics_are_served_without_a_token(agent: RunningAgent) -> None:
    content_type, samples = scrape(agent)
    assert content_type.startswith("text/plain; version=")
    assert ("gamgui_agent_uptime_seconds", ()) in samples
    assert ("gamgui_agent_commands_started_total", ()) in samples


def test_scrapes_and_probes_are_not_activity_so_the_idle_timeout_fires(
    tmp_path: Path, fake_gam: str
) -> None:
    agent = start_agent(
        "idle-m",
        TOKEN,
        tmp_path=tmp_path,
        gam_bin=fake_gam,
        extra_env={naming.ENV_IDLE_TIMEOUT: "1.5"},
    )
    try:
        scrapes = 0
        deadline = time.monotonic() + 30  # a bound for a broken agent, not a measurement
        while agent.process.poll() is None and time.monotonic() < deadline:
            try:
                scrape(agent)
                agent.health(timeout=2)
                scrapes += 1
            except OSError:
                break  # it is going away
        assert agent.wait_exit(timeout=15) == 0
    finally:
        agent.stop()
    assert scrapes > 1
    (idle,) = agent.events("idle_timeout")
    assert agent.events("stopped")[0]["reason"] == "idle"
    assert float(str(idle["idle_s"])) >= 1.5


def test_every_agent_metric_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = docs[docs.index("## Metrics") :]
    for family in AgentMetrics().registry.collect():
        shown = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{shown}`" in section, shown
