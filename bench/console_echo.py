"""Console page: keystroke-to-echo time and page-open-to-prompt time in headless Chromium.

The real local stack (nginx, dnsmasq, an agent running the tests' fake GAM) and
Debian's chromium driven by Playwright, as the browser test does. A keystroke is
timed inside the page, from ``term.input`` to the terminal having parsed the echo:
page -> WebSocket -> nginx -> agent -> pty echo -> agent -> nginx -> page ->
xterm.js, with ``cat`` running under the terminal. Opening is ``goto`` of the
console URL until the ``gam>`` prompt (page, xterm.js, WebSocket handshake through
nginx, ``welcome``), timed from Python.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _common import Row, base_parser, print_rows, summarize, update_benchmarks_md
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.local import LocalBackend, LocalStack
from session_runtime.console import console_url
from session_runtime.ids import generate_session_id
from session_runtime.models import CreateRequest
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.support.fake_gam import fake_gam_bin

NUMBER = 7

#: Runs in the page: time ``count`` keystrokes (x, then Backspace) to their parsed echo.
_KEYSTROKES_JS = """async (count) => {
    const term = window.gamguiConsole.term;
    const parsed = () => new Promise((resolve) => {
        const hook = term.onWriteParsed(() => { hook.dispose(); resolve(performance.now()); });
    });
    const times = [];
    for (let i = 0; i < count; i++) {
        const echoed = parsed();
        const start = performance.now();
        term.input(i % 2 === 0 ? "x" : "\\x7f", true);
        times.push((await echoed) - start);
    }
    return times;
}"""
_READY_JS = "() => document.body.dataset.state === 'ready'"
_RUNNING_JS = "() => document.body.dataset.state === 'running'"


def measure(keystrokes: int, opens: int) -> tuple[list[float], list[float]]:
    """Return (keystroke echo ms, open-to-prompt ms)."""
    from playwright.sync_api import sync_playwright  # the dev extra, as in the tests

    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        root = Path(tmp)
        stack = LocalStack(root / "stack")
        stack.up(default_session=False)
        try:
            proxy_url = stack.proxy_url()
            assert proxy_url is not None
            backend = LocalBackend(stack.state.root, gam_bin=fake_gam_bin(root), idle_timeout=0)
            sid, token = generate_session_id(), f"tok-{generate_session_id()}"
            backend.create(
                CreateRequest(
                    session_id=sid,
                    token=SecretStr(token),
                    credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
                    max_sessions=50,
                )
            )
            backend.wait_ready(sid, timeout=30)
            url = console_url(proxy_url, sid, token)
            with sync_playwright() as driver:
                context = driver.chromium.launch_persistent_context(
                    str(root / "profile"),
                    executable_path=CHROMIUM,
                    headless=True,
                    args=CHROMIUM_ARGS,
                )
                try:
                    page = context.pages[0]
                    page.goto(url)  # warm: chromium's first page load is not the console's
                    page.wait_for_function(_READY_JS, timeout=60_000)
                    open_ms = []
                    for _ in range(opens):
                        start = time.perf_counter()
                        page.goto(url)
                        page.wait_for_function(_READY_JS, timeout=60_000)
                        open_ms.append((time.perf_counter() - start) * 1000)
                    page.keyboard.type("cat")
                    page.keyboard.press("Enter")
                    page.wait_for_function(_RUNNING_JS, timeout=60_000)
                    page.evaluate(_KEYSTROKES_JS, 20)  # warm-up
                    echo_ms = [float(t) for t in page.evaluate(_KEYSTROKES_JS, keystrokes)]
                    page.keyboard.press("Control+C")
                    page.wait_for_function(_READY_JS, timeout=60_000)
                finally:
                    context.close()
        finally:
            stack.down()
    return echo_ms, open_ms


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "console")
    parser.add_argument("--keystrokes", type=int, default=500)
    parser.add_argument("--opens", type=int, default=20)
    args = parser.parse_args(argv)
    echo_ms, open_ms = measure(args.keystrokes, args.opens)
    echo, opened = summarize(echo_ms), summarize(open_ms)
    rows = [
        Row(
            f"{NUMBER}a",
            "console: keystroke to echo on screen (browser -> nginx -> agent -> pty and back)",
            "reported; typing feels instant under ~50 ms",
            f"median {echo.median:.1f} ms, p95 {echo.p95:.1f} ms ({len(echo_ms)} keystrokes)",
            "n/a",
            "n/a",
        ),
        Row(
            f"{NUMBER}b",
            "console: open the page to the gam> prompt (page, xterm.js, handshake, welcome)",
            "reported",
            f"median {opened.median:.0f} ms, p95 {opened.p95:.0f} ms ({len(open_ms)} opens)",
            "n/a",
            "n/a",
        ),
    ]
    print_rows("console", rows)
    if args.write:
        command = (
            f"python bench/console_echo.py --keystrokes {args.keystrokes} "
            f"--opens {args.opens} --write"
        )
        notes = """
### 7. Console page

Headless Debian chromium (Playwright, `executable_path`) on the real local stack,
a session running the tests' fake GAM. **7a** times each keystroke inside the page,
from `term.input` to xterm.js having parsed the echo, while `cat` runs under the
command's terminal (alternately `x` and Backspace, so the line stays short): one
WebSocket round trip through nginx plus the agent's pty and the page's own work.
**7b** is `goto` of the console URL until the page shows the prompt, timed from
Python (so it includes Playwright's own round trips), after one warm-up load.
"""
        update_benchmarks_md(NUMBER, rows, command, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
