"""Is the Hugging Face Hub reachable? Decided within seconds, once per process."""

from __future__ import annotations

import socket
import threading
from functools import lru_cache

from unsloth_course import settings

HUB_HOST = "huggingface.co"


def _env_offline() -> bool:
    return settings.hub_offline()


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


@lru_cache(maxsize=1)
def hub_available(timeout: float = 3.0) -> bool:
    """True when the Hub can be used: not forced offline and huggingface.co answers within `timeout` s."""
    if _env_offline():
        return False
    return _can_connect(HUB_HOST, 443, timeout)


def hub_status_line() -> str:
    """One line saying why the Hub is not used (or that it is)."""
    if _env_offline():
        return "HF_HUB_OFFLINE is set"
    return "the Hub is reachable" if hub_available() else f"{HUB_HOST} did not answer within 3 s"


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
