"""The agent's side of a Realtime conversation, as a state machine without I/O.

`RealtimeSession` takes events in (from the Realtime service, from the caller,
from the playout track, from finished tools) and returns effects out: events to
send upstream, messages for the caller, audio to play, tools to run. The call
(`rtc_agent.call`) executes the effects; nothing here touches a socket or a
clock, so every turn, interruption and tool round can be tested directly.

Upstream events arrive already normalised to GA names (see `dialect`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rtc_agent import datachannel as caller
from rtc_agent.datachannel import CallState, ServerMessage
from rtc_agent.protocol import BYTES_PER_MS, Dialect, say_exactly
from rtc_agent.realtime.dialect import session_update, text_item
from rtc_agent.realtime.settings import SessionSettings

# Errors that are races of a healthy conversation, not faults (see the protocol
# reference, 6.2): reported to logs, never to the caller.
BENIGN_ERROR_CODES = frozenset(
    {
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "input_audio_buffer_commit_empty",
        "item_truncate_invalid_item_id",
        "item_delete_invalid_item_id",
        "item_retrieve_invalid_item_id",
    }
)


# What a call keeps is bounded, however long it lasts: finished responses and
# their items are dropped (only their ids are remembered, to ignore late events),
# and a reconnect replays at most the last MAX_REPLAY_ENTRIES turns.
MAX_REPLAY_ENTRIES = 100
# Typed messages that arrive before the session is configured (or while it is
# being replaced) wait for it, up to this many; older ones give way.
MAX_HELD_TEXTS = 5
RECENT_RESPONSES = 64


class RecentIds:
    """An insertion-ordered set that forgets its oldest ids beyond `limit`."""

    __slots__ = ("_ids", "_limit")

    def __init__(self, limit: int) -> None:
        self._ids: dict[str, None] = {}
        self._limit = limit

    def add(self, key: str) -> None:
        self._ids.pop(key, None)
        self._ids[key] = None
        if len(self._ids) > self._limit:
            del self._ids[next(iter(self._ids))]

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)


# ---------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class SendUpstream:
    """Send this event to the Realtime service."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendCaller:
    """Send this message to the caller on the `events` data channel."""

    message: ServerMessage


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Queue pcm16 24 kHz mono audio of an assistant item for playout."""

    item_id: str
    pcm: bytes


@dataclass(frozen=True, slots=True)
class EndItemAudio:
    """No more audio will come for this item: the playout may report it finished."""

    item_id: str


@dataclass(frozen=True, slots=True)
class FlushPlayout:
    """Drop queued audio now; answer with `RealtimeSession.on_playout_flushed`.

    `unheard_ms`: of what was sent, how much (the last part) never reached the
    caller, because the media path had died; 0 for a barge-in."""

    unheard_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class RunTool:
    """Start a tool call off the media path; answer with `on_tool_result`."""

    call_id: str
    name: str
    arguments: dict[str, Any]


Effect = SendUpstream | SendCaller | PlayAudio | EndItemAudio | FlushPlayout | RunTool


# ---------------------------------------------------------------- state


@dataclass(slots=True)
class AssistantItem:
    item_id: str
    response_id: str
    # The transcript as it streamed in, and for each delta the item's audio received
    # by then (ms): where in the audio that text is spoken, roughly (services send
    # a piece of transcript just before or with its audio).
    text: list[str] = field(default_factory=list)
    anchors: list[float] = field(default_factory=list)
    released: int = 0  # deltas sent to the caller so far
    full_text: str | None = None  # the service's final transcript
    received_ms: float = 0.0
    sent_ms: float = 0.0
    has_audio: bool = False
    audio_done: bool = False
    transcript_done: bool = False
    played_out: bool = False
    finalized: bool = False
    interrupted: bool = False


@dataclass(slots=True)
class ToolCall:
    call_id: str
    name: str
    response_id: str
    arguments: str = ""
    output: str | None = None
    item_id: str = ""  # the function_call item, which its output follows
    moved_on: bool = False  # cancelled by the caller's barge-in: nobody waits for it


@dataclass(slots=True)
class HistoryEntry:
    role: str
    text: str


class _BoundedMap:
    """A small str -> str map that forgets its oldest entries beyond `limit`."""

    __slots__ = ("_data", "_limit")

    def __init__(self, limit: int) -> None:
        self._data: dict[str, str] = {}
        self._limit = limit

    def put(self, key: str, value: str) -> None:
        self._data[key] = value
        if len(self._data) > self._limit:
            del self._data[next(iter(self._data))]

    def pop(self, key: str) -> str:
        return self._data.pop(key, "")

    def __len__(self) -> int:
        return len(self._data)


class RealtimeSession:
    """Conversation state of one call: turns, items, played audio, tool rounds."""

    def __init__(
        self,
        dialect: Dialect,
        settings: SessionSettings,
        tools: list[dict[str, Any]] | None = None,
    ) -> None:
        self.dialect = dialect
        self.settings = settings
        self.tools = tools or []
        self.state = CallState.LISTENING
        self.playout_delay_ms = 0.0
        self.active_response_id: str | None = None
        # Responses the caller moved on from: their late output is ignored.
        self._discarded_responses = RecentIds(RECENT_RESPONSES)
        # Responses done with and forgotten, so a late event cannot revive their items.
        self._retired_responses = RecentIds(RECENT_RESPONSES)
        self._items: dict[str, AssistantItem] = {}
        self._response_items: dict[str, list[str]] = {}
        # item_id -> tool name, until its arguments are done (beta omits the name there).
        self._function_names = _BoundedMap(RECENT_RESPONSES)
        self._tool_calls: dict[str, ToolCall] = {}
        self._response_done: set[str] = set()  # done, but items still playing or tools running
        self._create_after_active = False
        self._history: dict[str, HistoryEntry] = {}  # item_id -> turn, oldest first
        self._configured = False  # the service acknowledged our session.update
        self._held_texts: deque[str] = deque(maxlen=MAX_HELD_TEXTS)
        # Items with transcript deltas waiting for their audio to be heard.
        self._captions_held: set[str] = set()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> list[Effect]:
        """Configure a freshly opened session."""
        self._configured = False
        return [SendUpstream(session_update(self.dialect, self.settings, self.tools))]

    def on_reconnected(self) -> list[Effect]:
        """Configure a replacement session and replay the conversation as text.

        A new WebSocket is a new, empty conversation; replaying what was said
        (as heard) lets the model carry on where the dropped one stopped.
        """
        effects = self.start()
        for entry in self._history.values():
            if entry.text:
                effects.append(SendUpstream(text_item(self.dialect, entry.role, entry.text)))
        effects.extend(self._set_state(CallState.LISTENING))
        return effects

    def on_disconnected(self) -> list[Effect]:
        """The upstream dropped: whatever was generating is lost."""
        effects: list[Effect] = []
        if self.active_response_id:
            self._discarded_responses.add(self.active_response_id)
            # Its response.done will never come: let _retire forget it once its
            # items are final, or each reconnect would leave an entry behind.
            self._response_done.add(self.active_response_id)
            self.active_response_id = None
        self._create_after_active = False
        for item in self._items.values():
            if not item.finalized and not item.has_audio:
                item.interrupted = True
                effects.extend(self._finalize(item))
        # Pending tool rounds cannot be answered on a new conversation.
        self._tool_calls.clear()
        self._configured = False
        effects.extend(self._set_state(CallState.RECONNECTING))
        self._retire()
        return effects

    # ------------------------------------------------------------ upstream

    def handle_upstream(self, event: dict[str, Any]) -> list[Effect]:
        etype = event.get("type", "")
        handler = _UPSTREAM_HANDLERS.get(etype)
        if handler is None:
            return []
        effects = handler(self, event)
        self._retire()
        return effects

    def _on_session_updated(self, event: dict[str, Any]) -> list[Effect]:
        """The session is configured: typed messages held until now go out."""
        self._configured = True
        if not self._held_texts:
            return []
        effects: list[Effect] = []
        while self._held_texts:
            effects.append(SendUpstream(text_item(self.dialect, "user",
                                                  self._held_texts.popleft())))
        effects.extend(self._create_response())
        effects.extend(self._set_state(CallState.THINKING))
        return effects

    def _create_response(self) -> list[Effect]:
        if self.active_response_id is None:
            return [SendUpstream({"type": "response.create"})]
        # A cancel is on its way; a create now would collide with it.
        self._create_after_active = True
        return []

    def _on_speech_started(self, event: dict[str, Any]) -> list[Effect]:
        td = self.settings.turn_detection
        # interrupt_response off: the caller's voice does not cut the agent short.
        effects = self._interrupt() if td is None or td.interrupt_response else []
        effects.extend(self._set_state(CallState.USER_SPEAKING))
        return effects

    def _on_speech_stopped(self, event: dict[str, Any]) -> list[Effect]:
        td = self.settings.turn_detection
        return self._set_state(
            CallState.THINKING if td and td.create_response else CallState.LISTENING)

    def _on_user_item(self, event: dict[str, Any]) -> list[Effect]:
        item = event.get("item") or {}
        if item.get("type") != "message" or item.get("role") != "user":
            return []
        item_id = item.get("id")
        if item_id and item_id not in self._history:
            text = ""
            for part in item.get("content") or []:
                if part.get("type") == "input_text":
                    text += part.get("text") or ""
            self._remember(item_id, "user", text)
        return []

    def _on_transcription_delta(self, event: dict[str, Any]) -> list[Effect]:
        item_id = event.get("item_id", "")
        delta = event.get("delta") or ""
        if not delta:
            return []
        return [SendCaller(caller.transcript_delta("user", item_id, delta))]

    def _on_transcription_completed(self, event: dict[str, Any]) -> list[Effect]:
        item_id = event.get("item_id", "")
        text = (event.get("transcript") or "").strip()
        self._remember(item_id, "user", text)
        return [SendCaller(caller.transcript_done("user", item_id, text))]

    def _on_transcription_failed(self, event: dict[str, Any]) -> list[Effect]:
        item_id = event.get("item_id", "")
        return [SendCaller(caller.transcript_done("user", item_id, ""))]

    def _on_response_created(self, event: dict[str, Any]) -> list[Effect]:
        response = event.get("response") or {}
        rid = response.get("id")
        if not rid:
            return []
        self.active_response_id = rid
        self._response_items.setdefault(rid, [])
        if self.state != CallState.USER_SPEAKING:
            return self._set_state(CallState.THINKING)
        return []

    def _on_output_item_added(self, event: dict[str, Any]) -> list[Effect]:
        item = event.get("item") or {}
        rid = event.get("response_id") or self.active_response_id or ""
        item_id = item.get("id")
        if not item_id:
            return []
        if item.get("type") == "function_call":
            self._function_names.put(item_id, item.get("name") or "")
            return []
        if rid in self._retired_responses:
            return []
        if item.get("type") == "message":
            self._items[item_id] = AssistantItem(item_id=item_id, response_id=rid)
            self._response_items.setdefault(rid, []).append(item_id)
        return []

    def _assistant_item(self, event: dict[str, Any]) -> AssistantItem | None:
        item_id = event.get("item_id")
        if not item_id:
            return None
        item = self._items.get(item_id)
        if item is None:
            # Some servers skip output_item.added; adopt the item on first sight,
            # unless its response is over (a late event of a forgotten item).
            rid = event.get("response_id") or self.active_response_id or ""
            if rid in self._retired_responses or rid in self._discarded_responses:
                return None
            item = AssistantItem(item_id=item_id, response_id=rid)
            self._items[item_id] = item
            self._response_items.setdefault(rid, []).append(item_id)
        return item

    def _on_audio_delta(self, event: dict[str, Any]) -> list[Effect]:
        item = self._assistant_item(event)
        if item is None or item.response_id in self._discarded_responses or item.finalized:
            return []
        try:
            pcm = base64.b64decode(event.get("delta") or "", validate=True)
        except (binascii.Error, ValueError):
            return []
        if len(pcm) % 2:
            pcm = pcm[:-1]
        if not pcm:
            return []
        item.has_audio = True
        item.received_ms += len(pcm) / BYTES_PER_MS
        return [PlayAudio(item.item_id, pcm)]

    def _on_audio_done(self, event: dict[str, Any]) -> list[Effect]:
        item = self._assistant_item(event)
        if item is None or item.audio_done:
            return []
        item.audio_done = True
        if item.has_audio and not item.finalized:
            return [EndItemAudio(item.item_id)]
        return []

    def _on_text_delta(self, event: dict[str, Any]) -> list[Effect]:
        item = self._assistant_item(event)
        delta = event.get("delta") or ""
        if item is None or not isinstance(delta, str) or not delta or item.finalized:
            return []
        if item.response_id in self._discarded_responses:
            return []
        item.text.append(delta)
        item.anchors.append(item.received_ms)
        return self._release_captions(item)

    def _spoken(self, item: AssistantItem) -> bool:
        """Whether the item's text follows its audio: a reply of an audio session
        (its audio may not have started arriving when its first text does)."""
        return item.has_audio or not self.settings.text_only

    def _release_captions(self, item: AssistantItem) -> list[Effect]:
        """Send the deltas the caller has heard by now: all of a text reply's; of a
        spoken one, those whose audio has played (sent minus the caller's playout
        delay), so the page's text never runs ahead of its speaker."""
        effects: list[Effect] = []
        if not self._spoken(item) or item.played_out:
            limit = len(item.text)
        else:
            heard = item.sent_ms - self.playout_delay_ms
            limit = item.released
            while limit < len(item.anchors) and item.anchors[limit] < heard:
                limit += 1
        for delta in item.text[item.released:limit]:
            effects.append(SendCaller(caller.transcript_delta("assistant", item.item_id, delta)))
        item.released = limit
        if limit < len(item.text):
            self._captions_held.add(item.item_id)
        else:
            self._captions_held.discard(item.item_id)
        return effects

    def _on_text_done(self, event: dict[str, Any]) -> list[Effect]:
        item = self._assistant_item(event)
        if item is None or item.finalized:
            return []
        full = event.get("transcript") if "transcript" in event else event.get("text")
        if isinstance(full, str):
            item.full_text = full
        item.transcript_done = True
        if not item.has_audio or item.played_out:
            return self._finalize(item)
        return []

    def _on_function_arguments_done(self, event: dict[str, Any]) -> list[Effect]:
        call_id = event.get("call_id")
        item_id = event.get("item_id", "")
        rid = event.get("response_id") or self.active_response_id or ""
        if not call_id or call_id in self._tool_calls:
            return []
        if rid in self._discarded_responses:
            return []
        name = event.get("name") or self._function_names.pop(item_id)
        raw = event.get("arguments") or "{}"
        call = ToolCall(call_id=call_id, name=name, response_id=rid, arguments=raw,
                        item_id=item_id if isinstance(item_id, str) else "")
        self._tool_calls[call_id] = call
        try:
            args = json.loads(raw)
            if not isinstance(args, dict):
                raise ValueError("arguments are not an object")
        except ValueError as exc:
            # Bad arguments from the model still get an output, so the round ends.
            call.output = json.dumps({"error": f"invalid arguments: {exc}"})
            return [SendCaller(caller.tool_started(call_id, name, {})),
                    SendCaller(caller.tool_finished(call_id, name, False, 0))]
        effects: list[Effect] = [
            SendCaller(caller.tool_started(call_id, name, args)),
            RunTool(call_id, name, args),
        ]
        effects.extend(self._set_state(CallState.THINKING))
        return effects

    def _on_response_done(self, event: dict[str, Any]) -> list[Effect]:
        response = event.get("response") or {}
        rid = response.get("id") or self.active_response_id or ""
        effects: list[Effect] = []
        if rid == self.active_response_id:
            self.active_response_id = None
        self._response_done.add(rid)
        for item_id in self._response_items.get(rid, []):
            item = self._items[item_id]
            if not item.finalized and not item.has_audio:
                # Text-only items are complete once their response is.
                item.interrupted = item.interrupted or response.get("status") == "cancelled"
                effects.extend(self._finalize(item))
            elif item.has_audio and not item.audio_done:
                item.audio_done = True
                effects.append(EndItemAudio(item_id))
        if response.get("status") == "failed":
            details = (response.get("status_details") or {}).get("error") or {}
            effects.append(SendCaller(caller.error(
                "upstream_error", details.get("message") or "response failed")))
        effects.extend(self._maybe_finish_tool_round(rid))
        if self._create_after_active and self.active_response_id is None:
            self._create_after_active = False
            effects.append(SendUpstream({"type": "response.create"}))
        effects.extend(self._maybe_listening())
        return effects

    def _on_error(self, event: dict[str, Any]) -> list[Effect]:
        error = event.get("error") or {}
        if error.get("code") in BENIGN_ERROR_CODES:
            return []
        return [SendCaller(caller.error(
            "upstream_error", str(error.get("message") or error.get("code") or "error")))]

    # ------------------------------------------------------------ caller

    def on_text(self, text: str) -> list[Effect]:
        """The caller typed: interrupt, add their words, ask for a reply."""
        effects = self._on_text(text)
        self._retire()
        return effects

    def _on_text(self, text: str) -> list[Effect]:
        effects = self._interrupt()
        if self._configured:
            effects.append(SendUpstream(text_item(self.dialect, "user", text)))
            effects.extend(self._create_response())
        else:  # nothing to send it to yet: it goes out on session.updated
            self._held_texts.append(text)
        # History records the text when the service echoes the item back.
        effects.append(SendCaller(caller.transcript_done("user", "", text)))
        effects.extend(self._set_state(CallState.THINKING))
        return effects

    def on_interrupt(self) -> list[Effect]:
        effects = self._interrupt()
        effects.extend(self._maybe_listening())
        self._retire()
        return effects

    @property
    def quiet(self) -> bool:
        """Nobody is talking and nothing is on its way: the agent listens, no reply is
        being made, no tool runs, no reply audio waits to play."""
        return (self.state == CallState.LISTENING and self.active_response_id is None
                and not self._create_after_active and not self._tool_calls
                and not any(i.has_audio and not i.played_out and not i.finalized
                            for i in self._items.values()))

    def say(self, text: str) -> list[Effect]:
        """Have the agent say `text` (an idle prompt, a goodbye, a tool acknowledgement)
        as a reply of its own, part of the conversation. Only when nothing else is being
        said or made (`quiet`, or between a tool call and its result): [] otherwise."""
        if not self._configured or self.active_response_id is not None \
                or self._create_after_active or self.state == CallState.USER_SPEAKING:
            return []
        return [SendUpstream({"type": "response.create",
                              "response": {"instructions": say_exactly(text)}})]

    def on_path_lost(self, unheard_ms: float) -> list[Effect]:
        """The caller's media path died (a phone changing networks); the call waits
        for a resume. What was playing is cut where the caller last heard it, as a
        barge-in would cut it (the reply is cancelled, its transcript marked
        interrupted); a turn the caller was still speaking is dropped, since its end
        will never come. A reply started later (a tool round finishing) is not cut:
        its audio waits in the playout for the new path."""
        effects: list[Effect] = []
        audio_pending = any(
            i.has_audio and not i.played_out and not i.finalized for i in self._items.values())
        if self.active_response_id is not None:
            self._discarded_responses.add(self.active_response_id)
            effects.append(SendUpstream({"type": "response.cancel"}))
        if self.active_response_id is not None or audio_pending:
            effects.append(FlushPlayout(unheard_ms=max(0.0, unheard_ms)))
        if self.state == CallState.USER_SPEAKING:
            effects.append(SendUpstream({"type": "input_audio_buffer.clear"}))
            self.state = CallState.LISTENING  # nobody to tell: the resume sends the state
        self._retire()
        return effects

    def on_playout_delay(self, delay_ms: float) -> None:
        self.playout_delay_ms = max(0.0, float(delay_ms))

    # ------------------------------------------------------------ playout

    @property
    def captions_held(self) -> bool:
        """Some transcript waits for its audio: the call reports playout progress."""
        return bool(self._captions_held)

    def on_playout_progress(self, item_id: str | None, sent_ms: float) -> list[Effect]:
        """The playout has sent `sent_ms` of `item_id`: release the text heard by now."""
        item = self._items.get(item_id) if item_id else None
        if item is None or item.finalized or item.played_out:
            return []
        item.sent_ms = sent_ms
        return self._release_captions(item)

    def on_item_started(self, item_id: str) -> list[Effect]:
        item = self._items.get(item_id)
        if item is None:
            return []
        return self._set_state(CallState.SPEAKING)

    def on_item_finished(self, item_id: str, sent_ms: float) -> list[Effect]:
        """The playout sent the last frame of this item's audio."""
        item = self._items.get(item_id)
        if item is None:
            return []
        item.played_out = True
        item.sent_ms = sent_ms
        effects = self._release_captions(item)
        if item.transcript_done:
            effects.extend(self._finalize(item))
        effects.extend(self._maybe_listening())
        self._retire()
        return effects

    def on_playout_flushed(self, item_id: str | None, sent_ms: float) -> list[Effect]:
        """The playout dropped its queue; `item_id` was on air with `sent_ms` sent.

        Truncate that item at what the caller heard: what was sent minus what
        still sat in the caller's jitter and output buffers, clamped to what was
        received. Nothing heard, nothing to truncate.
        """
        effects: list[Effect] = []
        item = self._items.get(item_id) if item_id else None
        if item is not None and not item.played_out:
            item.sent_ms = sent_ms
            heard = min(sent_ms - self.playout_delay_ms, item.received_ms)
            if heard > 0:
                effects.append(SendUpstream({
                    "type": "conversation.item.truncate", "item_id": item.item_id,
                    "content_index": 0, "audio_end_ms": int(heard)}))
            item.interrupted = True
            effects.extend(self._finalize(item))
        # Everything queued behind it was never heard.
        for other in self._items.values():
            if other.has_audio and not other.played_out and not other.finalized:
                other.interrupted = True
                effects.extend(self._finalize(other))
        self._retire()
        return effects

    # ------------------------------------------------------------ tools

    def on_tool_result(self, call_id: str, ok: bool, output: str, duration_ms: int,
                       moved_on: bool = False) -> list[Effect]:
        """A tool finished. `moved_on`: the caller's barge-in cancelled it; its round
        then ends without a reply of its own (the caller's new turn has one)."""
        call = self._tool_calls.get(call_id)
        if call is None:
            return []
        call.output = output
        call.moved_on = moved_on
        effects: list[Effect] = [
            SendCaller(caller.tool_finished(call_id, call.name, ok, duration_ms))]
        effects.extend(self._maybe_finish_tool_round(call.response_id))
        self._retire()
        return effects

    def _maybe_finish_tool_round(self, response_id: str) -> list[Effect]:
        """After response.done and every tool of it finished: outputs, then one create.

        An output the caller moved on from (its tool cancelled by a barge-in) goes
        right after its call, not after the caller's new message: else the reply to
        that message would answer it. A tool that ran on is answered even when the
        caller interrupted the response that called it: its output goes last, and a
        reply to it follows the caller's own."""
        if response_id not in self._response_done:
            return []
        calls = [c for c in self._tool_calls.values() if c.response_id == response_id]
        if not calls or any(c.output is None for c in calls):
            return []
        effects: list[Effect] = []
        for c in calls:
            create: dict[str, Any] = {"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": c.call_id, "output": c.output}}
            if c.moved_on and c.item_id:
                create["previous_item_id"] = c.item_id
            effects.append(SendUpstream(create))
            del self._tool_calls[c.call_id]
        if all(c.moved_on for c in calls):
            return effects  # the caller moved on; their new turn will see the outputs
        if self.active_response_id is None:
            effects.append(SendUpstream({"type": "response.create"}))
        else:
            self._create_after_active = True
        return effects

    # ------------------------------------------------------------ internals

    def _interrupt(self) -> list[Effect]:
        """Stop what the agent is saying or about to say."""
        audio_pending = any(
            i.has_audio and not i.played_out and not i.finalized for i in self._items.values()
        )
        if self.active_response_id is None and not audio_pending:
            return []
        effects: list[Effect] = []
        if self.active_response_id is not None:
            self._discarded_responses.add(self.active_response_id)
            effects.append(SendUpstream({"type": "response.cancel"}))
        effects.append(FlushPlayout())
        return effects

    def _finalize(self, item: AssistantItem) -> list[Effect]:
        """The item's final transcript. Of an interrupted spoken reply, the text is what
        was generated up to the cut, and `heard_text` the part whose audio was heard
        (what the service keeps after the truncate, and what a reconnect replays)."""
        if item.finalized:
            return []
        item.finalized = True
        self._captions_held.discard(item.item_id)
        full = item.full_text
        text = (full if full is not None and not item.interrupted else "".join(item.text)).strip()
        if not item.has_audio:
            self._remember(item.item_id, "assistant", text)
            return [SendCaller(caller.transcript_done(
                "assistant", item.item_id, text, interrupted=item.interrupted))]
        heard = max(0.0, min(item.sent_ms - self.playout_delay_ms, item.received_ms))
        heard_text: str | None = None
        if item.interrupted:
            heard_text = "".join(
                d for d, at in zip(item.text, item.anchors, strict=True) if at < heard).strip()
            if not text.startswith(heard_text):  # a reply's text is its deltas; be sure
                heard_text = ""
        self._remember(item.item_id, "assistant", text if heard_text is None else heard_text)
        item.text, item.anchors = [], []  # the item is final: its deltas are done with
        return [SendCaller(caller.transcript_done(
            "assistant", item.item_id, text, interrupted=item.interrupted,
            heard_ms=int(heard), audio_ms=int(item.received_ms), heard_text=heard_text))]

    def _remember(self, item_id: str, role: str, text: str) -> None:
        entry = self._history.get(item_id)
        if entry is None:
            self._history[item_id] = HistoryEntry(role, text)
            if len(self._history) > MAX_REPLAY_ENTRIES:
                del self._history[next(iter(self._history))]
        elif text:
            entry.text = text

    def _retire(self) -> None:
        """Forget responses that are done, whose items are final and tools answered.

        Runs after each entry point (never inside a loop over the items), so what
        the session holds, and the per-event scans over it, stay bounded.
        """
        for rid in list(self._response_done):
            item_ids = self._response_items.get(rid, [])
            if any(not self._items[i].finalized for i in item_ids):
                continue
            if any(c.response_id == rid for c in self._tool_calls.values()):
                continue
            for item_id in item_ids:
                del self._items[item_id]
            self._response_items.pop(rid, None)
            self._response_done.discard(rid)
            self._retired_responses.add(rid)

    def _maybe_listening(self) -> list[Effect]:
        busy = (
            self.active_response_id is not None
            or self._create_after_active
            or bool(self._tool_calls)
            or any(i.has_audio and not i.played_out and not i.finalized
                   for i in self._items.values())
        )
        if busy or self.state == CallState.USER_SPEAKING:
            return []
        return self._set_state(CallState.LISTENING)

    def _set_state(self, state: CallState) -> list[Effect]:
        if state == self.state:
            return []
        self.state = state
        return [SendCaller(caller.state_changed(state))]


_UPSTREAM_HANDLERS = {
    "session.updated": RealtimeSession._on_session_updated,
    "input_audio_buffer.speech_started": RealtimeSession._on_speech_started,
    "input_audio_buffer.speech_stopped": RealtimeSession._on_speech_stopped,
    "conversation.item.added": RealtimeSession._on_user_item,
    "conversation.item.input_audio_transcription.delta": RealtimeSession._on_transcription_delta,
    "conversation.item.input_audio_transcription.completed":
        RealtimeSession._on_transcription_completed,
    "conversation.item.input_audio_transcription.failed": RealtimeSession._on_transcription_failed,
    "response.created": RealtimeSession._on_response_created,
    "response.output_item.added": RealtimeSession._on_output_item_added,
    "response.output_audio.delta": RealtimeSession._on_audio_delta,
    "response.output_audio.done": RealtimeSession._on_audio_done,
    "response.output_audio_transcript.delta": RealtimeSession._on_text_delta,
    "response.output_audio_transcript.done": RealtimeSession._on_text_done,
    "response.output_text.delta": RealtimeSession._on_text_delta,
    "response.output_text.done": RealtimeSession._on_text_done,
    "response.function_call_arguments.done": RealtimeSession._on_function_arguments_done,
    "response.done": RealtimeSession._on_response_done,
    "error": RealtimeSession._on_error,
}
