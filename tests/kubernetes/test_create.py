"""Creating sessions: the exact objects written, write counts, idempotency, races, limits."""

from __future__ import annotations

import base64
import threading

import pytest
from pydantic import SecretStr

from session_runtime import naming, spec
from session_runtime.backends.kubernetes import KubernetesBackend
from session_runtime.errors import (
    BackendError,
    InvalidSessionIdError,
    SessionLimitError,
    SettingsError,
)
from session_runtime.models import BackendSession, SessionStatus
from session_runtime.settings import WebSocketSettings
from tests.kubernetes.conftest import (
    CREATED_AT,
    NAMESPACE,
    TOKEN_KEY,
    expected_token,
    make_backend,
    request,
    seed_cluster,
    session_secrets,
    template_pod,
)
from tests.support.kube_emulator import KubeEmulator
from tests.support.kubelet import Kubelet


def _writes(emulator: KubeEmulator) -> list[tuple[str, str]]:
    return [(w.method, w.path) for w in emulator.writes()]


def test_create_writes_the_pod_then_its_owned_secret_in_two_writes(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    before = len(emulator.writes())
    backend.create(request("alpha"))
    base = f"/api/v1/namespaces/{NAMESPACE}"
    writes = emulator.writes()[before:]
    assert [(w.method, w.path) for w in writes] == [
        ("POST", f"{base}/pods"),
        ("POST", f"{base}/secrets"),
    ]
    # The ownerReference is in the one create: no patch, no read-back of the Secret.
    assert writes[1].body is not None
    (owner,) = writes[1].body["metadata"]["ownerReferences"]
    assert owner["kind"] == "Pod" and owner["name"] == naming.session_pod_name("alpha")


def test_a_fresh_create_and_wait_take_at_most_six_api_requests(
    emulator: KubeEmulator, kubelet: Kubelet, settings: WebSocketSettings
) -> None:
    seed_cluster(emulator)
    keyed = settings.model_copy(update={"session_token_key": SecretStr(TOKEN_KEY)})
    impl = make_backend(emulator, keyed)
    try:
        before = len(emulator.requests)
        session = impl.create(request("alpha"))
        impl.wait_ready("alpha", timeout=10)
        sent = emulator.requests[before:]
    finally:
        impl.close()
    base = f"/api/v1/namespaces/{NAMESPACE}"
    steps = [(r.method, r.path, "watch" if r.query.get("watch") == "true" else "") for r in sent]
    assert steps[:4] == [
        ("GET", f"{base}/pods", ""),  # the id's pod and the live count, in one list
        ("GET", f"{base}/podtemplates/{naming.SESSION_TEMPLATE_NAME}", ""),
        ("POST", f"{base}/pods", ""),
        ("POST", f"{base}/secrets", ""),
    ]
    # The two watches open side by side, in either order.
    watches = [("GET", f"{base}/events", "watch"), ("GET", f"{base}/pods", "watch")]
    assert sorted(steps[4:]) == watches
    assert len(sent) <= 6
    assert session.created and session.token.get_secret_value()
    assert all(r.user.startswith("system:serviceaccount:") for r in sent)


def test_created_pod_is_exactly_the_template_stamped_for_the_session(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    backend.create(request("alpha", command="info domain", credentials_secret="user-creds"))
    expected = spec.stamp_session_pod(
        template_pod(),
        session_id="alpha",
        namespace=NAMESPACE,
        command="info domain",
        credentials_secret="user-creds",
        created_at=CREATED_AT,
    )
    pod = emulator.get("pods", NAMESPACE, naming.session_pod_name("alpha"))
    assert pod is not None
    assert pod["spec"] == expected["spec"]
    assert pod["metadata"]["labels"] == naming.session_labels("alpha")
    assert pod["metadata"]["annotations"] == expected["metadata"]["annotations"]
    assert pod["spec"]["hostname"] == "alpha"
    assert pod["spec"]["subdomain"] == naming.SESSION_SERVICE_NAME
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[spec.CREDENTIALS_VOLUME]["secret"]["secretName"] == "user-creds"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env[naming.ENV_SESSION_COMMAND] == "info domain"


def test_token_secret_is_labelled_holds_the_token_and_is_owned_by_the_pod(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    backend.create(request("alpha", token="s3cret-token"))
    pod = emulator.get("pods", NAMESPACE, naming.session_pod_name("alpha"))
    secret = emulator.get("secrets", NAMESPACE, naming.session_token_secret_name("alpha"))
    assert pod is not None and secret is not None
    assert secret["metadata"]["labels"] == naming.session_labels("alpha")
    token = base64.b64decode(secret["data"][naming.TOKEN_SECRET_KEY]).decode()
    assert token == expected_token(emulator, "alpha") != "s3cret-token"
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
         "uid": pod["metadata"]["uid"]}
    ]  # fmt: skip


def test_deleting_the_pod_lets_the_cluster_collect_the_secret(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    backend.create(request("alpha"))
    emulator.remove("pods", NAMESPACE, naming.session_pod_name("alpha"))
    assert emulator.get("secrets", NAMESPACE, naming.session_token_secret_name("alpha")) is None


def test_create_returns_the_session_with_its_token_and_stamped_details(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    session = backend.create(request("alpha", token="tok-1", command="info user"))
    assert session.session_id == "alpha"
    assert session.created is True
    assert session.token.get_secret_value() == expected_token(emulator, "alpha")
    assert session.command == "info user"
    assert session.credentials_secret == naming.DEFAULT_CREDENTIALS_SECRET
    assert session.created_at == CREATED_AT
    assert session.status in (SessionStatus.PENDING, SessionStatus.STARTING, SessionStatus.READY)


def test_creating_an_existing_id_returns_the_existing_session_without_writing(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    first = backend.create(request("alpha", token="first-token"))
    writes = len(emulator.writes())
    again = backend.create(request("alpha", token="second-token"))
    assert len(emulator.writes()) == writes
    assert again.token.get_secret_value() == first.token.get_secret_value()
    assert first.created and not again.created


def test_racing_creates_for_one_id_end_with_one_pod_and_one_token(
    emulator: KubeEmulator, kubelet: Kubelet, settings: WebSocketSettings
) -> None:
    seed_cluster(emulator)
    replicas = [make_backend(emulator, settings) for _ in range(4)]
    barrier = threading.Barrier(len(replicas))
    results: list[BackendSession] = []
    errors: list[BaseException] = []

    def create(index: int) -> None:
        try:
            barrier.wait()
            results.append(replicas[index].create(request("race", token=f"token-{index}")))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(replicas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for replica in replicas:
        replica.close()
    assert errors == []
    assert len(emulator.list("pods", NAMESPACE)) == 1
    assert len(session_secrets(emulator)) == 1
    tokens = {r.token.get_secret_value() for r in results}
    assert len(results) == 4 and len(tokens) == 1


def test_limit_counts_live_session_pods_before_writing(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    backend.create(request("one", max_sessions=2))
    backend.create(request("two", max_sessions=2))
    writes = len(emulator.writes())
    with pytest.raises(SessionLimitError, match=r"Maximum number of sessions \(2\) reached"):
        backend.create(request("three", max_sessions=2))
    assert len(emulator.writes()) == writes


def test_finished_pods_do_not_count_against_the_limit(
    backend: KubernetesBackend, emulator: KubeEmulator, kubelet: Kubelet
) -> None:
    kubelet.plan(naming.session_pod_name("done"), "Succeeded")
    backend.create(request("done", max_sessions=1))
    kubelet.settle()
    backend.create(request("next", max_sessions=1))
    assert emulator.get("pods", NAMESPACE, naming.session_pod_name("next")) is not None


def test_quota_rejection_maps_to_the_session_limit_error_and_removes_the_secret(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    seed_cluster(emulator, quota=1)
    backend.create(request("one", max_sessions=10))
    with pytest.raises(
        SessionLimitError, match=r"Maximum number of sessions \(10\) reached"
    ) as err:
        backend.create(request("two", max_sessions=10))
    assert "exceeded quota" in (err.value.cause or "")
    assert emulator.get("pods", NAMESPACE, naming.session_pod_name("two")) is None
    assert emulator.get("secrets", NAMESPACE, naming.session_token_secret_name("two")) is None


def test_missing_pod_template_is_a_backend_error_naming_it(
    emulator: KubeEmulator, settings: WebSocketSettings
) -> None:
    seed_cluster(emulator)
    emulator.remove("podtemplates", NAMESPACE, naming.SESSION_TEMPLATE_NAME)
    backend = make_backend(emulator, settings)
    with pytest.raises(BackendError, match="PodTemplate 'gamgui-session' not found") as err:
        backend.create(request("alpha"))
    backend.close()
    assert "doctor" in (err.value.hint or "")
    assert emulator.writes() == []


def test_the_pod_template_is_read_once_for_several_creates(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    backend.create(request("one"))
    backend.create(request("two"))
    reads = [r for r in emulator.requests if "/podtemplates/" in r.path]
    assert len(reads) == 1


@pytest.mark.parametrize("bad", ["", "UPPER", "a.b", "-x", "x" * 64, "../etc"])
def test_invalid_ids_are_refused_before_any_request(
    backend: KubernetesBackend, emulator: KubeEmulator, bad: str
) -> None:
    before = len(emulator.requests)
    with pytest.raises(InvalidSessionIdError, match="Invalid session id"):
        backend.get(bad)
    assert len(emulator.requests) == before


def test_a_missing_token_key_is_a_backend_error_that_names_the_secret(
    emulator: KubeEmulator, kubelet: Kubelet, settings: WebSocketSettings
) -> None:
    seed_cluster(emulator)
    emulator.remove("secrets", NAMESPACE, naming.TOKEN_KEY_SECRET_NAME)
    impl = make_backend(emulator, settings)
    try:
        with pytest.raises(BackendError, match="gamgui-session-token-key") as err:
            impl.create(request("alpha"))
    finally:
        impl.close()
    assert "Pulumi" in (err.value.hint or "")
    assert emulator.get("pods", NAMESPACE, naming.session_pod_name("alpha")) is None


def test_a_short_token_key_setting_is_refused(
    emulator: KubeEmulator, kubelet: Kubelet, settings: WebSocketSettings
) -> None:
    seed_cluster(emulator)
    short = settings.model_copy(update={"session_token_key": SecretStr("too-short")})
    impl = make_backend(emulator, short)
    try:
        with pytest.raises(SettingsError, match="WEBSOCKET_SESSION_TOKEN_KEY"):
            impl.create(request("alpha"))
    finally:
        impl.close()


def test_a_session_recreated_under_its_id_gets_a_new_token(
    backend: KubernetesBackend, emulator: KubeEmulator
) -> None:
    first = backend.create(request("alpha"))
    backend.delete("alpha")
    second = backend.create(request("alpha"))
    assert second.token.get_secret_value() == expected_token(emulator, "alpha")
    assert second.token != first.token
