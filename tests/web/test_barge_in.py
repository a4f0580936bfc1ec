"""Barge-in in the browser: the page mutes the agent's stale audio at once.

When the caller talks over a reply, the server drops the audio it still had
queued and sends `state: user_speaking`; what the browser already holds is stale.
The page mutes its <audio> element in the data channel's handler and lets the
agent be heard again for the next reply (web/call.js, "barge-in"). Chromium's
fake microphone asks for the offline backend's story, then talks over it; a
typed message over the story does the same.
"""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.web.conftest import csp_violations, watch_csp
from tests.web.test_call import AUDIBLE, STORY, dial, final, typed_call, wait_calls
from tests.web.test_page import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RATE = 48000
# The page is ready and connected within ~2 s of opening the microphone (whose
# file starts then), so the question comes after that; the story (~30 s of audio)
# starts a few seconds after the question and is well under way when the caller
# talks over it. The silence after that outlasts each test (the file loops).
LEAD_S = 2.5
INTERRUPT_AFTER_S = 8.0
TAIL_S = 40.0
MUTE_WITHIN_MS = 50  # a generous bound: the mute is synchronous in the handler

# Every 20 ms: [time, the page's state, the <audio> element muted, agent level, call].
TIMELINE = """
window.__timeline = [];
setInterval(() => {
  const a = window.rtcAgent;
  const el = document.getElementById("remote");
  if (!a || !el) return;
  window.__timeline.push([performance.now(), a.state, el.muted, a.remoteLevel, a.calls]);
}, 20);
"""

HANG_UP_IF_MUTED = """
(() => {
  const muted = rtcAgent.agentMuted && rtcAgent.localMutes[0].restoredAt === null;
  if (muted) document.getElementById("call").click();
  return muted;
})()
"""


@pytest.fixture(scope="module")
def barge_in_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Silence, "tell me a story", silence while it plays, then speech over it."""
    from tests.speech import speak_pcm

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(RATE * seconds), np.int16)

    pcm = np.concatenate([
        silence(LEAD_S), speak_pcm("tell me a story", RATE), silence(INTERRUPT_AFTER_S),
        speak_pcm("what is two plus two", RATE), silence(TAIL_S),
    ])
    out = tmp_path_factory.mktemp("audio") / "barge-in.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return out


def story_call(stack_factory, browser_factory, wav: Path):  # type: ignore[no-untyped-def]
    stack = stack_factory("rtc-agent")
    page = watch_csp(browser_factory(stack, audio=wav).new_page())
    page.add_init_script(TIMELINE)
    return stack, dial(page, stack)


def wait_barge_in(page, stack) -> None:  # type: ignore[no-untyped-def]
    try:
        wait_for(page, "rtcAgent.state === 'speaking' && rtcAgent.remotePeak > 0.02", 60,
                 "the story playing")
        wait_for(page, "rtcAgent.localMutes.length > 0", 40, "a local mute at the barge-in")
    except AssertionError:
        print(stack.server_log())
        raise


def test_barge_in_mutes_the_agent_at_once_and_restores_it(
    stack_factory, browser_factory, barge_in_wav: Path
) -> None:
    stack, page = story_call(stack_factory, browser_factory, barge_in_wav)
    wait_barge_in(page, stack)
    try:
        wait_for(page, f"{final('assistant')} >= 2", 60, "the answer after the barge-in")
        wait_for(page, "rtcAgent.state === 'listening'", 30, "the answer's end")
    except AssertionError:
        print(stack.server_log())
        raise
    records = page.evaluate("rtcAgent.localMutes")
    timeline = page.evaluate("window.__timeline")
    transcripts = page.evaluate("rtcAgent.transcripts")
    page.click("#call")
    print("local mutes:", records)
    story = next(t for t in transcripts if t["role"] == "assistant")
    assert story["interrupted"], story  # the caller did talk over it

    mute = records[0]
    assert mute["trigger"] == "user_speaking" and mute["before"] == "speaking", mute
    took = mute["mutedAt"] - mute["arrivedAt"]
    print(f"muted {took:.2f} ms after user_speaking arrived; restored by "
          f"{mute['restoredBy']} {mute['restoredAt'] - mute['mutedAt']:.0f} ms later")
    assert 0 <= took < MUTE_WITHIN_MS, mute
    assert mute["restoredBy"] in ("thinking", "speaking"), mute

    # muted for as long as the caller spoke over the agent
    after = [s for s in timeline if s[0] > mute["mutedAt"]]
    turn = []
    for sample in after:
        if sample[1] != "user_speaking":
            break
        turn.append(sample)
    assert len(turn) >= 10, "too few samples while the caller spoke"
    assert all(muted for _, _, muted, _, _ in turn), [s for s in turn if not s[2]][:3]

    # heard again for the next reply: not muted, and its audio plays
    replying = [s for s in timeline if s[0] > mute["restoredAt"] and s[1] == "speaking"]
    assert replying, "no reply after the barge-in"
    assert not any(muted for _, _, muted, _, _ in replying)
    heard = [s for s in replying if s[3] > AUDIBLE]
    assert len(heard) >= 5, "the reply after the barge-in was not audible"
    assert all(r["restoredAt"] is not None for r in records), records
    assert csp_violations(page) == []


def test_a_new_call_after_hanging_up_mid_barge_in_starts_unmuted(
    stack_factory, browser_factory, barge_in_wav: Path
) -> None:
    stack, page = story_call(stack_factory, browser_factory, barge_in_wav)
    wait_barge_in(page, stack)
    # hang up while muted (checked and clicked in one go, in the page)
    assert page.evaluate(HANG_UP_IF_MUTED), "the barge-in was over before the hang-up"
    mute = page.evaluate("rtcAgent.localMutes[0]")
    assert mute["restoredBy"] == "hangup", mute
    assert page.evaluate("rtcAgent.agentMuted") is False
    assert wait_calls(stack, 0) == 0

    page.click("#call")  # a new call
    wait_for(page, "rtcAgent.calls === 2 && rtcAgent.connectionState === 'connected'", 30,
             "the second call")
    assert page.evaluate("rtcAgent.agentMuted") is False
    started = page.evaluate("performance.now()")
    try:
        wait_for(page, "rtcAgent.remotePeak > 0.02", 90, "a reply in the second call")
    except AssertionError:
        print(stack.server_log())
        raise
    time.sleep(0.5)
    timeline = [s for s in page.evaluate("window.__timeline") if s[0] > started]
    mutes = page.evaluate("rtcAgent.localMutes")
    page.click("#call")
    # the agent was heard: audible samples with the element not muted (a mute of
    # this call's own, at a barge-in, may come between them)
    heard = [s for s in timeline if s[4] == 2 and s[3] > AUDIBLE and not s[2]]
    assert len(heard) >= 5, (mutes, timeline[-5:])
    assert not any(s[2] for s in timeline if s[4] == 2 and s[0] < heard[0][0]), \
        "muted before the second call's first audio"


def test_typing_over_a_reply_mutes_it_until_the_answer(
    stack_factory, browser_factory, silence_wav: Path
) -> None:
    """A typed message cuts the reply too: muted when it is sent, heard again for
    the answer."""
    stack = stack_factory("rtc-agent")
    page = typed_call(stack, browser_factory, silence_wav, init=TIMELINE)
    page.fill("#text", STORY)
    page.press("#text", "Enter")
    wait_for(page, "rtcAgent.state === 'speaking' && rtcAgent.remoteLevel > 0.02", 60,
             "the story playing")
    page.fill("#text", "what is two plus two")
    page.press("#text", "Enter")
    wait_for(page, f"{final('assistant')} >= 2", 60, "the answer")
    records = page.evaluate("rtcAgent.localMutes")
    timeline = page.evaluate("window.__timeline")
    page.click("#call")
    print("local mutes:", records)
    mute = records[0]
    assert mute["trigger"] == "text" and mute["restoredBy"] in ("thinking", "speaking"), mute
    assert mute["mutedAt"] - mute["arrivedAt"] < MUTE_WITHIN_MS, mute
    replying = [s for s in timeline if s[0] > mute["restoredAt"] and s[1] == "speaking"]
    assert replying and not any(s[2] for s in replying)
    assert len([s for s in replying if s[3] > AUDIBLE]) >= 5, "the answer was not audible"
