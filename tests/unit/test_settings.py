import pytest

from session_runtime.errors import SettingsError
from session_runtime.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    for key in list(os.environ):
        if key.startswith("WEBSOCKET_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_match_the_classic_values() -> None:
    s = load_settings()
    assert s.enabled is True
    assert s.proxy_service_url == "websocket-proxy.gamgui.svc.cluster.local"
    assert s.session_path_template == "/ws/session/{{SESSION_ID}}/"
    assert s.max_sessions == 50
    assert s.session_url("abc") == "ws://websocket-proxy.gamgui.svc.cluster.local/ws/session/abc/"


def test_every_placeholder_occurrence_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_SESSION_PATH_TEMPLATE", "/ws/{{SESSION_ID}}/x/{{SESSION_ID}}/")
    assert load_settings().session_path("s1") == "/ws/s1/x/s1/"


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("WEBSOCKET_SESSION_PATH_TEMPLATE", "/ws/session/", "WEBSOCKET_SESSION_PATH_TEMPLATE"),
        ("WEBSOCKET_SESSION_CONNECTION_TEMPLATE", "ws://h/x/", "{{SESSION_ID}}"),
        ("WEBSOCKET_SESSION_CONNECTION_TEMPLATE", "http://h/{{SESSION_ID}}/", "ws://"),
        ("WEBSOCKET_MAX_SESSIONS", "0", "WEBSOCKET_MAX_SESSIONS"),
        ("WEBSOCKET_MAX_SESSIONS", "many", "WEBSOCKET_MAX_SESSIONS"),
        ("WEBSOCKET_ENABLED", "perhaps", "WEBSOCKET_ENABLED"),
        ("WEBSOCKET_BACKEND", "docker", "WEBSOCKET_BACKEND"),
        ("WEBSOCKET_PROXY_SERVICE_URL", "http://", "WEBSOCKET_PROXY_SERVICE_URL"),
        ("WEBSOCKET_PROXY_SERVICE_URL", "host:99999", "invalid port"),
    ],
)
def test_bad_values_stop_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert var in str(info.value)
    assert expected in str(info.value)


def test_settings_are_read_from_a_dotenv_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / ".env").write_text("WEBSOCKET_MAX_SESSIONS=7\nWEBSOCKET_ENABLED=false\n")
    s = load_settings()
    assert s.max_sessions == 7
    assert s.enabled is False


@pytest.mark.parametrize(
    ("url", "http"),
    [
        (
            "websocket-proxy.gamgui.svc.cluster.local",
            "http://websocket-proxy.gamgui.svc.cluster.local",
        ),
        ("ws://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("wss://proxy.example.com", "https://proxy.example.com"),
    ],
)
def test_proxy_url_is_normalised_to_http(
    monkeypatch: pytest.MonkeyPatch, url: str, http: str
) -> None:
    monkeypatch.setenv("WEBSOCKET_PROXY_SERVICE_URL", url)
    assert load_settings().proxy_http_url == http
