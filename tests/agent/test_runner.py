"""The runner's contract, warm and cold: stdin, exit codes, cancel, ordering, memory.

Each test runs in both modes against a probe program (written to a temp dir):
cold executes its wrapper script, warm forks it from a real zygote whose entry
point is the probe's ``main`` (the same machinery as GAM's, with a stand-in).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from session_runtime.agent.config import AgentConfig
from session_runtime.agent.launcher import GamLauncher, PythonGam
from session_runtime.agent.runner import CommandRun, RunOutcome, StdinClosed
from session_runtime.protocol import GamMode, Stream, TtySize

PROBE = textwrap.dedent(
    '''
    """A stand-in for GAM whose behaviour its first argument chooses."""
    import json, os, signal, subprocess, sys, time
    from pathlib import Path


    def _tty():
        size = os.get_terminal_size(0)
        ttys = "".join(str(int(s.isatty())) for s in (sys.stdin, sys.stdout, sys.stderr))
        leader = int(os.getsid(0) == os.getpid())
        foreground = int(os.tcgetpgrp(0) == os.getpgrp())
        print(f"isatty {ttys} size {size.columns}x{size.lines} leader {leader} fg {foreground}")

        def winch(*_):
            now = os.get_terminal_size(0)
            print(f"winch {now.columns}x{now.lines}")

        signal.signal(signal.SIGWINCH, winch)
        print("ready")
        for line in sys.stdin:
            now = os.get_terminal_size(0)
            print(f"got {line.rstrip()} at {now.columns}x{now.lines}")
        print("eof")


    def main():
        cmd, args = sys.argv[1], sys.argv[2:]
        if cmd == "tty":
            _tty()
        elif cmd == "sigint":
            try:
                print("ready")
                for _ in range(2400):  # short sleeps: a signal that lands between
                    time.sleep(0.05)  # bytecode and syscall is still handled
            except KeyboardInterrupt:
                print("interrupted")
                return 3
        elif cmd == "cat":
            data = sys.stdin.read()
            print(f"read {len(data)} {data[:40]!r}")
        elif cmd == "order":
            for i in range(3):
                print(f"out{i}")
                sys.stdin.readline()
                print(f"err{i}", file=sys.stderr)
                sys.stdin.readline()
        elif cmd == "spawn":
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            Path(args[0]).write_text(f"{os.getpid()} {child.pid}")
            print("ready")
            time.sleep(120)
        elif cmd == "spam":
            block = (b"x" * 63 + b"\\n") * 1024
            remaining = int(args[0])
            while remaining > 0:
                piece = block[:remaining]
                sys.stdout.buffer.write(piece)
                remaining -= len(piece)
        elif cmd == "kill":
            os.kill(os.getpid(), int(args[0]))
        elif cmd == "argv":
            print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "pid": os.getpid(),
                              "pgid": os.getpgrp(), "sid": os.getsid(0),
                              "var": os.environ.get("PROBE_VAR", "<unset>"),
                              "path0": sys.path[0]}))
        elif cmd == "exit":
            sys.exit(int(args[0]))
        elif cmd == "raise":
            raise RuntimeError("probe failure")
        else:
            print(f"probe: unknown {cmd}", file=sys.stderr)
            return 2
        return 0


    if __name__ == "__main__":
        sys.exit(main())
    '''
)

MODES: list[GamMode] = ["cold", "warm"]
TOKEN = "runner-test-token"


@dataclass
class Probe:
    """The probe written to disk: its wrapper script (GAM_BIN) and how to fork it warm."""

    directory: Path
    script: Path
    cwd: Path

    @property
    def python_gam(self) -> PythonGam:
        """What the zygote imports and calls."""
        return PythonGam(str(self.script), sys.executable, "gamprobe:main")


def write_probe(directory: Path) -> Probe:
    """Write ``gamprobe.py`` and an executable wrapper that runs it cold."""
    (directory / "gamprobe.py").write_text(PROBE, encoding="utf-8")
    script = directory / "gam"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nfrom gamprobe import main\nsys.exit(main())\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    cwd = directory / "cfg"
    cwd.mkdir()
    return Probe(directory, script, cwd)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    """The probe, importable by the zygote (its directory on PYTHONPATH)."""
    directory = tmp_path_factory.mktemp("probe")
    found = write_probe(directory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", f"{directory}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        yield found


def probe_env(probe: Probe, **extra: str) -> dict[str, str]:
    """The command environment: what the agent gives GAM, unbuffered as in a pod."""
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", "GAMCFGDIR": str(probe.cwd)}, **extra)
    return env


def agent_config(probe: Probe, mode: GamMode) -> AgentConfig:
    """An agent configuration whose GAM_BIN is the probe's wrapper."""
    return AgentConfig(
        session_id="runner",
        token=TOKEN,
        gam_bin=str(probe.script),
        gam_config_dir=probe.cwd,
        gam_mode=mode,
    )


@contextlib.asynccontextmanager
async def started_launcher(probe: Probe, mode: GamMode) -> AsyncIterator[GamLauncher]:
    """A launcher in ``mode``; warm waits until its zygote is ready."""
    launcher = GamLauncher(agent_config(probe, mode), python_gam=probe.python_gam)
    await launcher.start()
    try:
        if mode == "warm":
            await wait_for(lambda: launcher.mode == "warm")
        yield launcher
    finally:
        await launcher.close()


async def wait_for(condition: object, timeout: float = 60.0) -> None:
    """Poll ``condition()`` on the event loop until true (a bounded wait, not a sleep)."""
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@dataclass
class Collected:
    """A sink that records every chunk and lets a test wait for text to appear."""

    chunks: list[tuple[Stream, str]] = field(default_factory=list)
    delay_s: float = 0.0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, stream: Stream, data: str) -> None:
        self.chunks.append((stream, data))
        self._changed.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    def text(self, stream: Stream | None = None) -> str:
        """Everything received (on ``stream``)."""
        return "".join(d for s, d in self.chunks if stream is None or s == stream)

    async def until(self, needle: str, timeout: float = 20.0) -> None:
        """Wait until ``needle`` has arrived."""
        try:
            async with asyncio.timeout(timeout):
                while needle not in self.text():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{needle!r} never arrived; got {self.chunks!r}") from None


def command(
    probe: Probe,
    launcher: GamLauncher,
    args: list[str],
    sink: Collected,
    **kwargs: object,
) -> CommandRun:
    """A run of the probe with ``args`` through ``launcher``."""
    return CommandRun(
        [str(probe.script), *args],
        sink,
        env=probe_env(probe),
        cwd=probe.cwd,
        kill_grace_s=kwargs.pop("kill_grace_s", 2.0),  # type: ignore[arg-type]
        launcher=launcher,
        **kwargs,  # type: ignore[arg-type]
    )


async def run_probe(probe: Probe, mode: GamMode, args: list[str]) -> tuple[RunOutcome, Collected]:
    """Run the probe to the end in ``mode``."""
    async with started_launcher(probe, mode) as launcher:
        sink = Collected()
        outcome = await command(probe, launcher, args, sink).run()
    return outcome, sink


@pytest.mark.parametrize("mode", MODES)
def test_the_process_is_born_in_the_mode_asked_for(probe: Probe, mode: GamMode) -> None:
    outcome, sink = asyncio.run(run_probe(probe, mode, ["argv"]))
    assert outcome.code == 0
    assert outcome.gam_mode == mode
    seen = json.loads(sink.text("stdout"))
    assert seen["argv"] == [str(probe.script), "argv"]
    assert seen["cwd"] == str(probe.cwd)
    assert seen["pid"] == seen["pgid"] == seen["sid"], "its own session and process group"
    assert seen["path0"] == str(probe.directory), "sys.path[0] is the script's directory"


def test_warm_and_cold_children_see_the_same_argv_cwd_and_path(probe: Probe) -> None:
    cold = json.loads(asyncio.run(run_probe(probe, "cold", ["argv"]))[1].text())
    warm = json.loads(asyncio.run(run_probe(probe, "warm", ["argv"]))[1].text())
    for key in ("argv", "cwd", "path0", "var"):
        assert warm[key] == cold[key]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("args", "code"),
    [(["exit", "0"], 0), (["exit", "7"], 7), (["exit", "300"], 300 & 0xFF), (["raise"], 1)],
)
def test_exit_codes_are_the_process_s(
    probe: Probe, mode: GamMode, args: list[str], code: int
) -> None:
    outcome, sink = asyncio.run(run_probe(probe, mode, args))
    assert outcome.code == code
    if args == ["raise"]:
        assert "RuntimeError: probe failure" in sink.text("stderr")


@pytest.mark.parametrize("mode", MODES)
def test_death_by_signal_is_128_plus_n(probe: Probe, mode: GamMode) -> None:
    outcome, _ = asyncio.run(run_probe(probe, mode, ["kill", str(int(signal.SIGUSR1))]))
    assert outcome.code == 128 + signal.SIGUSR1


@pytest.mark.parametrize("mode", MODES)
def test_stdin_is_fed_then_closed_with_eof(probe: Probe, mode: GamMode) -> None:
    async def scenario() -> tuple[RunOutcome, Collected]:
        async with started_launcher(probe, mode) as launcher:
            sink = Collected()
            run = command(probe, launcher, ["cat"], sink, stdin=True)
            task = asyncio.create_task(run.run())
            await wait_for(lambda: run.pid is not None)
            await run.write_stdin("line one\n")
            await run.write_stdin("ünïcode two\n")
            run.close_stdin()
            with pytest.raises(StdinClosed):
                await run.write_stdin("too late")
            with pytest.raises(StdinClosed):
                run.close_stdin()
            return await task, sink

    outcome, sink = asyncio.run(scenario())
    assert outcome.code == 0
    assert sink.text("stdout") == "read 21 'line one\\nünïcode two\\n'\n"


@pytest.mark.parametrize("mode", MODES)
def test_stdin_writes_wait_for_the_reader_and_fail_after_exit(probe: Probe, mode: GamMode) -> None:
    async def scenario() -> None:
        async with started_launcher(probe, mode) as launcher:
            sink = Collected()
            run = command(probe, launcher, ["sigint"], sink, stdin=True)
            task = asyncio.create_task(run.run())
            await sink.until("ready")
            # The probe never reads: a megabyte cannot fit a pipe, so the write waits.
            blocked = asyncio.create_task(run.write_stdin("y" * 1024 * 1024))
            await asyncio.sleep(0)
            assert not blocked.done()
            run.stop()
            with pytest.raises(StdinClosed):
                await blocked
            outcome = await task
            assert outcome.cancelled
            with pytest.raises(StdinClosed):
                await run.write_stdin("after exit")

    asyncio.run(scenario())


@pytest.mark.parametrize("mode", MODES)
def test_without_stdin_input_is_refused_and_the_process_reads_eof(
    probe: Probe, mode: GamMode
) -> None:
    async def scenario() -> tuple[RunOutcome, Collected]:
        async with started_launcher(probe, mode) as launcher:
            sink = Collected()
            run = command(probe, launcher, ["cat"], sink)
            task = asyncio.create_task(run.run())
            await wait_for(lambda: run.pid is not None)
            with pytest.raises(StdinClosed):
                await run.write_stdin("nobody reads this")
            with pytest.raises(ValueError, match="terminal"):
                run.resize(80, 24)
            return await task, sink

    outcome, sink = asyncio.run(scenario())
    assert outcome.code == 0
    assert sink.text("stdout") == "read 0 ''\n"


@pytest.mark.parametrize("mode", MODES)
def test_interleaved_stdout_and_stderr_arrive_in_write_order(probe: Probe, mode: GamMode) -> None:
    """Each write reaches the sink before the probe writes the next (stdin gates it)."""

    async def scenario() -> list[tuple[Stream, str]]:
        async with started_launcher(probe, mode) as launcher:
            sink = Collected()
            run = command(probe, launcher, ["order"], sink, stdin=True)
            task = asyncio.create_task(run.run())
            for i in range(3):
                await sink.until(f"out{i}")
                await run.write_stdin("next\n")
                await sink.until(f"err{i}")
                await run.write_stdin("next\n")
            assert (await task).code == 0
            return sink.chunks

    chunks = coalesce(asyncio.run(scenario()))
    expected = [
        (stream, f"{name}{i}\n")
        for i in range(3)
        for stream, name in (("stdout", "out"), ("stderr", "err"))
    ]
    assert chunks == expected


def coalesce(chunks: list[tuple[Stream, str]]) -> list[tuple[Stream, str]]:
    """Join neighbouring chunks of one stream (unbuffered ``print`` writes text and
    newline separately)."""
    joined: list[tuple[Stream, str]] = []
    for stream, data in chunks:
        if joined and joined[-1][0] == stream:
            joined[-1] = (stream, joined[-1][1] + data)
        else:
            joined.append((stream, data))
    return joined


def _group_alive(pgid: int) -> list[int]:
    alive = []
    for proc in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                alive.append(proc.pid)
    return alive


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reason", ["cancelled", "timed_out"])
def test_cancel_and_timeout_end_the_process_and_everything_it_started(
    probe: Probe, mode: GamMode, reason: str, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"

    async def scenario() -> RunOutcome:
        async with started_launcher(probe, mode) as launcher:
            sink = Collected()
            timeout = 3.0 if reason == "timed_out" else 0.0
            run = command(probe, launcher, ["spawn", str(pids)], sink, timeout_s=timeout)
            task = asyncio.create_task(run.run())
            await sink.until("ready")
            if reason == "cancelled":
                run.stop("cancelled")
            return await task

    outcome = asyncio.run(scenario())
    leader, grandchild = (int(p) for p in pids.read_text().split())
    assert outcome.code == 128 + signal.SIGTERM
    assert outcome.cancelled == (reason == "cancelled")
    assert outcome.timed_out == (reason == "timed_out")
    assert not psutil.pid_exists(grandchild) or not _group_alive(leader)
    assert _group_alive(leader) == []


@pytest.mark.parametrize("use_launcher", [False, True])
def test_a_missing_program_reports_127(probe: Probe, use_launcher: bool) -> None:
    async def scenario() -> tuple[RunOutcome, Collected]:
        async with started_launcher(probe, "cold") as launcher:
            sink = Collected()
            run = CommandRun(
                [str(probe.directory / "no-such-gam"), "version"],
                sink,
                env=probe_env(probe),
                cwd=probe.cwd,
                kill_grace_s=1,
                launcher=launcher if use_launcher else None,
            )
            return await run.run(), sink

    outcome, sink = asyncio.run(scenario())
    assert outcome.code == 127
    assert "cannot execute" in sink.text("stderr")


def test_200_mb_warm_keeps_agent_and_zygote_memory_bounded(probe: Probe) -> None:
    """Backpressure holds warm: a slow sink stalls the child, nothing buffers 200 MB."""
    total = 200 * 1024 * 1024
    me = psutil.Process()

    async def scenario() -> tuple[int, int, int, int]:
        async with started_launcher(probe, "warm") as launcher:
            assert launcher.zygote_pid is not None
            zygote = psutil.Process(launcher.zygote_pid)
            zygote_before = zygote.memory_info().rss
            before = me.memory_info().rss
            peak = before
            zygote_peak = zygote_before
            received = 0

            async def sink(stream: Stream, data: str) -> None:
                nonlocal received, peak, zygote_peak
                received += len(data)
                if received % (4 * 1024 * 1024) < len(data):
                    peak = max(peak, me.memory_info().rss)
                    zygote_peak = max(zygote_peak, zygote.memory_info().rss)
                    await asyncio.sleep(0.001)  # a slow reader now and then

            run = CommandRun(
                [str(probe.script), "spam", str(total)],
                sink,
                env=probe_env(probe),
                cwd=probe.cwd,
                kill_grace_s=1,
                launcher=launcher,
            )
            outcome = await run.run()
            assert outcome.code == 0
            assert outcome.gam_mode == "warm"
            return received, peak - before, zygote_before, zygote_peak

    received, growth, zygote_before, zygote_peak = asyncio.run(scenario())
    assert received == total
    print(
        f"\nwarm 200 MiB: agent RSS growth {growth / 2**20:.1f} MiB, zygote RSS "
        f"{zygote_before / 2**20:.1f} -> {zygote_peak / 2**20:.1f} MiB"
    )
    assert growth < 32 * 1024 * 1024
    assert zygote_peak - zygote_before < 8 * 1024 * 1024


@pytest.mark.parametrize("mode", MODES)
def test_stop_before_start_reports_cancelled_without_running(probe: Probe, mode: GamMode) -> None:
    async def scenario() -> RunOutcome:
        async with started_launcher(probe, mode) as launcher:
            run = command(probe, launcher, ["argv"], Collected(), tty=TtySize(cols=80, rows=24))
            run.stop("cancelled")
            return await run.run()

    outcome = asyncio.run(scenario())
    assert outcome.cancelled
    assert outcome.code == 128 + signal.SIGTERM


@pytest.mark.parametrize("mode", MODES)
def test_cancel_right_after_start_is_a_sigterm_that_reaches_the_process(
    probe: Probe, mode: GamMode
) -> None:
    """The pid is known only once it leads its group: the TERM is not lost (no KILL)."""

    async def scenario() -> RunOutcome:
        async with started_launcher(probe, mode) as launcher:
            run = command(probe, launcher, ["sigint"], Collected(), kill_grace_s=30.0)
            task = asyncio.create_task(run.run())
            await wait_for(lambda: run.pid is not None, timeout=60)
            run.stop("cancelled")
            return await task

    outcome = asyncio.run(scenario())
    assert outcome.cancelled
    assert outcome.code == 128 + signal.SIGTERM
