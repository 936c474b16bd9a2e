"""unsloth_course.hub: the probe follows HF_ENDPOINT and is bounded, offline decisions are fast, network
errors are told apart from answers, the token is read but never shown."""

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
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(hub, "_can_connect", lambda *a: False)
    assert hub.hub_status_line() == "https://huggingface.co did not answer within 3 s"
    hub.hub_available.cache_clear()
    monkeypatch.setattr(hub, "_can_connect", lambda *a: True)
    assert hub.hub_status_line() == "the Hub (https://huggingface.co) is reachable"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_status_line() == "HF_HUB_OFFLINE=1: the Hugging Face cache only"


@pytest.mark.parametrize(("endpoint", "address"), [
    ("https://huggingface.co", ("huggingface.co", 443)),
    ("http://127.0.0.1:8765", ("127.0.0.1", 8765)),
    ("http://mirror.example/", ("mirror.example", 80)),
    ("https://hf-mirror.com:8443/", ("hf-mirror.com", 8443)),
])
def test_endpoint_address(endpoint, address):
    assert hub.endpoint_address(endpoint) == address


@pytest.mark.parametrize("endpoint", ["huggingface.co", "ftp://hf.co", "http://host:99999", "http://"])
def test_endpoint_address_rejects_what_is_not_an_http_url(endpoint):
    with pytest.raises(ValueError, match="HF_ENDPOINT="):
        hub.endpoint_address(endpoint)


def test_hub_available_probes_the_endpoint_of_hf_endpoint(online_env, monkeypatch):
    """The defect: the probe asked huggingface.co:443 whatever HF_ENDPOINT said (a mirror, a local Hub)."""
    calls = []
    monkeypatch.setattr(hub, "_can_connect", lambda host, port, timeout: calls.append((host, port)) or True)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:8765")
    assert hub.hub_available() is True
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com")
    assert hub.hub_available() is True
    assert hub.hub_available() is True  # cached per endpoint
    assert calls == [("127.0.0.1", 8765), ("hf-mirror.com", 443)]


def test_hub_mode(online_env, monkeypatch):
    monkeypatch.setattr(hub, "_can_connect", lambda *a: False)
    assert hub.hub_mode() == hub.UNREACHABLE
    hub.hub_available.cache_clear()
    monkeypatch.setattr(hub, "_can_connect", lambda *a: True)
    assert hub.hub_mode() == hub.ONLINE
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert hub.hub_mode() == hub.OFFLINE and hub.offline_variable() == "TRANSFORMERS_OFFLINE=1"


def test_the_probe_is_bounded_even_when_name_resolution_hangs(monkeypatch):
    def slow_dns(*args, **kwargs):  # getaddrinfo ignores socket timeouts: a stuck resolver blocks this long
        time.sleep(5)
        raise OSError("no answer")

    monkeypatch.setattr(hub.socket, "create_connection", slow_dns)
    start = time.perf_counter()
    assert hub._can_connect("huggingface.co", 443, timeout=0.5) is False
    assert time.perf_counter() - start < 1.0


def test_is_network_error_follows_causes_and_contexts():
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    def chained(outer: BaseException, inner: BaseException, cause: bool = True) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as error:
                if cause:
                    raise outer from error
                raise outer from None  # what datasets does: the original stays as __context__ only
        except BaseException as error:
            return error

    request = httpx.Request("GET", "http://127.0.0.1/x")
    for status, expected in ((503, True), (500, True), (404, False), (401, False)):
        http_error = HfHubHTTPError("x", response=httpx.Response(status, request=request))
        assert hub.is_network_error(chained(FileNotFoundError("outer"), http_error)) is expected
    assert hub.is_network_error(chained(OSError("x"), httpx.ConnectError("refused"))) is True
    assert hub.is_network_error(chained(RuntimeError("x"), httpx.ReadTimeout("slow"), cause=False)) is True
    assert hub.is_network_error(OfflineModeIsEnabled("offline")) is True
    assert hub.is_network_error(ValueError("column 'output' missing")) is False
    assert hub.is_network_error(chained(RuntimeError("Dataset scripts are no longer supported"),
                                        FileNotFoundError("not cached"), cause=False)) is False


def test_hf_token_from_the_environment_is_never_printed(monkeypatch, capsys):
    secret = "hf_SecretTestToken123"
    monkeypatch.setenv("HF_TOKEN", secret)
    assert hub.hf_token() == secret
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setitem(sys.modules, "google.colab", None)  # as outside Colab
    assert hub.hf_token() is None
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
