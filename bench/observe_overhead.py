"""Benchmark 8 - observability overhead: what the audit trail and metrics add per GAM
command, and what a ``/metrics`` scrape of an agent costs.

8a runs the agent's real observer (:func:`build_telemetry`: redaction, two audit
lines written to stdout and to an audit file, the Prometheus metrics) for one
command's ``started`` + ``finished`` events, in process, with stdout sent to
``/dev/null``. 8b is the redaction rule alone on a 14-word ``create user`` line with a
password. 8c scrapes a real agent (the tests' fake GAM) over HTTP on loopback. The
reference for 8a is a warm GAM command (tens of ms, see DESIGN.md), so the ratio says
how much of a command's cost the audit trail is.

    python bench/observe_overhead.py [--commands 20000] [--scrapes 500] [--write]
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from _common import Row, base_parser, print_rows, summarize, update_benchmarks_md

from session_runtime import naming
from session_runtime.agent.config import load_config
from session_runtime.agent.observe import ClientInfo, CommandInfo
from session_runtime.agent.runner import RunOutcome
from session_runtime.agent.telemetry import build_telemetry
from session_runtime.redact import redact_argv
from tests.support.agents import running_agent
from tests.support.fake_gam import fake_gam_bin

#: A warm GAM command's own cost, the reference of 8a (DESIGN.md: "tens of ms").
WARM_GAM_COMMAND_S = 0.030
ARGV = (
    "create", "user", "alice@example.com", "firstname", "Alice", "lastname", "Smith",
    "password", "S3cret!pw", "org", "/Staff", "changepassword", "on", "notify",
)  # fmt: skip


def _observer_cost(commands: int, tmp: Path) -> list[float]:
    config = load_config(
        {
            naming.ENV_SESSION_ID: "bench",
            naming.ENV_SESSION_TOKEN: "bench-token",
            naming.ENV_GAMCFGDIR: str(tmp / "cfg"),
            naming.ENV_AUDIT_FILE: str(tmp / "audit.jsonl"),
        }
    )
    telemetry = build_telemetry(config)
    client = ClientInfo("c0ffee", "203.0.113.9", "alice@example.com")
    outcome = RunOutcome(code=0, duration_ms=25, gam_mode="warm")
    samples = []
    with open("/dev/null", "w") as devnull, contextlib.redirect_stdout(devnull):
        for i in range(commands):
            cmd = CommandInfo(f"c-{i}", ARGV, started_by=client)
            start = time.perf_counter()
            telemetry.command_started(cmd)
            telemetry.command_finished(cmd, outcome, 4096)
            samples.append(time.perf_counter() - start)
    return samples


def _redaction_cost(rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        redact_argv(ARGV)
        samples.append(time.perf_counter() - start)
    return samples


def _scrape_cost(scrapes: int, tmp: Path) -> tuple[list[float], int]:
    samples = []
    size = 0
    with running_agent("bench-m", "bench-token", tmp_path=tmp, gam_bin=fake_gam_bin(tmp)) as a:
        url = f"{a.http_url}{naming.METRICS_PATH}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(scrapes):
            start = time.perf_counter()
            with opener.open(url, timeout=10) as response:
                size = len(response.read())
            samples.append(time.perf_counter() - start)
    return samples, size


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print its figures; with ``--write`` update BENCHMARKS.md."""
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "observability")
    parser.add_argument("--commands", type=int, default=20000, help="commands observed (8a, 8b)")
    parser.add_argument("--scrapes", type=int, default=500, help="/metrics scrapes (8c)")
    args = parser.parse_args(argv)
    if args.commands < 1 or args.scrapes < 1:
        parser.error("--commands and --scrapes must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-observe-") as tmp_dir:
        tmp = Path(tmp_dir)
        observed = summarize(_observer_cost(args.commands, tmp))
        lines = (tmp / "audit.jsonl").read_text().count("\n")
        redacted = summarize(_redaction_cost(args.commands))
        scraped, page = _scrape_cost(args.scrapes, tmp)
        scrape = summarize(scraped)
    rows = [
        Row(
            "8a",
            "observability: audit lines + metrics per command (started + finished), in process",
            "small next to a GAM command",
            f"median {observed.median * 1e6:.0f} µs, p99 {observed.p99 * 1e6:.0f} µs",
            f"{WARM_GAM_COMMAND_S * 1e3:.0f} ms warm GAM command",
            f"{observed.median / WARM_GAM_COMMAND_S * 100:.2f}% of it",
        ),
        Row(
            "8b",
            "observability: redaction of a 14-word GAM command line",
            "reported",
            f"median {redacted.median * 1e6:.1f} µs, p99 {redacted.p99 * 1e6:.1f} µs",
            "n/a",
            "n/a",
        ),
        Row(
            "8c",
            "observability: agent /metrics scrape over loopback HTTP",
            "reported",
            f"median {scrape.median * 1e3:.2f} ms, p99 {scrape.p99 * 1e3:.2f} ms ({page} bytes)",
            "n/a",
            "n/a",
        ),
    ]
    print_rows("8. Observability overhead", rows, [f"audit file lines written: {lines}"])
    if args.write:
        command = (
            f"python bench/observe_overhead.py --commands {args.commands} "
            f"--scrapes {args.scrapes} --write"
        )
        notes = f"""### 8. Observability overhead

8a: the agent's own observer (`build_telemetry`) fed the `started` and `finished`
events of {args.commands} commands in one process: `redact_argv` on a 14-word
`create user ... password ...` line, two audit lines each written to stdout (sent to
`/dev/null`) and appended to an audit file ({lines} lines written), and the Prometheus
counters and histogram. Median {observed.median * 1e6:.0f} µs, p95
{observed.p95 * 1e6:.0f} µs, p99 {observed.p99 * 1e6:.0f} µs, max
{observed.maximum * 1e6:.0f} µs per command; the reference is a warm GAM command
({WARM_GAM_COMMAND_S * 1e3:.0f} ms, the order of magnitude DESIGN.md gives), not measured
here. A real log collector reading stdout is not part of the figure.

8b: `redact_argv` alone on the same line, {args.commands} times: median
{redacted.median * 1e6:.1f} µs.

8c: {args.scrapes} `GET /metrics` of a real agent (fake GAM, no command run) over
loopback with urllib, one connection per scrape: median {scrape.median * 1e3:.2f} ms,
p95 {scrape.p95 * 1e3:.2f} ms, max {scrape.maximum * 1e3:.2f} ms; the page is {page}
bytes. Scrapes are not activity, so they never keep an idle session alive.
"""
        update_benchmarks_md(8, rows, command, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
