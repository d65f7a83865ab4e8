"""Shared pieces of the benchmarks: statistics, the machine description, processes
started and stopped by their own handles, and the BENCHMARKS.md writer.

The benchmarks are measurements, not tests: nothing here asserts a time. Each
script prints its figures and, with ``--write``, replaces its own rows and notes
in ``BENCHMARKS.md`` (rows of other benchmarks are left as they are).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "BENCHMARKS_MD",
    "REPO_ROOT",
    "Row",
    "Summary",
    "base_parser",
    "binary",
    "describe_machine",
    "fmt_ratio",
    "free_port",
    "loadavg",
    "percentile",
    "print_rows",
    "proc_memory",
    "raise_nofile_limit",
    "started",
    "stop_process",
    "summarize",
    "update_benchmarks_md",
    "wait_until",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"

if str(REPO_ROOT) not in sys.path:  # `python bench/<name>.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))


# --- statistics ---------------------------------------------------------------------------
def percentile(values: Sequence[float], pct: float) -> float:
    """Return the ``pct`` percentile (0-100) with linear interpolation between ranks.

    Args:
        values: the samples (at least one).
        pct: the percentile wanted, 0 to 100.
    """
    if not values:
        raise ValueError("percentile of no samples")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100 (got {pct})")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """Median, p95, p99, mean, min and max of one series of samples."""

    n: int
    median: float
    p95: float
    p99: float
    mean: float
    minimum: float
    maximum: float


def summarize(values: Sequence[float]) -> Summary:
    """Summarise samples.

    Args:
        values: the samples (at least one).
    """
    return Summary(
        n=len(values),
        median=statistics.median(values),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
        mean=statistics.fmean(values),
        minimum=min(values),
        maximum=max(values),
    )


def fmt_ratio(measured: float, reference: float) -> str:
    """Return ``measured / reference`` as ``1.07x`` (or ``n/a`` without a reference).

    Args:
        measured: the figure of the system.
        reference: the figure it is compared with.
    """
    if reference == 0:
        return "n/a"
    return f"{measured / reference:.2f}x"


# --- the machine --------------------------------------------------------------------------
def _first_line(argv: Sequence[str]) -> str:
    exe = shutil.which(argv[0]) or (argv[0] if Path(argv[0]).exists() else None)
    if exe is None:
        return "not installed"
    proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, check=False)
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return out[0] if out else "unknown"


def binary(name: str) -> str:
    """Return the path of a system binary, looking in /usr/sbin when PATH lacks it.

    Args:
        name: the program (nginx, dnsmasq).
    """
    return shutil.which(name) or f"/usr/sbin/{name}"


def loadavg() -> str:
    """Return the 1/5/15-minute load averages, to show how shared the machine was."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def describe_machine() -> dict[str, str]:
    """Return the facts a reader needs to compare figures: CPU, cores, memory, versions."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        match = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem_kb = int(match.group(1)) if match else 0
    nginx = _first_line([binary("nginx"), "-v"])
    dnsmasq = _first_line([binary("dnsmasq"), "--version"]).split("  ")[0]
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "nginx": nginx.removeprefix("nginx version: "),
        "dnsmasq": dnsmasq,
        "Python": platform.python_version(),
    }


# --- resources and processes --------------------------------------------------------------
def raise_nofile_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE for this process (and its children) as far as allowed.

    Args:
        wanted: the soft and hard limit to ask for.

    Returns:
        The soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):  # raising the hard limit needs root
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, wanted), hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_memory(pid: int) -> dict[str, int]:
    """Return a process's memory in bytes from /proc: ``rss``, ``pss`` and ``hwm`` (peak RSS).

    Args:
        pid: the process.
    """
    out = {"rss": 0, "pss": 0, "hwm": 0}
    status = Path(f"/proc/{pid}/status").read_text()
    for key, field in (("rss", "VmRSS"), ("hwm", "VmHWM")):
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            out[key] = int(match.group(1)) * 1024
    with contextlib.suppress(OSError):
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
        if match:
            out["pss"] = int(match.group(1)) * 1024
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port free on ``host`` right now (the kernel picks it).

    Args:
        host: a loopback address.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop one process by its own handle: SIGTERM, then SIGKILL after ``timeout``.

    Args:
        proc: the process this benchmark started.
        timeout: seconds to wait for a clean exit.
    """
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def started(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdout: int | None = subprocess.DEVNULL,
    stderr: int | None = subprocess.DEVNULL,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process (argv, never a shell) and stop it on leaving, even on error.

    Args:
        argv: program and arguments.
        env: the full environment (default: inherited).
        stdout: where its standard output goes (default: discarded).
        stderr: where its standard error goes (default: discarded).
        cwd: working directory.
    """
    proc = subprocess.Popen(list(argv), env=env, stdout=stdout, stderr=stderr, cwd=cwd)
    try:
        yield proc
    finally:
        stop_process(proc)


def wait_until(predicate: object, timeout: float, what: str) -> None:
    """Poll ``predicate()`` until it is true; raise TimeoutError naming ``what``.

    Args:
        predicate: a callable returning a truth value.
        timeout: seconds to wait.
        what: what is awaited, for the error.
    """
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if predicate():
                return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- BENCHMARKS.md ------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One line of the results table. ``key`` (``"1a"``) orders rows and says whose they are."""

    key: str
    benchmark: str
    goal: str
    measured: str
    reference: str
    ratio: str

    def cells(self, command: str) -> list[str]:
        """Return the table cells, the reproducing command last."""
        return [
            f"{self.key}. {self.benchmark}",
            self.goal,
            self.measured,
            self.reference,
            self.ratio,
            f"`{command}`",
        ]


_HEADER = "| benchmark | goal | measured | reference | ratio | reproduce |"
_RULE = "|---|---|---|---|---|---|"
_RESULTS = ("<!-- bench:results:start -->", "<!-- bench:results:end -->")
_MACHINE = ("<!-- bench:machine:start -->", "<!-- bench:machine:end -->")

_SKELETON = f"""# Benchmarks

Figures measured by the scripts in `bench/` on the real local stack (nginx, dnsmasq,
session agents on loopback addresses, real WebSockets) and, for the Kubernetes backend,
against the API emulator of the tests. They are measurements, not assertions: nothing in
the test suite depends on them. Each script prints its figures and ratios; with `--write`
it replaces its own rows and notes below. "reference" is what a figure is compared with;
"ratio" is measured / reference. The "reproduce" column gives the exact command;
`python bench/run_all.py --write` runs all of them at full size.

## Results

{_RESULTS[0]}
{_HEADER}
{_RULE}
{_RESULTS[1]}

## Machine

{_MACHINE[0]}
{_MACHINE[1]}

## Notes per benchmark
"""


def _between(text: str, start: str, end: str) -> tuple[int, int]:
    i = text.index(start) + len(start)
    return i, text.index(end, i)


def _row_key(line: str) -> str:
    cell = line.strip().strip("|").split("|", 1)[0].strip()
    return cell.split(".", 1)[0]


def _sort_key(key: str) -> tuple[int, str]:
    match = re.match(r"(\d+)(.*)", key)
    return (int(match.group(1)), match.group(2)) if match else (10**6, key)


def update_benchmarks_md(
    number: int,
    rows: Sequence[Row],
    command: str,
    notes: str,
    *,
    path: Path = BENCHMARKS_MD,
) -> None:
    """Replace benchmark ``number``'s rows and notes in BENCHMARKS.md; keep all others.

    Args:
        number: the benchmark's number (its rows' keys start with it).
        rows: the rows to write.
        command: the command that reproduces them.
        notes: markdown describing how they were measured (and what was not).
        path: the file (created from a skeleton when missing).
    """
    text = path.read_text() if path.exists() else _SKELETON
    start, end = _between(text, *_RESULTS)
    kept = [
        line
        for line in text[start:end].strip().splitlines()
        if line.startswith("|")
        and line not in (_HEADER, _RULE)
        and not re.fullmatch(rf"{number}[a-z]*", _row_key(line))
    ]
    new = ["| " + " | ".join(row.cells(command)) + " |" for row in rows]
    body = sorted(kept + new, key=lambda line: _sort_key(_row_key(line)))
    table = "\n".join([_HEADER, _RULE, *body])
    text = f"{text[:start]}\n{table}\n{text[end:]}"

    machine = describe_machine()
    m_start, m_end = _between(text, *_MACHINE)
    lines = [f"- {key}: {value}" for key, value in machine.items()]
    lines.append(
        "- shared: the 2 cores were shared with other workloads (test suites) while "
        "these figures were taken (load averages are given per benchmark below), so "
        "absolute figures are pessimistic; ratios measured in one run are the meaningful part."
    )
    text = f"{text[:m_start]}\n" + "\n".join(lines) + f"\n{text[m_end:]}"

    n_start, n_end = f"<!-- bench:notes:{number}:start -->", f"<!-- bench:notes:{number}:end -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"\n_Run {stamp}, load average {loadavg()}; `{command}`._\n\n{notes.strip()}\n"
    if n_start in text:
        b_start, b_end = _between(text, n_start, n_end)
        text = text[:b_start] + block + text[b_end:]
    else:
        text = text.rstrip("\n") + f"\n\n{n_start}{block}{n_end}\n"
    path.write_text(_order_notes(text))


def _order_notes(text: str) -> str:
    """Keep the per-benchmark note blocks in benchmark order."""
    pattern = re.compile(r"<!-- bench:notes:(\d+):start -->.*?<!-- bench:notes:\1:end -->", re.S)
    blocks = {int(m.group(1)): m.group(0) for m in pattern.finditer(text)}
    if not blocks:
        return text
    first = min(m.start() for m in pattern.finditer(text))
    head = pattern.sub("", text[:first] + text[first:]).rstrip("\n")
    return head + "\n\n" + "\n\n".join(blocks[k] for k in sorted(blocks)) + "\n"


def print_rows(title: str, rows: Sequence[Row], extra: Sequence[str] = ()) -> None:
    """Print a benchmark's figures and ratios to standard output.

    Args:
        title: the benchmark's name.
        rows: its results.
        extra: further lines (raw figures, caveats).
    """
    print(f"== {title}")
    for row in rows:
        print(
            f"  {row.key}. {row.benchmark}: {row.measured}"
            f"  (reference {row.reference}; ratio {row.ratio}; goal {row.goal})"
        )
    for line in extra:
        print(f"  {line}")


def base_parser(description: str) -> argparse.ArgumentParser:
    """Return an argument parser with the options every benchmark shares (``--write``).

    Args:
        description: what the benchmark measures.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--write", action="store_true", help="replace this benchmark's rows in BENCHMARKS.md"
    )
    return parser
