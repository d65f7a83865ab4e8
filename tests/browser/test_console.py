"""The console page in headless Chromium, through the local stack's nginx, against real agents.

The terminal's text is read from the page (``window.gamguiConsole.text()``, the
xterm buffer) and every wait is for a condition; the timeouts only bound a
failure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from session_runtime import cli
from session_runtime.cli.local import stack_env
from session_runtime.console import console_dir_for, console_url, missing_vendor_files
from session_runtime.ids import DEFAULT_SESSION_ID
from tests.browser.conftest import ConsoleStack, FakeSession, start_fake_session
from tests.support.local_stack import LogCursor, restart_nginx, running_stack

if TYPE_CHECKING:
    from playwright.sync_api import Page, WebSocket

#: Bounds for waits (ms): a cold GAM start on a loaded 2-core machine, a slow command.
_READY_MS = 30_000
_OUTPUT_MS = 60_000
_CONNECT_FAILED = "could not connect: check the token / session id"


def terminal_text(page: Page) -> str:
    """What the terminal shows, scrollback included, wrapped rows joined."""
    return str(page.evaluate("() => window.gamguiConsole.text()"))


def wait_state(page: Page, state: str, timeout: float = _READY_MS) -> None:
    """Wait until the page's ``body[data-state]`` is ``state``."""
    page.wait_for_function("s => document.body.dataset.state === s", arg=state, timeout=timeout)


def wait_after(
    page: Page, marker: str, needle: str, *, state: str | None = None, timeout: float = _OUTPUT_MS
) -> str:
    """Wait until ``needle`` shows after the last ``marker`` (and the page is in ``state``).

    Returns the terminal text after that marker.
    """
    page.wait_for_function(
        """([marker, needle, state]) => {
            const text = window.gamguiConsole ? window.gamguiConsole.text() : "";
            const at = text.lastIndexOf(marker);
            return at >= 0 && text.slice(at + marker.length).includes(needle)
                && (state === null || document.body.dataset.state === state);
        }""",
        arg=[marker, needle, state],
        timeout=timeout,
    )
    text = terminal_text(page)
    return text[text.rindex(marker) + len(marker) :]


def type_line(page: Page, line: str) -> str:
    """Type a command line at the prompt and press Enter; return the echoed prompt line."""
    page.click("#terminal")
    page.keyboard.type(line)
    page.keyboard.press("Enter")
    return f"gam> {line}"


def open_ready(page: Page, url: str) -> None:
    page.goto(url)
    wait_state(page, "ready")


def test_version_typed_in_the_console_of_the_default_session_shows_gam_7(
    console_stack: ConsoleStack,
    page: Page,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in stack_env(console_stack.stack.state.root, console_stack.proxy_url).items():
        monkeypatch.setenv(name, value)
    assert cli.main(["console", "--id", DEFAULT_SESSION_ID]) == 0
    url = capsys.readouterr().out.strip()
    token = console_stack.default_token
    assert url == console_url(console_stack.proxy_url, DEFAULT_SESSION_ID, token)
    access = LogCursor(console_stack.stack)

    open_ready(page, url)
    assert token not in page.url, "the token stays in the address bar"
    after = wait_after(page, type_line(page, "version"), "GAM 7", state="ready")

    assert re.search(r"^GAM 7\.\d+", after, re.MULTILINE), after
    assert after.rstrip().endswith("gam>"), "the prompt is back after the command"
    page.goto("about:blank")  # nginx logs a WebSocket once it closes
    paths = [e["path"] for e in access.access_entries(expect=5)]
    assert paths[0] == "/console/" and f"/ws/session/{DEFAULT_SESSION_ID}/" in paths
    assert token not in access.access_path.read_text(encoding="utf-8")


def test_reload_during_a_long_command_reattaches_and_shows_the_rest(
    console_stack: ConsoleStack, fake_session: FakeSession, page: Page
) -> None:
    open_ready(page, fake_session.url)
    marker = type_line(page, "ticks 8 0.5")
    wait_after(page, marker, "tick 2")

    page.reload()
    after = wait_after(page, "[re-attached to: gam ticks 8 0.5]", "tick 8", state="ready")

    numbers = [int(n) for n in re.findall(r"^tick (\d+)$", after, re.MULTILINE)]
    assert numbers, after
    assert numbers[0] >= 3, "output already shown before the reload is not repeated"
    assert numbers == list(range(numbers[0], 9)), "no holes, no duplicates, in order"
    assert after.rstrip().endswith("gam>")


def test_a_proxy_restart_mid_command_reconnects_and_loses_and_repeats_nothing(
    tmp_path: Path, page: Page
) -> None:
    with running_stack(tmp_path / "stack", default_session=False) as stack:
        missing = missing_vendor_files(console_dir_for(stack.state.root))
        if missing:
            pytest.skip(f"the console lacks {', '.join(missing)} (scripts/bootstrap.sh)")
        session = start_fake_session(stack, tmp_path)
        open_ready(page, session.url)
        marker = type_line(page, "ticks 30 0.1")
        wait_after(page, marker, "tick 3")

        restart_nginx(stack)
        after = wait_after(page, marker, "tick 30", state="ready")

    assert "[connection lost; reconnecting…]" in after and "[reconnected]" in after
    numbers = [int(n) for n in re.findall(r"^tick (\d+)$", after, re.MULTILINE)]
    assert numbers == list(range(1, 31)), "every line exactly once, in order"
    assert after.rstrip().endswith("gam>")


def _tty_reports(text: str) -> list[dict[str, object]]:
    """The JSON lines the fake GAM's ``ttyinfo`` printed."""
    return [json.loads(m) for m in re.findall(r'\{"stdin".*?\}', text)]


def test_keystrokes_reach_the_terminal_of_the_command_and_resize_follows_the_window(
    console_stack: ConsoleStack, fake_session: FakeSession, page: Page
) -> None:
    sent: list[dict[str, object]] = []

    def record(ws: WebSocket) -> None:
        ws.on("framesent", lambda payload: sent.append(json.loads(payload)))

    page.on("websocket", record)
    open_ready(page, fake_session.url)
    size = page.evaluate("() => ({cols: gamguiConsole.term.cols, rows: gamguiConsole.term.rows})")
    marker = type_line(page, "ttyinfo")
    wait_after(page, marker, '"rows"', state="running")
    first = _tty_reports(wait_after(page, marker, '"rows"'))[0]
    assert first == {"stdin": True, "stdout": True, **size}, "a terminal of the page's size"

    page.set_viewport_size({"width": 600, "height": 400})
    page.wait_for_function(
        "cols => window.gamguiConsole.term.cols < cols", arg=size["cols"], timeout=_READY_MS
    )
    smaller = page.evaluate(
        "() => ({cols: gamguiConsole.term.cols, rows: gamguiConsole.term.rows})"
    )
    page.keyboard.type("hello")
    page.keyboard.press("Enter")  # ttyinfo reports again for every line it reads
    page.wait_for_function(
        """marker => {
            const text = window.gamguiConsole.text();
            return (text.slice(text.lastIndexOf(marker)).match(/"rows"/g) || []).length >= 2;
        }""",
        arg=marker,
        timeout=_OUTPUT_MS,
    )
    second = _tty_reports(wait_after(page, marker, "hello"))[1]
    page.keyboard.press("Control+D")  # end of input: ttyinfo exits
    after = wait_after(page, marker, "hello", state="ready")

    assert second == {"stdin": True, "stdout": True, **smaller}, "the terminal was resized"
    assert re.search(r"^hello$", after, re.MULTILINE), "the terminal echoed the keystrokes"
    command = next(m for m in sent if m["type"] == "command")
    assert command["tty"] == size
    stdin = "".join(str(m["data"]) for m in sent if m["type"] == "stdin")
    assert stdin == "hello\r\x04", "every keystroke went to the command's stdin, in order"
    assert any(m["type"] == "resize" and m["id"] == command["id"] for m in sent)
    assert "[exit" not in after and "[cancelled]" not in after


def test_ctrl_c_cancels_the_running_command(
    console_stack: ConsoleStack, fake_session: FakeSession, page: Page
) -> None:
    open_ready(
        page, console_url(console_stack.proxy_url, fake_session.session_id, fake_session.token)
    )
    marker = type_line(page, "sleep 120")
    wait_after(page, marker, "sleeping", state="running")

    page.keyboard.press("Control+C")
    after = wait_after(page, marker, "[cancelled]", state="ready")

    assert after.rstrip().endswith("gam>")
    # The session is free again: the next command runs.
    wait_after(page, type_line(page, "version"), "GAM 7", state="ready")


@pytest.mark.parametrize(
    ("session", "token"),
    [
        pytest.param(DEFAULT_SESSION_ID, "not-the-token", id="wrong-token"),
        pytest.param("no-such-session", "whatever", id="unknown-session"),
    ],
)
def test_a_refused_connection_says_check_the_token_or_session_id(
    console_stack: ConsoleStack, page: Page, session: str, token: str
) -> None:
    page.goto(console_url(console_stack.proxy_url, session, token))
    page.wait_for_selector("#status[data-kind=error]", timeout=_READY_MS)

    assert _CONNECT_FAILED in page.inner_text("#status")
    assert _CONNECT_FAILED in terminal_text(page)
    assert page.evaluate("() => document.body.dataset.state") == "error"


def test_a_url_without_id_or_token_says_how_to_open_the_console(
    console_stack: ConsoleStack, page: Page
) -> None:
    page.goto(f"{console_stack.proxy_url}/console/")
    page.wait_for_selector("#status[data-kind=error]", timeout=_READY_MS)

    assert "gamgui-session console --id" in page.inner_text("#status")


def test_without_xterm_the_page_says_how_to_install_it(
    console_stack: ConsoleStack, page: Page
) -> None:
    page.route("**/console/vendor/xterm.js", lambda route: route.fulfill(status=404, body=""))
    page.goto(console_url(console_stack.proxy_url, DEFAULT_SESSION_ID, "any"))
    page.wait_for_selector("#status[data-kind=error]", timeout=_READY_MS)

    assert "xterm.js is missing: run scripts/bootstrap.sh" in page.inner_text("#status")


def test_the_initial_command_is_shown_once_then_the_prompt(
    console_stack: ConsoleStack, page: Page, tmp_path: Path
) -> None:
    session = start_fake_session(console_stack.stack, tmp_path, command="ticks 3 0.2")
    try:
        page.goto(session.url)
        after = wait_after(page, "[initial command: gam ticks 3 0.2]", "tick 3", state="ready")
        assert re.findall(r"^tick (\d+)$", after, re.MULTILINE) == ["1", "2", "3"]

        page.reload()
        wait_state(page, "ready")
        wait_after(page, type_line(page, "ticks 1 0"), "tick 1", state="ready")
        assert "[initial command" not in terminal_text(page), "shown once per tab"
    finally:
        console_stack.stack.backend().delete(session.session_id)
