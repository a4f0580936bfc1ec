"""Which Realtime service a call talks to, and how to reach it.

Chosen once at start-up from flags and environment: OpenAI GA, Azure GA, Azure
preview (beta dialect), any URL, or none (then the server starts the embedded
offline backend). Keys live only here and in the WebSocket handshake headers;
nothing derived from them is ever sent to a caller.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

from rtc_agent.protocol import Dialect, azure_version_dialect

DEFAULT_OPENAI_MODEL = "gpt-realtime"


@dataclass(frozen=True)
class RealtimeService:
    kind: str  # offline | openai | azure | azure-preview | custom
    url: str
    dialect: Dialect
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        """The URL without query secrets, for logs."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _ws_base(endpoint: str) -> str:
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def service_from_settings(
    env: Mapping[str, str] | None = None,
    *,
    realtime_url: str | None = None,
    model: str | None = None,
    beta: bool = False,
) -> RealtimeService | None:
    """The configured cloud/custom backend, or None for the offline one."""
    env = os.environ if env is None else env
    if realtime_url:
        headers: dict[str, str] = {}
        key = env.get("REALTIME_API_KEY") or env.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if beta:
            headers["OpenAI-Beta"] = "realtime=v1"
        return RealtimeService(
            "custom", realtime_url, Dialect.BETA if beta else Dialect.GA, headers
        )
    endpoint = env.get("AZURE_OPENAI_ENDPOINT")
    azure_key = env.get("AZURE_OPENAI_API_KEY")
    deployment = env.get("AZURE_OPENAI_DEPLOYMENT")
    if endpoint and azure_key and deployment:
        base = _ws_base(endpoint)
        version = env.get("AZURE_OPENAI_API_VERSION")
        # A GA-era version names the GA protocol, which Azure serves on the v1 path
        # below, without any api-version; only a beta version picks the preview path.
        if version and azure_version_dialect(version) is Dialect.BETA:
            query = urlencode({"api-version": version, "deployment": deployment})
            return RealtimeService(
                "azure-preview", f"{base}/openai/realtime?{query}", Dialect.BETA,
                {"api-key": azure_key},
            )
        # GA on Azure: no api-version (Microsoft documents a 401 with one).
        query = urlencode({"model": deployment})
        return RealtimeService(
            "azure", f"{base}/openai/v1/realtime?{query}", Dialect.GA, {"api-key": azure_key}
        )
    openai_key = env.get("OPENAI_API_KEY")
    if openai_key:
        chosen = model or env.get("OPENAI_REALTIME_MODEL") or DEFAULT_OPENAI_MODEL
        base = _ws_base(env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1")
        # No OpenAI-Beta header: since 2026-05 OpenAI closes such sockets (4000).
        return RealtimeService(
            "openai", f"{base}/realtime?{urlencode({'model': chosen})}", Dialect.GA,
            {"Authorization": f"Bearer {openai_key}"},
        )
    return None


def offline_service(url: str) -> RealtimeService:
    return RealtimeService("offline", url, Dialect.GA, {"Authorization": "Bearer offline"})
