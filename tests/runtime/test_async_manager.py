"""AsyncSessionManager in one event loop: the local stack, and the Kubernetes API emulator.

A monitor runs beside every scenario and takes two figures, both printed:

- **held**: the most CPU time one callback took on the loop's thread
  (``time.thread_time`` around every ``Handle._run``). This is what the
  runtime's own code does to the loop, and other processes cannot inflate it,
  so the issue's 100 ms bound is asserted on it. The objects that exist before
  the scenario are frozen out of the garbage collector (``gc.freeze``), so a
  full collection of pytest's and the emulator's heap is not counted as the
  runtime's.
- **wall lag**: how late a task that asks to wake every 10 ms woke. That is
  what the loop's other users feel, and it includes the operating system not
  scheduling this process at all: the local scenario starts 20 agents and
  their warm GAM processes (40 Pythons) on a shared 2-core machine, and the
  emulator scenario runs the API emulator and its kubelet as threads of this
  very process. Only a coarse bound (one second) is asserted on it; in a real
  deployment the agents run in pods on other nodes and the API server is
  another process.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Pod

from session_runtime import akubernetes
from session_runtime.abackends import ThreadedBackend
from session_runtime.aclient import AsyncSessionConnection
from session_runtime.akubernetes import AsyncKubeApi, AsyncKubernetesBackend
from session_runtime.amanager import AsyncSessionManager
from session_runtime.backends.local import LocalBackend
from session_runtime.errors import (
    SessionConnectError,
    SessionLimitError,
    SessionNotFoundError,
    SessionsDisabledError,
)
from session_runtime.manager import local_stack_settings
from session_runtime.models import ProgressEvent, SessionStatus
from session_runtime.settings import load_settings
from tests.kubernetes.conftest import FAST_RETRY, NAMESPACE, RUNTIME_SERVICE_ACCOUNT, seed_cluster
from tests.kubernetes.harness import _SESSION_IN_PATH, KubeCluster
from tests.runtime.conftest import StackHandle
from tests.support.fake_gam import fake_gam_bin
from tests.support.prometheus import Samples, count, samples

T = TypeVar("T")
CONCURRENT = 20
#: The issue's bound on a stall, asserted on the CPU one callback holds the loop for.
HELD_BOUND_S = 0.1
#: Asserted only as a coarse bound (a shared 2-core machine); the real figure is printed.
LAG_BOUND_S = 1.0


class LagMonitor:
    """Measures the loop while a scenario runs: the longest callback, and how late it wakes."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.max_lag = 0.0
        self.max_held = 0.0
        self.held_by = ""

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.max_lag = max(self.max_lag, loop.time() - before - self.interval)

    @contextmanager
    def _timing_callbacks(self) -> Iterator[None]:
        """Time every callback run on this thread (the loop's) in thread CPU time."""
        original = asyncio.events.Handle._run
        loop_thread = threading.get_ident()
        monitor = self

        def timed(handle: asyncio.events.Handle) -> None:
            if threading.get_ident() != loop_thread:
                original(handle)
                return
            start = time.thread_time()
            try:
                original(handle)
            finally:
                held = time.thread_time() - start
                if held > monitor.max_held:
                    monitor.max_held, monitor.held_by = held, repr(handle)[:200]

        asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            asyncio.events.Handle._run = original  # type: ignore[method-assign]

    @asynccontextmanager
    async def watching(self, label: str) -> AsyncIterator[LagMonitor]:
        # The collector's full passes over this process's own heap (pytest, the
        # emulator's store) are not the runtime's: what exists before the scenario
        # is frozen out of them, as long-running servers do after start-up.
        gc.freeze()
        with self._timing_callbacks():
            task = asyncio.create_task(self._tick())
            try:
                yield self
            finally:
                task.cancel()
                gc.unfreeze()
                print(
                    f"\n{label}: longest callback held the loop {self.max_held * 1000:.1f} ms "
                    f"of CPU ({self.held_by}); max event-loop lag {self.max_lag * 1000:.1f} ms"
                )

    def check(self) -> None:
        """Assert the issue's bound on the loop's own stalls and the coarse wall bound."""
        assert self.max_held < HELD_BOUND_S, f"a callback held the loop: {self.held_by}"
        assert self.max_lag < LAG_BOUND_S


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro_fn()

    return asyncio.run(main())


# --- local stack -------------------------------------------------------------------------
@pytest.fixture
def local_manager(local_stack: StackHandle, tmp_path: Path) -> Callable[..., AsyncSessionManager]:
    gam = fake_gam_bin(tmp_path)

    def make(**overrides: object) -> AsyncSessionManager:
        settings = local_stack_settings(
            load_settings(
                _env_file=None,
                backend="local",
                local_state_dir=local_stack.state_dir,
                start_timeout=120,
                **overrides,
            )
        )
        backend = ThreadedBackend(LocalBackend(local_stack.state_dir, gam_bin=gam, idle_timeout=0))
        return AsyncSessionManager(settings, backend)

    return make


def test_twenty_sessions_created_and_twenty_commands_streamed_in_one_loop(
    local_manager: Callable[..., AsyncSessionManager],
) -> None:
    ids = [f"amgr-{i:02d}" for i in range(CONCURRENT)]

    async def scenario() -> tuple[list[LagMonitor], dict[str, str]]:
        creating, streaming = LagMonitor(), LagMonitor()
        async with local_manager(max_sessions=50) as manager:
            try:
                async with creating.watching("20 concurrent creates"):
                    infos = await asyncio.gather(*(manager.create_session(sid) for sid in ids))
                assert all(i.status is SessionStatus.READY for i in infos)

                async def stream(sid: str) -> str:
                    conn = await manager.connect(sid)
                    async with conn, conn.command(["ticks", "5", "0.05"]) as cmd:
                        return "".join([chunk.data async for chunk in cmd])

                async with streaming.watching("20 commands streamed concurrently"):
                    outputs = await asyncio.gather(*(stream(sid) for sid in ids))
            finally:
                await asyncio.gather(*(manager.close_session(sid) for sid in ids))
            return [creating, streaming], dict(zip(ids, outputs, strict=True))

    monitors, outputs = run(scenario)
    expected = "".join(f"tick {i}\n" for i in range(1, 6))
    assert all(out == expected for out in outputs.values())
    for monitor in monitors:
        monitor.check()


def test_progress_arrives_as_an_async_iterator_and_the_info_is_awaited(
    local_manager: Callable[..., AsyncSessionManager],
) -> None:
    async def scenario() -> tuple[list[ProgressEvent], str]:
        async with local_manager() as manager:
            creating = manager.creating("amgr-progress")
            events = [event async for event in creating]
            info = await creating
            try:
                result = await manager.send_command(info.session_id, "echo hi")
            finally:
                assert await manager.close_session("amgr-progress") is True
            return events, result.stdout

    events, stdout = run(scenario)
    assert events and events[-1].phase == "ready"
    assert {e.session_id for e in events} == {"amgr-progress"}
    assert stdout == '["hi"]\n'


def test_the_async_verbs_raise_the_sync_managers_errors(
    local_manager: Callable[..., AsyncSessionManager],
) -> None:
    async def scenario() -> None:
        async with local_manager(max_sessions=1) as manager:
            with pytest.raises(SessionNotFoundError, match=r"^Error joining session"):
                await manager.send_command("amgr-nobody", "version")
            with pytest.raises(SessionNotFoundError):
                await manager.get_session("amgr-nobody")
            assert await manager.close_session("amgr-nobody") is False
            before = {s.session_id for s in await manager.list_sessions()}
            if len(before - {"default"}) == 0:
                await manager.create_session("amgr-only")
                try:
                    with pytest.raises(SessionLimitError):
                        await manager.create_session("amgr-second")
                finally:
                    await manager.close_session("amgr-only")
            assert await manager.reap(dry_run=True) == []
        async with local_manager(enabled=False) as disabled:
            with pytest.raises(SessionsDisabledError, match=r"^WebSocket sessions are disabled"):
                await disabled.create_session("amgr-disabled")

    run(scenario)


def test_async_creates_are_measured_as_the_sync_ones_and_sessions_come_from_the_last_list(
    local_manager: Callable[..., AsyncSessionManager],
) -> None:
    n = 3
    ids = [f"amgr-metrics-{i}" for i in range(n)]

    async def scenario() -> tuple[Samples, Samples, str]:
        async with local_manager(max_sessions=n - 1) as manager:
            try:
                for sid in ids[:-1]:
                    await manager.create_session(sid)
                with pytest.raises(SessionLimitError):
                    await manager.create_session(ids[-1])
                before = samples(manager.metrics)
                await manager.list_sessions()
                after = samples(manager.metrics)
            finally:
                await asyncio.gather(*(manager.close_session(sid) for sid in ids))
            return before, after, manager.backend.name

    before, after, backend = run(scenario)
    hist = "gamgui_session_create_duration_seconds_count"
    assert count(after, hist, backend=backend, result="ok") == n - 1
    assert count(after, hist, backend=backend, result="limit") == 1
    assert count(after, hist, backend=backend) == n
    assert count(after, "gamgui_session_limit_refusals_total", backend=backend) == 1
    assert count(before, "gamgui_sessions_list_up", backend=backend) == 0  # nothing listed yet
    assert count(after, "gamgui_sessions_list_up", backend=backend) == 1
    assert count(after, "gamgui_sessions", backend=backend, status="ready") >= n - 1


# --- Kubernetes API emulator ---------------------------------------------------------------
def test_create_wait_and_close_against_the_kubernetes_api_emulator(
    kube_cluster: KubeCluster,
) -> None:
    settings = kube_cluster.settings(max_sessions=CONCURRENT + 5)
    seed_cluster(kube_cluster.emulator, quota=settings.max_sessions)
    token = kube_cluster.emulator.serviceaccount_token(NAMESPACE, RUNTIME_SERVICE_ACCOUNT)
    kubelet = kube_cluster.kubelet

    async def connector(url: str, token: str, timeout: float) -> AsyncSessionConnection:
        match = _SESSION_IN_PATH.search(url)
        try:
            target = kubelet.agent_url(match.group(1) if match else "")
        except KeyError:
            raise SessionConnectError(cause=f"no agent runs for {url}") from None
        return await AsyncSessionConnection.open(target, token, timeout=timeout)

    ids = [f"akube-{i:02d}" for i in range(CONCURRENT)]

    async def scenario() -> tuple[LagMonitor, list[str], list[str]]:
        backend = AsyncKubernetesBackend(
            settings,
            config=KubeConfig.from_dict(kube_cluster.emulator.kubeconfig(NAMESPACE, token)),
            retry=FAST_RETRY,
            trust_env=False,
        )
        monitor = LagMonitor()
        async with (
            AsyncSessionManager(settings, backend, connector=connector) as manager,
            monitor.watching("20 concurrent creates on the Kubernetes emulator"),
        ):
            infos = await asyncio.gather(*(manager.create_session(sid) for sid in ids))
            listed = [s.session_id for s in await manager.list_sessions()]
            result = await manager.send_command(ids[0], "echo kube")
            closed = await asyncio.gather(*(manager.close_session(sid) for sid in ids))
            after = [s.session_id for s in await manager.list_sessions()]
        assert all(i.status is SessionStatus.READY for i in infos)
        assert result.stdout == '["kube"]\n'
        assert all(closed)
        return monitor, listed, after

    started = time.monotonic()
    monitor, listed, after = run(scenario)
    print(f"emulator scenario took {time.monotonic() - started:.1f}s")
    assert set(ids) <= set(listed)
    assert not set(ids) & set(after)
    # The wall lag is printed, not bounded: the emulator's threads share this process's GIL.
    assert monitor.max_held < HELD_BOUND_S, f"a callback held the loop: {monitor.held_by}"


def test_the_first_answers_one_off_cost_is_paid_once_off_the_loop(
    kube_cluster: KubeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_cluster(kube_cluster.emulator)
    token = kube_cluster.emulator.serviceaccount_token(NAMESPACE, RUNTIME_SERVICE_ACCOUNT)
    config = KubeConfig.from_dict(kube_cluster.emulator.kubeconfig(NAMESPACE, token))
    threads: list[int] = []
    original = akubernetes._warm_up

    def recording() -> None:
        threads.append(threading.get_ident())
        original()

    monkeypatch.setattr(akubernetes, "_warm_up", recording)

    async def scenario() -> tuple[int, list[object]]:
        api = AsyncKubeApi(config, NAMESPACE, retry=FAST_RETRY, trust_env=False)
        try:
            found = await asyncio.gather(
                *(api.list(Pod, {"app": f"nobody-{i}"}) for i in range(5)),
                api.get(Pod, "no-such-pod"),
            )
        finally:
            await api.close()
        return threading.get_ident(), list(found)

    loop_thread, found = run(scenario)
    assert found == [[], [], [], [], [], None]
    assert len(threads) == 1, "concurrent first calls share one warm-up"
    assert threads[0] != loop_thread
