"""200 concurrent creates from several processes with a limit of 50: exactly 50, none leaked.

On the local stack the limit is the state directory's lock; on Kubernetes it is
the namespace's Terminating-scoped ResourceQuota, which the API emulator
enforces atomically (as the API server does). Creates come from separate
processes, each with one thread and one backend per id, released together.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from session_runtime import naming
from session_runtime.backends.local import LocalBackend
from session_runtime.backends.local.processes import is_alive
from session_runtime.rbac import RUNTIME_SERVICE_ACCOUNT
from session_runtime.settings import WebSocketSettings
from tests.kubernetes.conftest import NAMESPACE, make_backend, seed_cluster, session_secrets
from tests.reliability import workers
from tests.security.conftest import require_stack_tools
from tests.security.helpers import recording_gam_bin
from tests.support.kube_emulator import KubeEmulator
from tests.support.kubelet import Kubelet
from tests.support.local_stack import running_stack

CREATES = 200
MAX_SESSIONS = 50
PROCESSES = 4
LIMIT_MESSAGE = f"SessionLimitError: Maximum number of sessions ({MAX_SESSIONS}) reached"


def _race(worker: Callable[..., list[str]], args: tuple[Any, ...], tmp_path: Path) -> list[str]:
    """Run ``worker(*args, ids, MAX_SESSIONS, go_file)`` in PROCESSES workers released at once."""
    go = tmp_path / "go"
    ids = [f"c{i:03d}" for i in range(CREATES)]
    batches = [ids[i::PROCESSES] for i in range(PROCESSES)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=PROCESSES, mp_context=context) as pool:
        futures = [pool.submit(worker, *args, batch, MAX_SESSIONS, str(go)) for batch in batches]
        go.touch()
        return [o for f in futures for o in f.result(timeout=240)]


def test_local_two_hundred_creates_with_max_fifty_give_fifty_and_leave_nothing_after_close(
    tmp_path: Path,
) -> None:
    require_stack_tools()
    gam_bin, _ = recording_gam_bin(tmp_path / "gam")
    state_dir = tmp_path / "stack"
    with running_stack(state_dir, default_session=False):
        outcomes = _race(workers.local_creates, (str(state_dir), gam_bin), tmp_path)
        assert outcomes.count("created") == MAX_SESSIONS
        assert sorted(o for o in outcomes if o != "created") == [LIMIT_MESSAGE] * (
            CREATES - MAX_SESSIONS
        )
        backend = LocalBackend(state_dir)
        sessions = backend.list()
        assert len(sessions) == MAX_SESSIONS
        assert len({s.agent_address for s in sessions}) == MAX_SESSIONS
        records = [backend.state.read_session(s.session_id) for s in sessions]
        processes = [r.process for r in records if r is not None]
        assert len(processes) == MAX_SESSIONS

        for session in sessions:
            assert backend.delete(session.session_id)
        assert backend.list() == []
        assert not [p.pid for p in processes if is_alive(p)]
        hosts = backend.state.hosts_path.read_text(encoding="utf-8")
        assert not [s.session_id for s in sessions if f"{s.session_id}." in hosts]
        assert list(backend.state.tokens_dir.iterdir()) == []


def test_kubernetes_two_hundred_creates_with_a_quota_of_fifty_give_fifty_and_leave_nothing(
    tmp_path: Path,
) -> None:
    emulator = KubeEmulator()
    emulator.start()
    kubelet = Kubelet(emulator)
    try:
        seed_cluster(emulator, quota=MAX_SESSIONS)
        outcomes = _race(
            workers.kubernetes_creates,
            # Every worker authenticates as the runtime's ServiceAccount, under its Role.
            (
                emulator.kubeconfig(
                    NAMESPACE, emulator.serviceaccount_token(NAMESPACE, RUNTIME_SERVICE_ACCOUNT)
                ),
                NAMESPACE,
            ),
            tmp_path,
        )
        assert outcomes.count("created") == MAX_SESSIONS
        refused = [o for o in outcomes if o != "created"]
        assert len(refused) == CREATES - MAX_SESSIONS
        assert all(o.startswith(LIMIT_MESSAGE) for o in refused), set(refused)

        pods = emulator.list("pods", NAMESPACE)
        assert len(pods) == MAX_SESSIONS
        secrets = session_secrets(emulator)
        pod_ids = {p["metadata"]["labels"][naming.LABEL_SESSION_ID] for p in pods}
        assert {s["metadata"]["labels"][naming.LABEL_SESSION_ID] for s in secrets} == pod_ids

        settings = WebSocketSettings(
            _env_file=None,
            backend="kubernetes",
            namespace=NAMESPACE,
            max_sessions=MAX_SESSIONS,
        )
        backend = make_backend(emulator, settings)
        try:
            for sid in pod_ids:
                assert backend.delete(sid)
            assert backend.list() == []
        finally:
            backend.close()
        assert emulator.list("pods", NAMESPACE) == []
        assert session_secrets(emulator) == []
    finally:
        kubelet.stop()
        emulator.stop()
