"""Warm GAM through a real agent and the real ``gam``: same output as cold, per-session
config, cancel and timeout with no survivor, the zygote coming back after SIGKILL,
and the fallbacks to cold."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from session_runtime import naming
from session_runtime.agent.config import load_config
from session_runtime.agent.launcher import find_python_gam
from session_runtime.client import SessionConnection
from session_runtime.errors import CommandTimeoutError, SettingsError
from tests.agent.conftest import TOKEN
from tests.support.agents import RunningAgent, real_gam_bin, running_agent

pytestmark = pytest.mark.skipif(
    find_python_gam(real_gam_bin()) is None, reason="the gam7 package is not installed"
)

#: Offline GAM commands: no credentials needed, or GAM's own error without them.
CORPUS = [
    "version",
    "version simple",
    "help",
    "info domain",
    "print users",
    "nosuchcommand",
    "version nosuchargument",
    "info user",
    "config domain example.org save",
    "version",
]
_TIME = re.compile(r"^Time: .*$", re.MULTILINE)
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d")
_STARTUP_S = 90.0


def wait_until(condition: object, timeout: float = _STARTUP_S) -> None:
    """Poll ``condition()`` until true; fail after ``timeout`` seconds."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def zygote_of(agent: RunningAgent) -> psutil.Process | None:
    """The agent's zygote process, if one runs."""
    for child in psutil.Process(agent.process.pid).children():
        with contextlib.suppress(psutil.Error):
            if "session_runtime.agent.zygote" in " ".join(child.cmdline()):
                return child
    return None


@contextlib.contextmanager
def gam_agent(session_id: str, tmp_path: Path, mode: str, **extra: str) -> Iterator[RunningAgent]:
    """An agent running the real gam in ``mode``; a warm one is waited on until warm."""
    env = {naming.ENV_GAM_MODE: mode, "PYTHONUNBUFFERED": "1", **extra}
    with running_agent(session_id, TOKEN, tmp_path=tmp_path, extra_env=env) as agent:
        if mode == "warm":
            wait_until(lambda: agent.health()["gam_mode"] == "warm")
        yield agent


def masked(text: str, agent: RunningAgent) -> str:
    """Output with what names the process masked: the Time line, stamps, the config dir."""
    text = text.replace(str(agent.gam_config_dir), "<GAMCFGDIR>")
    return _STAMP.sub("<STAMP>", _TIME.sub("Time: <TIME>", text))


def run_corpus(agent: RunningAgent, batch_file: Path) -> list[tuple[str, int, str, str]]:
    results = []
    with SessionConnection.open(agent.url, TOKEN) as conn:
        for line in [*CORPUS, f"batch {batch_file}"]:
            result = conn.run(line, timeout=120)
            results.append(
                (line, result.exit_code, masked(result.stdout, agent), masked(result.stderr, agent))
            )
    return results


def test_warm_output_and_exit_codes_equal_cold_for_an_offline_corpus(tmp_path: Path) -> None:
    # One GAM line: two would run in parallel pool workers whose stderr interleaves
    # differently from run to run, warm or cold alike.
    batch = tmp_path / "commands.txt"
    batch.write_text("print batch of one\ngam info domain\n", encoding="utf-8")
    with gam_agent("cold-a", tmp_path, "cold") as cold:
        assert cold.health()["gam_mode"] == "cold"
        assert zygote_of(cold) is None
        expected = run_corpus(cold, batch)
    with gam_agent("warm-a", tmp_path, "warm") as warm:
        zygote = zygote_of(warm)
        assert zygote is not None
        got = run_corpus(warm, batch)
        assert warm.health()["gam_mode"] == "warm"
        assert zygote_of(warm) == zygote, "the same zygote served every command"
    assert {code for _, code, _, _ in expected} >= {0, 2}, "the corpus has failures too"
    for want, have in zip(expected, got, strict=True):
        assert have == want


def test_each_warm_session_sees_its_own_gamcfgdir(tmp_path: Path) -> None:
    with (
        gam_agent("cfg-a", tmp_path, "warm") as a,
        gam_agent("cfg-b", tmp_path, "warm") as b,
        SessionConnection.open(a.url, TOKEN) as ca,
        SessionConnection.open(b.url, TOKEN) as cb,
    ):
        assert ca.run("config domain a.example.com save").exit_code == 0
        assert cb.run("config domain b.example.com save").exit_code == 0
        va, vb = ca.run("version"), cb.run("version")
        env_a, env_b = ca.run("version"), cb.run("version")
    assert f"Config File: {a.gam_config_dir}/gam.cfg" in va.stdout
    assert "domain: a.example.com" in va.stdout
    assert f"Config File: {b.gam_config_dir}/gam.cfg" in vb.stdout
    assert "domain: b.example.com" in vb.stdout
    assert env_a.stdout.count("a.example.com") == 1 and "b.example.com" not in env_a.stdout
    assert env_b.stdout.count("b.example.com") == 1 and "a.example.com" not in env_b.stdout


def _gam_groups(agent: RunningAgent) -> dict[int, list[int]]:
    """Process groups of the agent's GAM commands (not the zygote's), with their members."""
    zygote = zygote_of(agent)
    groups: dict[int, list[int]] = {}
    for proc in psutil.Process(agent.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error, OSError):
            if zygote is not None and proc.pid == zygote.pid:
                continue
            if proc.status() != psutil.STATUS_ZOMBIE:
                groups.setdefault(os.getpgid(proc.pid), []).append(proc.pid)
    return groups


def _alive_in(pgid: int) -> list[int]:
    alive = []
    for proc in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                alive.append(proc.pid)
    return alive


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_stopping_a_warm_gam_batch_leaves_no_process_of_its_group(tmp_path: Path, how: str) -> None:
    batch = tmp_path / "slow.txt"
    batch.write_text("gam version simple\nsleep 120\n", encoding="utf-8")
    extra = {naming.ENV_COMMAND_TIMEOUT: "8"} if how == "timeout" else {}
    with gam_agent(f"stop-{how}", tmp_path, "warm", **extra) as agent:
        with SessionConnection.open(agent.url, TOKEN) as conn:
            stream = conn.stream(f"batch {batch}", timeout=120)
            for chunk in stream:
                if "Sleepiing" in chunk.data or "Sleeping" in chunk.data:
                    break
            groups = _gam_groups(agent)
            assert len(groups) == 1, groups
            pgid, members = next(iter(groups.items()))
            assert len(members) >= 3, "gam batch runs a pool and a manager beside GAM"
            if how == "cancel":
                conn.cancel()
            with contextlib.suppress(CommandTimeoutError):
                for _ in stream:
                    pass
            assert conn.last_exit is not None
            assert conn.last_exit.code == 128 + signal.SIGTERM
            assert conn.last_exit.cancelled == (how == "cancel")
            assert conn.last_exit.timed_out == (how == "timeout")
        wait_until(lambda: _alive_in(pgid) == [], timeout=15)
        assert agent.health()["gam_mode"] == "warm"


def test_sigkill_of_the_zygote_between_commands_costs_nothing_and_it_comes_back(
    tmp_path: Path,
) -> None:
    with gam_agent("phoenix", tmp_path, "warm") as agent:
        first = zygote_of(agent)
        assert first is not None
        with SessionConnection.open(agent.url, TOKEN) as conn:
            assert conn.run("version simple").exit_code == 0
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            result = conn.run("version simple")
            assert result.exit_code == 0
            assert result.stdout.startswith("7.")
            wait_until(lambda: agent.health()["gam_mode"] == "warm")
            second = zygote_of(agent)
            assert second is not None and second.pid != first.pid
            assert conn.run("version simple").stdout == result.stdout
        assert [e["pid"] for e in agent.events("zygote_ready")][-1] == second.pid


def test_a_command_outliving_its_zygote_still_reports_its_real_exit_status(
    tmp_path: Path,
) -> None:
    batch = tmp_path / "outlive.txt"
    batch.write_text("gam version simple\nsleep 3\ngam version simple\n", encoding="utf-8")
    with gam_agent("outlive", tmp_path, "warm") as agent:
        zygote = zygote_of(agent)
        assert zygote is not None
        with SessionConnection.open(agent.url, TOKEN) as conn:
            stream = conn.stream(f"batch {batch}", timeout=120)
            for chunk in stream:
                if "Sleepiing" in chunk.data or "Sleeping" in chunk.data:
                    break
            zygote.send_signal(signal.SIGKILL)  # the command is its child: now the agent's
            zygote.wait(timeout=10)
            rest = "".join(chunk.data for chunk in stream if chunk.stream == "stderr")
            assert conn.last_exit is not None
            assert conn.last_exit.code == 0, rest
            assert "exit status is unknown" not in rest
        wait_until(lambda: agent.health()["gam_mode"] == "warm")


def test_a_non_python_gam_bin_runs_cold(tmp_path: Path, fake_gam: str) -> None:
    with running_agent("fake", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam) as agent:
        assert agent.health()["gam_mode"] == "cold"
        with SessionConnection.open(agent.url, TOKEN) as conn:
            assert "fake GAM" in conn.run("version").stdout
        assert zygote_of(agent) is None


def test_gam_mode_setting_is_validated() -> None:
    base = {naming.ENV_SESSION_ID: "s", naming.ENV_SESSION_TOKEN: "t"}
    assert load_config(base).gam_mode == "warm"
    assert load_config({**base, naming.ENV_GAM_MODE: " Cold "}).gam_mode == "cold"
    with pytest.raises(SettingsError, match=naming.ENV_GAM_MODE) as caught:
        load_config({**base, naming.ENV_GAM_MODE: "lukewarm"})
    assert "lukewarm" in str(caught.value.cause)
