"""What this process last knew of its Realtime service, for `/healthz` and the logs.

Fed by `serve`'s check at start (`client.probe`) and then by every call: a call
whose socket opened says "ok", one refused or unable to connect says why. So a
wrong key shows in `/healthz` before the first caller, and a key revoked later
shows after the first call that meets it. Pure: the caller passes the time.
"""

from __future__ import annotations

import datetime
from typing import Any

STATES = ("unknown", "ok", "unauthorized", "unreachable", "refused")


class UpstreamHealth:
    """The last known state of the Realtime service and when it was learned."""

    def __init__(self) -> None:
        self.state = "unknown"
        self.detail = ""
        self.checked: datetime.datetime | None = None

    def ok(self, now: datetime.datetime) -> bool:
        """The service accepted a connection; True when that is news."""
        return self._set("ok", "", now)

    def failed(self, kind: str, detail: str, now: datetime.datetime) -> bool:
        """A connection was refused or failed (`kind` from `UpstreamFailed.kind`)."""
        return self._set(kind if kind in STATES else "refused", detail, now)

    def _set(self, state: str, detail: str, now: datetime.datetime) -> bool:
        changed = state != self.state
        self.state, self.detail, self.checked = state, detail, now
        return changed

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "state": self.state,
            "checked": self.checked.isoformat(timespec="seconds") if self.checked else None,
        }
        if self.detail:
            body["detail"] = self.detail
        return body
