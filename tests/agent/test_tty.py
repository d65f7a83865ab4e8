"""Commands under a pseudo-terminal, warm and cold: size, resize, Ctrl-C, EOF, cancel."""

from __future__ import annotations

import asyncio
import signal

import pytest

from session_runtime.agent.runner import CommandRun, StdinClosed
from session_runtime.protocol import GamMode, TtySize
from tests.agent.test_runner import (
    MODES,
    Collected,
    Probe,
    command,
    probe,
    started_launcher,
)

__all__ = ["probe"]  # the fixture, shared with test_runner


@pytest.mark.parametrize("mode", MODES)
def test_a_terminal_command_sees_a_controlling_tty_of_the_size_and_its_resizes(
    probe: Probe, mode: GamMode
) -> None:
    async def scenario() -> tuple[int, Collected]:
        async with started_launcher(probe, mode) as launcher:
            sink = Collected()
            run = command(probe, launcher, ["tty"], sink, tty=TtySize(cols=100, rows=30))
            task = asyncio.create_task(run.run())
            await sink.until("ready")
            run.resize(132, 43)
            # Python runs a signal handler between bytecodes: one that arrives just
            # before the probe blocks in read() runs after the next input, not before.
            await run.write_stdin("hello\r")
            await sink.until("got hello at 132x43")
            run.close_stdin()
            with pytest.raises(StdinClosed):
                await run.write_stdin("after eof")
            outcome = await task
            assert outcome.gam_mode == mode
            return outcome.code, sink

    code, sink = asyncio.run(scenario())
    assert code == 0
    assert {stream for stream, _ in sink.chunks} == {"tty"}
    text = sink.text()
    assert "isatty 111 size 100x30 leader 1 fg 1" in text
    assert "winch 132x43" in text
    # The terminal echoes input and maps \n to \r\n on output, as a real one does.
    assert "hello\r\n" in text
    assert "got hello at 132x43\r\n" in text
    assert text.rstrip().endswith("eof")


@pytest.mark.parametrize("mode", MODES)
def test_ctrl_c_typed_into_the_terminal_interrupts_the_command(probe: Probe, mode: GamMode) -> None:
    async def scenario() -> tuple[int, Collected]:
        async with started_launcher(probe, mode) as launcher:
            sink = Collected()
            run = command(probe, launcher, ["sigint"], sink, tty=TtySize(cols=80, rows=24))
            task = asyncio.create_task(run.run())
            await sink.until("ready")
            await run.write_stdin("\x03")
            outcome = await task
            assert not outcome.cancelled
            return outcome.code, sink

    code, sink = asyncio.run(scenario())
    assert "interrupted" in sink.text()
    assert code == 3


@pytest.mark.parametrize("mode", MODES)
def test_cancelling_a_terminal_command_ends_its_group(probe: Probe, mode: GamMode) -> None:
    async def scenario() -> int:
        async with started_launcher(probe, mode) as launcher:
            sink = Collected()
            run = command(probe, launcher, ["sigint"], sink, tty=TtySize(cols=80, rows=24))
            task = asyncio.create_task(run.run())
            await sink.until("ready")
            run.stop("cancelled")
            outcome = await task
            assert outcome.cancelled
            return outcome.code

    assert asyncio.run(scenario()) == 128 + signal.SIGTERM


@pytest.mark.parametrize("mode", MODES)
def test_resize_before_start_sets_the_initial_size(probe: Probe, mode: GamMode) -> None:
    async def scenario() -> Collected:
        async with started_launcher(probe, mode) as launcher:
            sink = Collected()
            run = command(probe, launcher, ["tty"], sink, tty=TtySize(cols=80, rows=24))
            run.resize(90, 20)
            task = asyncio.create_task(run.run())
            await sink.until("ready")
            run.close_stdin()
            await task
            return sink

    assert "size 90x20" in asyncio.run(scenario()).text()


def test_a_missing_program_under_a_terminal_reports_127_on_it(probe: Probe) -> None:
    async def scenario() -> tuple[int, Collected]:
        sink = Collected()
        run = CommandRun(
            [str(probe.directory / "no-such-gam")],
            sink,
            env={"PATH": "/usr/bin:/bin"},
            cwd=probe.cwd,
            kill_grace_s=1,
            tty=TtySize(cols=80, rows=24),
        )
        return (await run.run()).code, sink

    code, sink = asyncio.run(scenario())
    assert code == 127
    assert "cannot execute" in sink.text("tty")
