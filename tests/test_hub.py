"""unsloth_course.hub: offline decisions are fast, the probe times out, the token is read but never shown."""

import socket
import sys
import time

import pytest

from unsloth_course import hub

pytestmark = pytest.mark.usefixtures("hub_cache_clear")


@pytest.fixture
def online_env(monkeypatch):
    """Not forced offline; the probe itself is replaced in each test (no test may reach the network)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def test_hub_available_is_false_at_once_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_can_connect", lambda *a: pytest.fail("probed the network while offline"))
    start = time.perf_counter()
    assert hub.hub_available() is False
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_offline_variables_and_values(online_env, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert hub._env_offline()


@pytest.mark.parametrize("value", ["0", "", "false", "no"])
def test_other_values_are_not_offline(online_env, monkeypatch, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert not hub._env_offline()


def test_hub_available_asks_the_probe_once(online_env, monkeypatch):
    calls = []
    monkeypatch.setattr(hub, "_can_connect", lambda host, port, timeout: calls.append((host, port)) or True)
    assert hub.hub_available() is True
    assert hub.hub_available() is True
    assert calls == [("huggingface.co", 443)]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_can_connect_to_a_closed_port_is_false_within_the_timeout():
    start = time.perf_counter()
    assert hub._can_connect("127.0.0.1", _closed_port(), timeout=1.0) is False
    assert time.perf_counter() - start < 1.5


def test_can_connect_to_a_listening_port_is_true():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub._can_connect("127.0.0.1", server.getsockname()[1], timeout=2.0) is True


def test_hub_status_line(online_env, monkeypatch):
    monkeypatch.setattr(hub, "_can_connect", lambda *a: False)
    assert hub.hub_status_line() == "huggingface.co did not answer within 3 s"
    hub.hub_available.cache_clear()
    monkeypatch.setattr(hub, "_can_connect", lambda *a: True)
    assert hub.hub_status_line() == "the Hub is reachable"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_status_line() == "HF_HUB_OFFLINE is set"


def test_hf_token_from_the_environment_is_never_printed(monkeypatch, capsys):
    secret = "hf_SecretTestToken123"
    monkeypatch.setenv("HF_TOKEN", secret)
    assert hub.hf_token() == secret
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setitem(sys.modules, "google.colab", None)  # as outside Colab
    assert hub.hf_token() is None
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
