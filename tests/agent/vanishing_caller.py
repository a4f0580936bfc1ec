"""A caller in a process of its own, for tests that kill it with SIGKILL: no DTLS
close and no hang-up reach the server, as when a phone's network disappears.

Prints one JSON line when the call is ready ({call_id, resume_token}); with
`--story`, asks for a long reply first and prints again once it is being heard.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from rtc_agent.loadtest.caller import ScriptedCaller


async def main(url: str, story: bool) -> None:
    caller = ScriptedCaller(url)
    await caller.connect(timeout=30)
    ready = next(e for e in caller.events if e["type"] == "session.ready")
    print(json.dumps({"call_id": caller.call_id, "resume_token": ready["resume_token"]}),
          flush=True)
    if story:
        asked = time.monotonic()
        caller.send({"type": "text", "text": "tell me a story"})
        audible = await caller.wait_audible(asked, 30)
        # CLOCK_MONOTONIC is the machine's: the test compares it with its own
        print(json.dumps({"audible_at": audible}), flush=True)
    await asyncio.sleep(3600)  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], "--story" in sys.argv))
