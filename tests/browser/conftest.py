"""A real browser on the real local stack: Debian's chromium driven by Playwright.

Playwright's own browser downloads are never used: ``executable_path`` points at
the system chromium, which ``scripts/bootstrap.sh`` installs. Each test gets a
fresh profile (``--user-data-dir``) and, when it fails, a screenshot in its
``tmp_path``. Every test here skips, saying why, when chromium, Playwright,
nginx/dnsmasq or xterm.js is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.local import LocalBackend, LocalStack
from session_runtime.console import console_dir_for, console_url, missing_vendor_files
from session_runtime.ids import DEFAULT_SESSION_ID, generate_session_id
from session_runtime.models import CreateRequest
from tests.support.fake_gam import fake_gam_bin
from tests.support.local_stack import missing_stack_tools, running_stack

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> list[str]:
    missing = [] if Path(CHROMIUM).is_file() else ["chromium"]
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (the dev extra)")
    return missing + missing_stack_tools()


@pytest.fixture(scope="session", autouse=True)
def _browser_tools() -> None:
    missing = _missing()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/bootstrap.sh installs them)")


@dataclass(frozen=True)
class ConsoleStack:
    """The running stack and where its proxy listens."""

    stack: LocalStack
    proxy_url: str

    @property
    def default_token(self) -> str:
        session = self.stack.backend().get(DEFAULT_SESSION_ID)
        assert session is not None
        return session.token.get_secret_value()


@pytest.fixture(scope="session")
def console_stack(
    _browser_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleStack]:
    """A local stack with its default session (real GAM), always taken down."""
    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        missing = missing_vendor_files(console_dir_for(stack.state.root))
        if missing:
            pytest.skip(f"the console lacks {', '.join(missing)} (scripts/bootstrap.sh)")
        proxy_url = stack.proxy_url()
        assert proxy_url is not None
        yield ConsoleStack(stack, proxy_url)


def start_fake_session(
    stack: LocalStack, gam_dir: Path, *, command: str | None = None
) -> FakeSession:
    """Create a ready session running the fake GAM on ``stack`` (the caller deletes it).

    Args:
        stack: the running stack.
        gam_dir: where to write the fake GAM's wrapper.
        command: the session's initial command.
    """
    proxy_url = stack.proxy_url()
    assert proxy_url is not None
    backend = LocalBackend(stack.state.root, gam_bin=fake_gam_bin(gam_dir))
    sid = generate_session_id()
    token = f"tok-{generate_session_id()}"
    backend.create(
        CreateRequest(
            session_id=sid,
            token=SecretStr(token),
            command=command,
            credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
            max_sessions=50,
        )
    )
    backend.wait_ready(sid, timeout=30)
    return FakeSession(sid, token, console_url(proxy_url, sid, token))


@dataclass(frozen=True)
class FakeSession:
    """A session of the stack whose GAM is :mod:`tests.support.fake_gam`."""

    session_id: str
    token: str
    #: Its console URL on the stack's proxy.
    url: str


@pytest.fixture
def fake_session(console_stack: ConsoleStack, tmp_path: Path) -> Iterator[FakeSession]:
    """A ready session running the fake GAM; deleted after the test."""
    session = start_fake_session(console_stack.stack, tmp_path)
    try:
        yield session
    finally:
        console_stack.stack.backend().delete(session.session_id)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver, for one test module only: while it runs, its event loop
    counts as running in this thread, which would break later tests that use asyncio.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright: Playwright, tmp_path: Path) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile of this test's own."""
    profile = tmp_path / "chromium-profile"
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1000, "height": 700},
    )
    try:
        yield context
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(browser: BrowserContext, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A page of the test's browser; screenshotted into ``tmp_path`` when the test fails."""
    page = browser.pages[0] if browser.pages else browser.new_page()
    yield page
    if request.node.stash.get(_FAILED, False):
        shot = tmp_path / "failure.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failed page: {shot}")
        print(page.evaluate("() => window.gamguiConsole ? window.gamguiConsole.text() : ''"))
