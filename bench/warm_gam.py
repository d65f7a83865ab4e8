"""Benchmark 6 - warm GAM: commands forked from the zygote vs GAM executed per command.

A private local stack (the real nginx and dnsmasq, agents as processes), the
real ``gam`` (gam7), two kinds of sessions created through ``SessionManager``:
``warm`` (the default) and ``cold`` (the same agent started with
``SESSION_GAM_MODE=cold``). Measured, interleaved warm/cold, for ``version``
and ``info domain`` (no credentials: GAM's own error, exit 16): the agent's
``duration_ms`` and the end-to-end ``send_command`` in this process (a new
WebSocket through nginx, the command, its exit). Then ``create -> first
command completed`` per session of each kind, and the zygote's RSS.

    python bench/warm_gam.py [--runs 30] [--sessions 8] [--write]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from _common import (
    Row,
    Summary,
    base_parser,
    fmt_ratio,
    print_rows,
    summarize,
    update_benchmarks_md,
    wait_until,
)

from session_runtime import naming
from session_runtime.manager import SessionManager

__all__ = ["main"]

COMMANDS = ("version", "info domain")
MODES = ("warm", "cold")


@dataclass
class Figures:
    """Seconds per sample, by (mode, command)."""

    duration: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    send: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    codes: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    first: dict[str, list[float]] = field(default_factory=dict)
    first_send: dict[str, list[float]] = field(default_factory=dict)
    zygote_rss: list[int] = field(default_factory=list)


def _zygote_under(directory: Path) -> psutil.Process | None:
    """The zygote whose working directory (the session's GAMCFGDIR) is under ``directory``."""
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        cwd = proc.info["cwd"] or ""
        if "session_runtime.agent.zygote" in cmdline and cwd.startswith(str(directory)):
            return proc
    return None


def _timed_send(manager: SessionManager, sid: str, command: str) -> tuple[float, float, int]:
    start = time.perf_counter()
    result = manager.send_command(sid, command)
    return time.perf_counter() - start, result.duration_ms / 1e3, result.exit_code


def measure(runs: int, sessions: int) -> Figures:
    """Run the whole benchmark on a private local stack."""
    from session_runtime.backends.local import LocalStack
    from session_runtime.manager import local_stack_settings
    from session_runtime.settings import WebSocketSettings
    from tests.support.agents import real_gam_bin

    figures = Figures()
    env_bin = shutil.which("env")
    if env_bin is None:
        raise RuntimeError("env(1) is needed to start the cold agents")
    agent = [sys.executable, "-m", "session_runtime.agent"]
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        state = Path(tmp) / "state"
        stack = LocalStack(state)
        try:
            stack.up(default_session=False)
            settings = local_stack_settings(
                WebSocketSettings(
                    _env_file=None,
                    backend="local",
                    local_state_dir=state,
                    max_sessions=2 * sessions + 4,
                )
            )
            gam = real_gam_bin()
            managers = {
                "warm": SessionManager(settings, stack.backend(gam_bin=gam)),
                "cold": SessionManager(
                    settings,
                    stack.backend(
                        gam_bin=gam,
                        agent_argv=[env_bin, f"{naming.ENV_GAM_MODE}=cold", *agent],
                    ),
                ),
            }
            # create -> first command completed, alternating the kinds.
            for i in range(sessions):
                for mode in MODES:
                    sid = f"first-{mode}-{i}"
                    start = time.perf_counter()
                    managers[mode].create_session(sid)
                    sent, _, _ = _timed_send(managers[mode], sid, "version")
                    figures.first.setdefault(mode, []).append(time.perf_counter() - start)
                    figures.first_send.setdefault(mode, []).append(sent)
                    managers[mode].close_session(sid)
            # Steady state: one session of each kind, commands interleaved.
            for mode in MODES:
                managers[mode].create_session(f"steady-{mode}")
                _timed_send(managers[mode], f"steady-{mode}", "version")  # GAM's first-run setup
            wait_until(lambda: _zygote_under(state) is not None, 60, "the warm session's zygote")
            for _ in range(runs):
                for command in COMMANDS:
                    for mode in MODES:
                        sent, took, code = _timed_send(managers[mode], f"steady-{mode}", command)
                        figures.send.setdefault((mode, command), []).append(sent)
                        figures.duration.setdefault((mode, command), []).append(took)
                        figures.codes.setdefault((mode, command), set()).add(code)
                zygote = _zygote_under(state)
                if zygote is not None:
                    figures.zygote_rss.append(zygote.memory_info().rss)
            for mode in MODES:
                managers[mode].close_session(f"steady-{mode}")
        finally:
            stack.down()
    return figures


def _ms(s: Summary) -> str:
    return f"p50 {s.median * 1e3:.0f} ms, p95 {s.p95 * 1e3:.0f} ms"


def rows_and_notes(f: Figures, runs: int, sessions: int) -> tuple[list[Row], list[str]]:
    """The table rows and the notes of this run."""
    rows: list[Row] = []
    for letter, (kind, series) in zip(
        "abcd",
        [(k, s) for k in ("duration_ms", "send") for s in (COMMANDS)],
        strict=True,
    ):
        data = f.duration if kind == "duration_ms" else f.send
        warm, cold = summarize(data[("warm", series)]), summarize(data[("cold", series)])
        goal = (
            "p50 <= 50 ms warm and >= 10x faster than cold"
            if (kind, series) == ("duration_ms", "version")
            else "reported"
        )
        what = "agent `duration_ms`" if kind == "duration_ms" else "end-to-end `send_command`"
        rows.append(
            Row(
                f"6{letter}",
                f"warm GAM: `{series}`, {what}, warm vs cold",
                goal,
                f"warm {_ms(warm)}",
                f"cold {_ms(cold)}",
                f"{fmt_ratio(cold.median, warm.median)} faster (p50)",
            )
        )
    first_warm, first_cold = summarize(f.first["warm"]), summarize(f.first["cold"])
    later_cold = summarize(f.send[("cold", "version")])
    rows.append(
        Row(
            "6e",
            "warm GAM: create -> first `version` completed, local backend",
            "first command no slower than a later cold command",
            f"warm {_ms(first_warm)}; its first send p50 "
            f"{summarize(f.first_send['warm']).median * 1e3:.0f} ms",
            f"cold {_ms(first_cold)}; a later cold send p50 {later_cold.median * 1e3:.0f} ms",
            f"{fmt_ratio(summarize(f.first_send['warm']).median, later_cold.median)} "
            "(first warm send / later cold send)",
        )
    )
    rss = max(f.zygote_rss) if f.zygote_rss else 0
    codes = "; ".join(
        f"{mode} `{command}` exit {sorted(f.codes[(mode, command)])}"
        for command in COMMANDS
        for mode in MODES
    )
    notes = [
        "### 6. Warm GAM",
        "",
        "A private local stack (`LocalStack.up`: the real nginx and dnsmasq, agents as "
        "processes on loopback addresses), the real `gam` (gam7), sessions created through "
        "`SessionManager`: warm (the default: a zygote imports GAM once and forks each "
        "command) and cold (the same agent started with `SESSION_GAM_MODE=cold`, GAM "
        f"executed per command). {runs} runs of each command in each mode, interleaved "
        "(version warm, version cold, info domain warm, info domain cold, ...), one "
        "session of each kind, after one untimed `version` each (GAM's first-run setup). "
        "`duration_ms` is the agent's figure (process start to exit); `send` is "
        "`SessionManager.send_command` in this process (a new WebSocket through nginx, "
        "the command, its exit). `info domain` has no credentials here and ends with "
        f"GAM's own error ({codes}).",
        "",
        f"- create -> first `version` completed, {sessions} sessions of each kind one "
        f"after another: warm {_ms(first_warm)} (min {first_warm.minimum * 1e3:.0f}, max "
        f"{first_warm.maximum * 1e3:.0f}); cold {_ms(first_cold)}. The first command "
        "waits (at most 3 s) for the zygote still importing GAM instead of starting a "
        "cold GAM beside it on the same CPUs.",
        f"- zygote RSS: {rss / 2**20:.1f} MiB (max over the run; its pages are shared "
        "copy-on-write with each command it forks). The session's memory request counts it.",
    ]
    return rows, notes


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print its figures; with ``--write`` update BENCHMARKS.md."""
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "warm GAM")
    parser.add_argument("--runs", type=int, default=30, help="runs per command and mode")
    parser.add_argument("--sessions", type=int, default=8, help="sessions per kind for 6e")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.sessions < 1:
        parser.error("--runs and --sessions must be >= 1")
    figures = measure(args.runs, args.sessions)
    rows, notes = rows_and_notes(figures, args.runs, args.sessions)
    print_rows("6. warm GAM", rows, notes)
    if args.write:
        command = f"python bench/warm_gam.py --runs {args.runs} --sessions {args.sessions} --write"
        update_benchmarks_md(6, rows, command, "\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
