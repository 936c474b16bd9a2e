"""Where the Hugging Face Hub is, whether it can be used, and which errors mean "no network".

The course follows the Hugging Face libraries: the Hub is `settings.hub_endpoint()` (HF_ENDPOINT, a mirror or
the tests' local Hub), and HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE mean "the Hugging Face cache only". Three
states, decided once per process and endpoint, within about 3 s:

    "online"       the endpoint answers: download (and cache) the real model and datasets
    "offline"      HF_HUB_OFFLINE=1: use the real model and datasets if they are in the cache, else the
                   embedded model and generated rows
    "unreachable"  the endpoint does not answer: the embedded model and generated rows
"""

from __future__ import annotations

import re
import socket
import sys
import threading
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from unsloth_course import settings

PROBE_TIMEOUT_S = 3.0
DEFAULT_PORTS = {"http": 80, "https": 443}
ONLINE, OFFLINE, UNREACHABLE = "online", "offline", "unreachable"


def _env_offline() -> bool:
    return settings.hub_offline()


def endpoint_address(endpoint: str | None = None) -> tuple[str, int]:
    """(host, port) of the Hub endpoint (default HF_ENDPOINT), http or https; the scheme's port if none."""
    endpoint = endpoint or settings.hub_endpoint()
    url = urlsplit(endpoint)
    if url.scheme not in DEFAULT_PORTS or not url.hostname:
        raise ValueError(f"HF_ENDPOINT={endpoint!r} is not an http(s) URL, e.g. https://huggingface.co")
    try:
        port = url.port
    except ValueError as error:  # a port that is not a number or out of range
        raise ValueError(f"HF_ENDPOINT={endpoint!r}: {error}") from error
    return url.hostname, port or DEFAULT_PORTS[url.scheme]


def _can_connect(host: str, port: int, timeout: float) -> bool:
    result: list[bool] = []

    def probe() -> None:  # DNS lookups ignore socket timeouts, so the whole probe runs in a thread
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@lru_cache(maxsize=16)
def _endpoint_answers(endpoint: str, timeout: float) -> bool:
    host, port = endpoint_address(endpoint)
    return _can_connect(host, port, timeout)


def hub_available(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the Hub can be used: not forced offline and the endpoint answers within `timeout` s.

    The answer is cached per endpoint for the process; `hub_available.cache_clear()` forgets it."""
    if _env_offline():
        return False
    return _endpoint_answers(settings.hub_endpoint(), timeout)


hub_available.cache_clear = _endpoint_answers.cache_clear  # type: ignore[attr-defined]


def hub_mode() -> str:
    """ONLINE, OFFLINE (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE: the cache only) or UNREACHABLE."""
    if _env_offline():
        return OFFLINE
    return ONLINE if hub_available() else UNREACHABLE


def offline_variable() -> str:
    """The variable that switched the Hub off, as `NAME=value`, for messages."""
    return settings.offline_setting() or "HF_HUB_OFFLINE=1"


def hub_status_line() -> str:
    """Why the Hub is or is not used, in a few words."""
    mode = hub_mode()
    if mode == OFFLINE:
        return f"{offline_variable()}: the Hugging Face cache only"
    if mode == ONLINE:
        return f"the Hub ({settings.hub_endpoint()}) is reachable"
    return f"{settings.hub_endpoint()} did not answer within {PROBE_TIMEOUT_S:.0f} s"


def hf_token() -> str | None:
    """HF_TOKEN from the environment or Colab secrets; never printed."""
    token = settings.hf_token_from_env()
    if token:
        return token
    try:  # Colab only
        from google.colab import userdata  # type: ignore[import-not-found]

        return userdata.get("HF_TOKEN")
    except Exception:
        return None


def exception_chain(exc: BaseException | None):
    """`exc`, then its __cause__ (or else __context__), and so on, each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_network_error(exc: BaseException) -> bool:
    """True when `exc` (from huggingface_hub, transformers or datasets) means the Hub could not be reached:
    connection refused or reset, a timeout, a 5xx answer, offline mode without a cached copy. False when the
    Hub answered: a missing or gated repository, a missing file or revision, bad data (fix those, do not fall
    back). The answer is in the chain of causes; datasets cuts some chains (`raise ... from None`) but
    keeps the original as __context__, which this follows too."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    unreachable = (httpx.TransportError, ConnectionError, LocalEntryNotFoundError, OfflineModeIsEnabled)
    for error in exception_chain(exc):
        response = getattr(error, "response", None)
        if isinstance(error, HfHubHTTPError) and response is not None:
            return response.status_code >= 500  # the server answered: 4xx is definite
        if isinstance(error, unreachable):
            return True
    return False


def network_failure(exc: BaseException) -> str:
    """What went wrong on the network, in a few words: "HTTP 503 Service Unavailable", the transport error
    ("ConnectError: [Errno 111] Connection refused"), else the outermost error."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    chain = list(exception_chain(exc))
    for error in chain:
        response = getattr(error, "response", None)
        if isinstance(error, HfHubHTTPError) and response is not None:
            return f"HTTP {response.status_code} {response.reason_phrase}".strip()
    transport = [error for error in chain if isinstance(error, httpx.TransportError)]
    return error_summary(transport[0] if transport else exc, 160)


class SourceError(ValueError):
    """The model or a dataset cannot be loaded from where it was asked for; the message says what to do."""


_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def looks_like_path(text: str) -> bool:
    """A local path rather than a Hub id: it exists, or starts like a path, or has more than one folder."""
    return (text.startswith(_PATH_PREFIXES) or text.count("/") > 1 or "\\" in text
            or Path(text).expanduser().exists())


def is_repo_id(text: str) -> bool:
    """`org/name` or `name`, as the Hub spells repository ids."""
    return bool(_REPO_ID.match(text)) and not text.endswith((".", "-")) and ".." not in text


def warn(message: str) -> None:
    """A warning line the learner sees (stderr: red in Colab), for a fallback that is not the normal path."""
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def error_summary(exc: BaseException, limit: int = 240) -> str:
    """`Type: first line of the message`, shortened, for one-line messages."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
