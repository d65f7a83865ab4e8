"""The local stack's parts on their own: state files, pid safety, dnsmasq flags, start failures."""

from __future__ import annotations

import os
import socket
import struct
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from session_runtime import naming
from session_runtime.backends.local import LocalBackend, LocalStack, StateDir, dns
from session_runtime.backends.local.dns import _first_a_record, dnsmasq_argv, render_hosts
from session_runtime.backends.local.processes import is_alive, process_start_ticks, stop
from session_runtime.backends.local.state import ProcessRecord
from session_runtime.errors import BackendError, SessionLimitError, SessionStartError
from session_runtime.models import CreateRequest


def _request(session_id: str, max_sessions: int = 50) -> CreateRequest:
    return CreateRequest(
        session_id=session_id,
        token=SecretStr(f"token-{session_id}"),
        credentials_secret=naming.DEFAULT_CREDENTIALS_SECRET,
        max_sessions=max_sessions,
    )


def test_a_reused_pid_is_neither_alive_nor_signalled() -> None:
    ticks = process_start_ticks(os.getpid())
    assert ticks is not None
    impostor = ProcessRecord(pid=os.getpid(), start_ticks=ticks + 1, argv0="python")
    assert not is_alive(impostor)
    assert stop(impostor, grace=0.1) is True  # reports it gone ...
    assert is_alive(
        ProcessRecord(pid=os.getpid(), start_ticks=ticks, argv0="python")
    )  # ... we live


def test_the_hosts_file_lists_each_session_once_sorted() -> None:
    text = render_hosts([("127.1.2.3", "b.example"), ("127.1.2.2", "a.example")])
    assert text.splitlines()[1:] == ["127.1.2.2 a.example", "127.1.2.3 b.example"]


def test_dnsmasq_reads_no_system_configuration_and_forwards_nothing(tmp_path: Path) -> None:
    argv = dnsmasq_argv(
        "/usr/sbin/dnsmasq",
        port=5353,
        domain="sessions.test",
        hosts_file=tmp_path / "hosts",
        pid_file=tmp_path / "pid",
        log_queries=False,
        log_file=tmp_path / "log",
    )
    for flag in (
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--local=/sessions.test/",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--port=5353",
    ):
        assert flag in argv
    assert not any(a.startswith("--log-queries") for a in argv)


def test_a_dns_answer_with_a_compressed_name_is_parsed() -> None:
    header = struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0)
    question = b"\x01a\x04test\x00" + struct.pack("!HH", 1, 1)
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + socket.inet_aton("127.9.8.7")
    assert _first_a_record(header + question + answer, 7) == "127.9.8.7"
    nxdomain = struct.pack("!HHHHHH", 7, 0x8183, 1, 0, 0, 0) + question
    assert _first_a_record(nxdomain, 7) is None


def test_the_stack_dnsmasq_answers_only_the_session_domain(local_stack: LocalStack) -> None:
    record = local_stack.state.read_stack()
    assert record is not None
    server = ("127.0.0.1", record.dns_port)
    default = local_stack.state.read_session("default")
    assert default is not None
    assert dns.query_a(server, f"default.{record.session_domain}") == default.address
    assert dns.query_a(server, "example.com") is None
    assert dns.query_a(server, f"nobody.{record.session_domain}") is None


def test_a_damaged_state_file_is_reported_with_the_fix(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    state.stack_path.write_text("{not json")
    with pytest.raises(BackendError, match="state is damaged") as info:
        state.read_stack()
    assert "local down" in (info.value.hint or "")


def test_an_agent_that_exits_at_start_fails_with_the_end_of_its_log(
    local_stack: LocalStack,
) -> None:
    backend = LocalBackend(
        local_stack.state.root,
        agent_argv=[sys.executable, "-c", "import sys; print('agent broke: no gam'); sys.exit(3)"],
    )
    backend.create(_request("broken"))
    try:
        with pytest.raises(SessionStartError, match="exited while starting") as info:
            backend.wait_ready("broken", timeout=30)
        assert "agent broke: no gam" in (info.value.cause or "")
    finally:
        backend.delete("broken")


def test_the_limit_error_says_how_many_run(local_stack: LocalStack) -> None:
    backend = LocalBackend(local_stack.state.root)
    assert [s.session_id for s in backend.list()] == ["default"]  # others clean up after them
    backend.create(_request("limit-a", 1))
    try:
        with pytest.raises(SessionLimitError, match=r"Maximum number of sessions \(1\)") as info:
            backend.create(_request("limit-b", 1))
        assert info.value.cause == "1 sessions are running in the local stack"
        assert backend.get("limit-b") is None
    finally:
        backend.delete("limit-a")
