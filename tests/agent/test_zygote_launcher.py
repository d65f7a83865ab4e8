"""The launcher's choices and the zygote's own rules, with the probe as entry point."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from session_runtime.agent import zygote as wire
from session_runtime.agent.launcher import GamLauncher, PythonGam, find_python_gam
from session_runtime.agent.zygote_client import ZygoteGone, ZygoteProcess
from tests.agent.test_runner import (
    Collected,
    Probe,
    agent_config,
    command,
    probe,
    probe_env,
    started_launcher,
    wait_for,
)
from tests.support.agents import real_gam_bin

__all__ = ["probe"]  # the fixture, shared with test_runner


def test_the_first_command_waits_for_the_booting_zygote_and_runs_warm(probe: Probe) -> None:
    async def scenario() -> str:
        launcher = GamLauncher(agent_config(probe, "warm"), python_gam=probe.python_gam)
        await launcher.start()
        try:
            assert launcher.mode == "cold"  # still importing
            outcome = await command(probe, launcher, ["exit", "0"], Collected()).run()
            return outcome.gam_mode
        finally:
            await launcher.close()

    assert asyncio.run(scenario()) == "warm"


def test_a_zygote_that_cannot_import_its_entry_leaves_the_agent_cold(probe: Probe) -> None:
    broken = PythonGam(str(probe.script), sys.executable, "no_such_module_here:main")

    async def scenario() -> tuple[str, str, int]:
        launcher = GamLauncher(agent_config(probe, "warm"), python_gam=broken)
        await launcher.start()
        try:
            sink = Collected()
            outcome = await command(probe, launcher, ["exit", "5"], sink).run()
            for _ in range(5):  # every command retries, until the failure limit
                await command(probe, launcher, ["exit", "0"], Collected()).run()
            await wait_for(lambda: launcher._booting is None or launcher._booting.done())
            return outcome.gam_mode, launcher.mode, launcher._failures
        finally:
            await launcher.close()

    mode, now, failures = asyncio.run(scenario())
    assert (mode, now) == ("cold", "cold")
    assert failures == 3


def test_cold_mode_asked_for_starts_no_zygote(probe: Probe) -> None:
    async def scenario() -> tuple[str, int | None]:
        async with started_launcher(probe, "cold") as launcher:
            outcome = await command(probe, launcher, ["exit", "0"], Collected()).run()
            return outcome.gam_mode, launcher.zygote_pid

    assert asyncio.run(scenario()) == ("cold", None)


def test_only_the_installed_gam_console_script_is_warm_capable(
    tmp_path: Path, fake_gam: str
) -> None:
    assert find_python_gam(fake_gam) is None
    assert find_python_gam(str(tmp_path / "missing")) is None
    binary = tmp_path / "gam"
    binary.write_bytes(b"\x7fELF not a script")
    binary.chmod(0o755)
    assert find_python_gam(str(binary)) is None, "a PyInstaller-style binary runs cold"
    found = find_python_gam(real_gam_bin())
    if found is not None:
        assert found.entry == wire.GAM_ENTRY
        assert Path(found.interpreter).exists()


def test_the_zygote_answers_a_malformed_request_and_keeps_serving(probe: Probe) -> None:
    async def scenario() -> int:
        zygote = await ZygoteProcess.start(
            sys.executable, "gamprobe:main", env=probe_env(probe), cwd=probe.cwd
        )
        try:
            socket.send_fds(zygote._sock, [b"[1, 2]"], [])
            r, w = os.pipe()
            try:
                child = await zygote.spawn(
                    [str(probe.script), "exit", "9"],
                    env=probe_env(probe),
                    cwd=probe.cwd,
                    fds=[r, w, w],
                    tty=False,
                )
            finally:
                os.close(r)
                os.close(w)
            return await child.wait()
        finally:
            await zygote.close()

    assert asyncio.run(scenario()) == 9


def test_closing_the_zygote_kills_what_still_runs_and_later_spawns_fail(probe: Probe) -> None:
    async def scenario() -> tuple[int, bool]:
        zygote = await ZygoteProcess.start(
            sys.executable, "gamprobe:main", env=probe_env(probe), cwd=probe.cwd
        )
        null = os.open(os.devnull, os.O_RDWR)
        try:
            child = await zygote.spawn(
                [str(probe.script), "sigint"],
                env=probe_env(probe),
                cwd=probe.cwd,
                fds=[null, null, null],
                tty=False,
            )
        finally:
            os.close(null)
        await zygote.close()
        returncode = await child.wait()  # orphaned: seen through a pidfd
        with pytest.raises(ZygoteGone):
            await zygote.spawn(["x"], env={}, cwd=probe.cwd, fds=[0, 1, 2], tty=False)
        return returncode, child.status_lost

    returncode, lost = asyncio.run(scenario())
    assert lost
    assert returncode == 255


def test_the_zygote_module_refuses_a_bad_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "session_runtime.agent.zygote"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"usage" in done.stderr
