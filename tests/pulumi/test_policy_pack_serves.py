"""The policy pack's entry point starts and serves its rules, as the Pulumi CLI would run it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from tests.pulumi.harness import ROOT

POLICY_DIR = ROOT / "policy"


@pytest.fixture
def pack_port() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-u", str(POLICY_DIR / "__main__.py")],
        cwd=POLICY_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"policy pack did not start: {line!r} {err}")
        yield int(line)
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_policy_pack_serves_every_rule_as_mandatory(pack_port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{pack_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        info = analyzer_pb2_grpc.AnalyzerStub(channel).GetAnalyzerInfo(
            empty_pb2.Empty(), timeout=20
        )
    assert info.name == "gamgui-websocket"
    names = {p.name for p in info.policies}
    assert names == {
        "pinned-images",
        "restricted-containers",
        "resources-set",
        "session-pods-no-service-account-token",
        "session-network-policy",
        "session-quota-matches-max-sessions",
    }
    mandatory = analyzer_pb2.EnforcementLevel.Value("MANDATORY")
    assert all(p.enforcementLevel == mandatory for p in info.policies)
