"""Live commands through the real nginx: drop, reconnect through the proxy, attach, resume.

The sessions run the fake GAM (``ticks``: output over several seconds), so the
complete output is known and any duplicate or hole shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.local import LocalBackend, LocalStack
from session_runtime.ids import generate_session_id
from session_runtime.models import CreateRequest
from tests.support.fake_gam import fake_gam_bin
from tests.support.live import Peer, Transcript, resume_scenario
from tests.support.local_stack import restart_nginx, running_stack

Connect = Callable[[], Peer]


def _ticks(n: int) -> str:
    return "".join(f"tick {i}\n" for i in range(1, n + 1))


def _assert_complete(transcript: Transcript, n: int) -> None:
    seqs = [m["seq"] for m in transcript.outputs]
    assert seqs == list(range(1, len(seqs) + 1))
    assert transcript.gaps == []
    assert transcript.exit is not None and transcript.exit["code"] == 0
    assert transcript.exit["seq"] == len(seqs) + 1
    assert transcript.text == _ticks(n)


def _session(backend: LocalBackend, proxy_port: int) -> tuple[str, Connect]:
    sid = generate_session_id()
    token = f"tok-{sid}-{generate_session_id()}"
    backend.create(
        CreateRequest(
            session_id=sid,
            token=SecretStr(token),
            command=None,
            credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
            max_sessions=50,
        )
    )
    backend.wait_ready(sid, timeout=30)
    url = f"ws://127.0.0.1:{proxy_port}{naming.session_path(sid)}"
    return sid, lambda: Peer(url, token)


@pytest.fixture
def fake_backend(local_stack: LocalStack, tmp_path: Path) -> Iterator[LocalBackend]:
    """The shared stack's backend, its sessions running the fake GAM; they are deleted after."""
    backend = LocalBackend(local_stack.state.root, gam_bin=fake_gam_bin(tmp_path))
    before = {s.session_id for s in backend.list()}
    yield backend
    for session in backend.list():
        if session.session_id not in before:
            backend.delete(session.session_id)


def test_a_command_resumes_through_the_proxy_after_a_dropped_connection(
    fake_backend: LocalBackend, proxy_port: int
) -> None:
    _, connect = _session(fake_backend, proxy_port)
    transcript = resume_scenario(connect, ["ticks", "30", "0.1"], drops=1)
    _assert_complete(transcript, 30)


def test_twenty_disconnects_through_the_proxy_lose_and_repeat_nothing(
    fake_backend: LocalBackend, proxy_port: int
) -> None:
    _, connect = _session(fake_backend, proxy_port)
    transcript = resume_scenario(connect, ["ticks", "60", "0.05"], drops=20)
    _assert_complete(transcript, 60)
    assert transcript.starts == 21


def test_a_command_survives_an_nginx_restart_and_resumes_through_the_new_proxy(
    tmp_path: Path,
) -> None:
    with running_stack(tmp_path / "stack", default_session=False) as stack:
        record = stack.state.read_stack()
        assert record is not None
        backend = LocalBackend(stack.state.root, gam_bin=fake_gam_bin(tmp_path))
        _, connect = _session(backend, record.proxy_port)
        transcript = Transcript()
        peer = connect()
        peer.send(type="command", id="n1", argv=["ticks", "40", "0.1"])
        for message in peer.until(lambda m: m["type"] == "output"):
            transcript.take(message, "n1")
        restart_nginx(stack)
        for message in peer.read_until_closed():  # the old proxy's connection ends
            transcript.take(message, "n1")
        peer.close()
        assert transcript.exit is None
        again = connect()
        try:
            again.send(type="attach", id="n1", after_seq=transcript.last_seq)
            while transcript.exit is None:
                transcript.take(again.recv(), "n1")
        finally:
            again.close()
    _assert_complete(transcript, 40)
