"""Server-side Realtime conversation state, without sockets or asyncio.

`Conversation.handle(client_event) -> [server_event, ...]` is the whole protocol for
client events. Work that takes time (speech recognition, generating a response) is
requested through `take_actions()` and fed back by the I/O layer through the
`transcription_done` / `response_*` methods, which again return server events. The
I/O layer (session.py) owns threads and sockets; everything here is deterministic.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtc_agent.offline.audio import b64encode, chunks, duration_ms
from rtc_agent.offline.dialect import (
    GA,
    SEMANTIC_SILENCE_MS,
    Dialect,
    ProtocolError,
    default_session,
    invalid_type,
    invalid_value,
    missing,
    unknown,
)
from rtc_agent.offline.vad import SpeechDetector
from rtc_agent.protocol import BYTES_PER_MS

CLIENT_EVENTS: dict[str, set[str]] = {
    # type -> allowed fields besides type and event_id
    "session.update": {"session"},
    "input_audio_buffer.append": {"audio"},
    "input_audio_buffer.commit": set(),
    "input_audio_buffer.clear": set(),
    "conversation.item.create": {"item", "previous_item_id"},
    "conversation.item.truncate": {"item_id", "content_index", "audio_end_ms"},
    "conversation.item.delete": {"item_id"},
    "conversation.item.retrieve": {"item_id"},
    "response.create": {"response"},
    "response.cancel": {"response_id"},
}
MIN_COMMIT_MS = 100
MIN_SPEECH_WINDOWS = 2  # consecutive voiced windows before speech_started (ignores clicks)
RECOGNITION_TAIL_MS = 96  # silence kept after the last voiced window for the recogniser


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(15).replace('-', 'x').replace('_', 'y')}"


@dataclass
class StartResponse:
    """Action: generate the content of a response (see session.ResponseDriver)."""

    response_id: str


@dataclass
class CancelResponse:
    """Action: stop generating a response that was cancelled or interrupted."""

    response_id: str


@dataclass
class Recognize:
    """Action: recognise a user audio item (always, so the responder can understand it).

    With server VAD the recogniser gets the speech plus RECOGNITION_TAIL_MS of the
    silence after it. That audio is complete long before silence_duration_ms ends the
    turn, so a `speculative` Recognize with the same `key` is issued early; when the turn
    is committed with that key, the I/O layer reuses the running result instead of
    starting late (this takes recognition off the speech_stopped -> reply path).
    """

    item_id: str
    audio: bytes
    emit_events: bool  # input transcription was on when the item was committed
    key: tuple[int, int] | None = None  # (speech start ms, last voiced ms) for VAD turns
    speculative: bool = False


@dataclass
class Item:
    """A conversation item: its GA-shaped JSON plus what the server keeps beside it."""

    data: dict
    audio: bytearray | None = None  # pcm16 24 kHz of the input_audio / output_audio part
    heard: str | None = None  # what the recogniser understood (user audio)

    @property
    def id(self) -> str:
        return self.data["id"]


@dataclass
class Turn:
    """One conversation entry as the responder sees it."""

    role: str  # user | assistant | system | tool
    kind: str  # message | function_call | function_call_output
    text: str = ""
    name: str = ""
    call_id: str = ""
    arguments: str = ""


@dataclass
class ResponderInput:
    instructions: str
    tools: list[dict]
    tool_choice: str | dict
    modalities: list[str]
    turns: list[Turn]


@dataclass
class Response:
    id: str
    opts: dict
    in_conversation: bool
    context: list[Item]
    status: str = "in_progress"
    status_details: dict | None = None
    output: list[Item] = field(default_factory=list)
    message: Item | None = None  # the assistant message being streamed
    text: str = ""  # text or transcript of the open message
    audio_ms: int = 0
    output_text_chars: int = 0
    output_audio_ms: int = 0


class Conversation:
    """One Realtime session's state: session config, input buffer and VAD, items, responses."""

    def __init__(
        self,
        dialect: Dialect = GA,
        model: str = "gpt-realtime",
        detector: SpeechDetector | None = None,
        max_buffer_ms: int = 60_000,
        clock: Callable[[], float] = time.time,
        max_stored_audio_ms: int = 10 * 60_000,
        max_session_s: float | None = None,
    ) -> None:
        self.dialect = dialect
        self.session = default_session(model)
        self.session_id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.max_session_s = max_session_s or dialect.max_session_s
        self.expires_at = int(clock() + self.max_session_s)
        self.detector = detector
        self.max_buffer_ms = max_buffer_ms
        # Items keep their audio for retrieve/truncate; past this total the oldest items'
        # audio is forgotten, so an hour-long session does not hold an hour of pcm.
        self.max_stored_audio_ms = max_stored_audio_ms
        self.items: list[Item] = []
        self.responses: dict[str, Response] = {}
        self.active_response_id: str | None = None
        self._actions: list[Any] = []
        # Input audio: buffer[0] sits at buffer_start_ms on the session-cumulative timeline.
        self.buffer = bytearray()
        self.buffer_start_ms = 0
        self.audio_ms_total = 0
        self._odd_byte = b""
        self._reset_vad()

    # --- plumbing -------------------------------------------------------------------

    def _event(self, type_: str, **fields: Any) -> dict:
        return {"type": type_, "event_id": new_id("event"), **fields}

    def _stamp(self, events: list[dict]) -> list[dict]:
        for e in events:
            e.setdefault("event_id", new_id("event"))
        return events

    def error_event(self, err: ProtocolError, client_event_id: Any = None) -> dict:
        return self._event("error", error={
            "type": err.type, "code": err.code, "message": err.message, "param": err.param,
            "event_id": client_event_id if isinstance(client_event_id, str) else None,
        })

    def take_actions(self) -> list[Any]:
        actions, self._actions = self._actions, []
        return actions

    def created_events(self) -> list[dict]:
        """What the server sends first on a new connection."""
        return [self._event("session.created", session=self._session_out())]

    def _session_out(self) -> dict:
        return self.dialect.session_out(self.session, self.session_id, self.expires_at)

    @property
    def turn_detection(self) -> dict | None:
        return self.session["audio"]["input"]["turn_detection"]

    @property
    def transcription_on(self) -> bool:
        return self.session["audio"]["input"]["transcription"] is not None

    def find(self, item_id: Any) -> Item | None:
        for item in self.items:
            if item.id == item_id:
                return item
        return None

    def _last_item_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    # --- client events --------------------------------------------------------------

    def handle(self, event: Any) -> list[dict]:
        """Apply one client event (already JSON-decoded); return the server events."""
        client_event_id = event.get("event_id") if isinstance(event, dict) else None
        try:
            if not isinstance(event, dict):
                raise ProtocolError("invalid_event", "Expected a JSON object as the event.")
            kind = event.get("type")
            if kind is None:
                raise ProtocolError("invalid_event", "The 'type' field is missing.")
            if kind not in CLIENT_EVENTS:
                supported = ", ".join(f"'{t}'" for t in CLIENT_EVENTS)
                raise invalid_value(
                    "type", f"Invalid value: '{kind}'. Supported values are: {supported}."
                )
            for key in event:
                if key not in CLIENT_EVENTS[kind] | {"type", "event_id"}:
                    raise unknown(key)
            handler = getattr(self, "_on_" + kind.replace(".", "_"))
            return self._stamp(handler(event))
        except ProtocolError as err:
            return [self.error_event(err, client_event_id)]

    def _on_session_update(self, event: dict) -> list[dict]:
        if "session" not in event:
            raise missing("session")
        old_td = self.turn_detection
        self.session = self.dialect.apply_session_update(self.session, event["session"])
        if self.turn_detection != old_td:
            self._reset_vad()
        return [self._event("session.updated", session=self._session_out())]

    # input audio ---------------------------------------------------------------------

    def decode_append(self, event: dict) -> bytes:
        """The pcm bytes of an append event (validated), so I/O can run VAD off-loop."""
        if "audio" not in event:
            raise missing("audio")
        if not isinstance(event["audio"], str):
            raise invalid_type("audio", "a base64 string")
        try:
            pcm = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise invalid_value("audio", "Invalid 'audio': expected base64-encoded audio.") \
                from exc
        # Keep whole samples even if a client splits a sample across two appends.
        pcm = self._odd_byte + pcm
        cut = len(pcm) - len(pcm) % 2
        self._odd_byte = pcm[cut:]
        return pcm[:cut]

    def _on_input_audio_buffer_append(self, event: dict) -> list[dict]:
        pcm = self.decode_append(event)
        probs = None
        if self.turn_detection is not None and self.detector is not None:
            probs = self.detector.probabilities(pcm)
        return self.feed_audio(pcm, probs)

    def feed_audio(self, pcm: bytes, probs: list[float] | None) -> list[dict]:
        """Append decoded audio; probs are the detector's scores for it (None: no VAD)."""
        self.buffer.extend(pcm)
        self.audio_ms_total = self.buffer_start_ms + len(self.buffer) // BYTES_PER_MS
        events: list[dict] = []
        td = self.turn_detection
        if td is not None and probs:
            for p in probs:
                self._vad_windows += 1
                t = self._vad_origin_ms + self._vad_windows * self._window_ms
                events += self._vad_step(p, t, td)
        self._limit_buffer()
        return self._stamp(events)

    def _reset_vad(self) -> None:
        self._window_ms = self.detector.window_ms if self.detector is not None else 32
        if self.detector is not None:
            self.detector.reset()
        self._vad_origin_ms = self.buffer_start_ms + len(self.buffer) // BYTES_PER_MS
        self._vad_windows = 0
        self._speaking = False
        self._voiced_run = 0
        self._speech_start_ms = 0
        self._last_voice_ms = 0
        self._pending_item_id: str | None = None
        self._speculated: tuple[int, int] | None = None

    def _vad_step(self, prob: float, t: int, td: dict) -> list[dict]:
        threshold = td.get("threshold", 0.5)
        voiced = prob >= threshold
        events: list[dict] = []
        if not self._speaking:
            self._voiced_run = self._voiced_run + 1 if voiced else 0
            if self._voiced_run >= MIN_SPEECH_WINDOWS:
                first_voiced = t - self._voiced_run * self._window_ms
                start = max(self.buffer_start_ms, first_voiced - td.get("prefix_padding_ms", 300))
                self._speaking, self._speech_start_ms, self._last_voice_ms = True, start, t
                self._pending_item_id = new_id("item")
                events.append(self._event(
                    "input_audio_buffer.speech_started", audio_start_ms=start,
                    item_id=self._pending_item_id,
                ))
                if td.get("interrupt_response", True) and self.active_response_id:
                    events += self._cancel(self.active_response_id, "turn_detected")
            else:
                # Idle: keep only what prefix padding may still need.
                keep_ms = td.get("prefix_padding_ms", 300) + self._window_ms * 4
                self._drop_before(t - keep_ms)
            return events
        if voiced:
            self._last_voice_ms = t
            return events
        silence = td.get("silence_duration_ms")
        if silence is None:
            silence = SEMANTIC_SILENCE_MS.get(td.get("eagerness", "auto"), 500)
        quiet_ms = t - self._last_voice_ms
        key = (self._speech_start_ms, self._last_voice_ms)
        if RECOGNITION_TAIL_MS <= quiet_ms < silence and self._speculated != key:
            self._speculated = key
            self._actions.append(Recognize(
                self._pending_item_id or "", self._slice(key[0], key[1] + RECOGNITION_TAIL_MS),
                self.transcription_on, key, speculative=True))
        if quiet_ms < silence:
            return events
        item_id = self._pending_item_id or new_id("item")
        self._speaking, self._voiced_run, self._pending_item_id = False, 0, None
        events.append(self._event("input_audio_buffer.speech_stopped", audio_end_ms=t,
                                  item_id=item_id))
        audio = self._slice(self._speech_start_ms, t)
        asr_audio = self._slice(key[0], min(t, key[1] + RECOGNITION_TAIL_MS))
        self._drop_before(t)
        events += self._commit_audio(audio, item_id, asr_audio, key)
        if td.get("create_response", True) and self.active_response_id is None:
            events += self._start_response(self.dialect.parse_response_options(None, self.session))
        return events

    def _slice(self, start_ms: int, end_ms: int) -> bytes:
        """Buffered audio between two points of the session timeline."""
        lo = max(0, (start_ms - self.buffer_start_ms) * BYTES_PER_MS)
        hi = max(lo, (end_ms - self.buffer_start_ms) * BYTES_PER_MS)
        return bytes(self.buffer[lo:hi])

    def _bound_stored_audio(self) -> None:
        total = sum(len(i.audio) for i in self.items if i.audio is not None)
        limit = self.max_stored_audio_ms * BYTES_PER_MS
        for item in self.items:
            if total <= limit:
                break
            if item.audio is not None and item.heard is not None \
                    and self._response_of(item) is None:
                total -= len(item.audio)
                item.audio = None

    def _drop_before(self, ms: int) -> None:
        """Forget buffered audio before ms on the session timeline."""
        if ms <= self.buffer_start_ms:
            return
        whole = len(self.buffer) - len(self.buffer) % BYTES_PER_MS  # keep the ms timeline exact
        n = min(whole, (ms - self.buffer_start_ms) * BYTES_PER_MS)
        del self.buffer[:n]
        self.buffer_start_ms += n // BYTES_PER_MS

    def _limit_buffer(self) -> None:
        excess_ms = len(self.buffer) // BYTES_PER_MS - self.max_buffer_ms
        if excess_ms > 0:
            self._drop_before(self.buffer_start_ms + excess_ms)
            self._speech_start_ms = max(self._speech_start_ms, self.buffer_start_ms)

    def _commit_audio(self, audio: bytes, item_id: str, asr_audio: bytes | None = None,
                      key: tuple[int, int] | None = None) -> list[dict]:
        previous = self._last_item_id()
        item = Item(
            data={"id": item_id, "type": "message", "object": "realtime.item",
                  "status": "completed", "role": "user",
                  "content": [{"type": "input_audio", "transcript": None}]},
            audio=bytearray(audio),
        )
        self.items.append(item)
        self._actions.append(Recognize(item_id, audio if asr_audio is None else asr_audio,
                                       self.transcription_on, key))
        self._bound_stored_audio()
        return [self._event("input_audio_buffer.committed", item_id=item_id,
                            previous_item_id=previous),
                *self.dialect.item_created_events(item.data, previous)]

    def _on_input_audio_buffer_commit(self, event: dict) -> list[dict]:
        have_ms = len(self.buffer) / BYTES_PER_MS
        if have_ms < MIN_COMMIT_MS:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {have_ms:.2f}ms of audio.",
            )
        audio = bytes(self.buffer)
        item_id = self._pending_item_id or new_id("item")
        self.buffer.clear()
        self.buffer_start_ms = self.audio_ms_total
        self._reset_vad()
        return self._commit_audio(audio, item_id)

    def _on_input_audio_buffer_clear(self, event: dict) -> list[dict]:
        self.buffer.clear()
        self.buffer_start_ms = self.audio_ms_total
        self._reset_vad()
        return [self._event("input_audio_buffer.cleared")]

    # items ---------------------------------------------------------------------------

    def _on_conversation_item_create(self, event: dict) -> list[dict]:
        if "item" not in event:
            raise missing("item")
        item = self._validate_item(event["item"])
        prev = event.get("previous_item_id")
        if prev is None:
            index = len(self.items)
        elif prev == "root":
            index = 0
        else:
            found = self.find(prev)
            if found is None:
                raise invalid_value(
                    "previous_item_id",
                    f"Error adding item: the previous item with id '{prev}' does not exist.",
                )
            index = self.items.index(found) + 1
        self.items.insert(index, item)
        previous = self.items[index - 1].id if index > 0 else None
        if item.audio is not None and item.data["role"] == "user" and item.heard is None:
            self._actions.append(Recognize(item.id, bytes(item.audio), False))
        return self.dialect.item_created_events(item.data, previous)

    def _validate_item(self, raw: Any) -> Item:
        if not isinstance(raw, dict):
            raise invalid_type("item", "an object")
        kind = raw.get("type")
        if kind is None:
            raise missing("item.type")
        common = {"id", "type", "object", "status"}
        item_id = raw.get("id") or new_id("item")
        if not isinstance(item_id, str):
            raise invalid_type("item.id", "a string")
        if kind == "function_call_output":
            for key in raw:
                if key not in common | {"call_id", "output"}:
                    raise unknown(f"item.{key}")
            for key in ("call_id", "output"):
                if key not in raw:
                    raise missing(f"item.{key}")
                if not isinstance(raw[key], str):
                    raise invalid_type(f"item.{key}", "a string")
            return Item({"id": item_id, "type": kind, "object": "realtime.item",
                         "status": "completed", "call_id": raw["call_id"],
                         "output": raw["output"]})
        if kind == "function_call":
            for key in raw:
                if key not in common | {"call_id", "name", "arguments"}:
                    raise unknown(f"item.{key}")
            for key in ("name", "arguments"):
                if not isinstance(raw.get(key), str):
                    raise missing(f"item.{key}")
            return Item({"id": item_id, "type": kind, "object": "realtime.item",
                         "status": "completed", "call_id": raw.get("call_id") or new_id("call"),
                         "name": raw["name"], "arguments": raw["arguments"]})
        if kind != "message":
            raise invalid_value("item.type", f"Invalid value: '{kind}'. Supported values are: "
                                "'message', 'function_call' and 'function_call_output'.")
        for key in raw:
            if key not in common | {"role", "content"}:
                raise unknown(f"item.{key}")
        role = raw.get("role")
        if role is None:
            raise missing("item.role")
        if role not in ("user", "assistant", "system"):
            raise invalid_value("item.role", "Supported values are: 'user', 'assistant' and "
                                "'system'.")
        content = raw.get("content")
        if content is None:
            raise missing("item.content")
        if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
            raise invalid_type("item.content", "an array of objects")
        allowed = {
            "user": {"input_text", "input_audio", "input_image"},
            "system": {"input_text"},
            "assistant": {"text", "output_text", "audio", "output_audio"},
        }[role]
        parts: list[dict] = []
        audio: bytearray | None = None
        heard_parts: list[str] = []
        for i, part in enumerate(content):
            ptype = part.get("type")
            if ptype not in allowed:
                raise invalid_value(
                    f"item.content[{i}].type",
                    f"Invalid value: '{ptype}'. Supported values are: "
                    + ", ".join(f"'{a}'" for a in sorted(allowed)) + ".",
                )
            if ptype in ("audio", "output_audio"):
                raise invalid_value(f"item.content[{i}].type",
                                    "Assistant audio items cannot be created by the client.")
            if ptype in ("input_text", "text", "output_text"):
                if not isinstance(part.get("text"), str):
                    raise missing(f"item.content[{i}].text")
                heard_parts.append(part["text"])
                parts.append({"type": "output_text" if role == "assistant" else "input_text",
                              "text": part["text"]})
            elif ptype == "input_audio":
                try:
                    pcm = base64.b64decode(part.get("audio") or "", validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise invalid_value(f"item.content[{i}].audio",
                                        "Invalid audio: expected base64.") from exc
                audio = bytearray(pcm[: len(pcm) - len(pcm) % 2])
                transcript = part.get("transcript")
                if isinstance(transcript, str):
                    heard_parts.append(transcript)
                parts.append({"type": "input_audio", "transcript": transcript})
            else:
                parts.append({k: v for k, v in part.items()})
        data = {"id": item_id, "type": "message", "object": "realtime.item",
                "status": "completed", "role": role, "content": parts}
        heard = " ".join(heard_parts) if heard_parts or audio is None else None
        return Item(data, audio=audio, heard=heard)

    def _on_conversation_item_truncate(self, event: dict) -> list[dict]:
        for key in ("item_id", "content_index", "audio_end_ms"):
            if key not in event:
                raise missing(key)
        item = self.find(event["item_id"])
        if item is None or item.data.get("role") != "assistant":
            raise ProtocolError(
                "item_truncate_invalid_item_id",
                f"Item with item_id not found: {event['item_id']}" if item is None
                else f"Only assistant messages can be truncated: {event['item_id']}",
                "item_id",
            )
        index, end_ms = event["content_index"], event["audio_end_ms"]
        if isinstance(index, bool) or not isinstance(index, int):
            raise invalid_type("content_index", "an integer")
        content = item.data.get("content", [])
        if not 0 <= index < len(content) or content[index].get("type") != "output_audio":
            raise invalid_value("content_index", f"Content index {index} of item "
                                f"{item.id} is not an audio part.")
        if isinstance(end_ms, bool) or not isinstance(end_ms, int) or end_ms < 0:
            raise invalid_value("audio_end_ms", "Invalid 'audio_end_ms': expected an integer "
                                ">= 0.")
        events: list[dict] = []
        owner = self._response_of(item)
        if owner is not None:  # still streaming: the user stopped listening, so stop talking
            events += self._cancel(owner.id, "client_cancelled")
        # Clamp to the audio the server produced: a client's played-ms count may round up.
        audio = item.audio or bytearray()
        end_ms = min(end_ms, duration_ms(audio))
        del audio[end_ms * BYTES_PER_MS :]
        content[index]["transcript"] = ""  # the model must not "remember" unheard words
        events.append(self._event("conversation.item.truncated", item_id=item.id,
                                  content_index=index, audio_end_ms=end_ms))
        return events

    def _on_conversation_item_delete(self, event: dict) -> list[dict]:
        if "item_id" not in event:
            raise missing("item_id")
        item = self.find(event["item_id"])
        if item is None:
            raise ProtocolError(
                "item_delete_invalid_item_id",
                f"Error deleting item: the item with id '{event['item_id']}' does not exist.",
            )
        self.items.remove(item)
        return [self._event("conversation.item.deleted", item_id=item.id)]

    def _on_conversation_item_retrieve(self, event: dict) -> list[dict]:
        if "item_id" not in event:
            raise missing("item_id")
        item = self.find(event["item_id"])
        if item is None:
            raise ProtocolError(
                "item_retrieve_invalid_item_id",
                f"Error retrieving item: the item with id '{event['item_id']}' does not exist.",
            )
        audio = b64encode(bytes(item.audio)) if item.audio is not None else None
        return [self._event("conversation.item.retrieved",
                            item=self.dialect.item_out(item.data, with_audio=audio))]

    # responses -----------------------------------------------------------------------

    def _on_response_create(self, event: dict) -> list[dict]:
        opts = self.dialect.parse_response_options(event.get("response"), self.session)
        if opts["conversation"] != "none" and self.active_response_id is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self.active_response_id}. Wait until the response is finished before "
                "creating a new one.",
            )
        return self._start_response(opts)

    def _on_response_cancel(self, event: dict) -> list[dict]:
        rid = event.get("response_id") or self.active_response_id
        resp = self.responses.get(rid) if rid else None
        if resp is None or resp.status != "in_progress":
            raise ProtocolError("response_cancel_not_active",
                                "Cancellation failed: no active response found")
        return self._cancel(resp.id, "client_cancelled")

    def _resolve_input(self, raw: list) -> list[Item]:
        items: list[Item] = []
        for i, entry in enumerate(raw):
            if isinstance(entry, dict) and entry.get("type") == "item_reference":
                found = self.find(entry.get("id"))
                if found is None:
                    raise invalid_value(f"response.input[{i}].id",
                                        f"Item '{entry.get('id')}' does not exist.")
                items.append(found)
            else:
                items.append(self._validate_item(entry))
        return items

    def _start_response(self, opts: dict) -> list[dict]:
        in_conv = opts["conversation"] != "none"
        context = self._resolve_input(opts["input"]) if opts["input"] is not None \
            else list(self.items)
        resp = Response(id=new_id("resp"), opts=opts, in_conversation=in_conv, context=context)
        self.responses[resp.id] = resp
        if in_conv:
            self.active_response_id = resp.id
        self._actions.append(StartResponse(resp.id))
        return [self._event("response.created", response=self._response_out(resp))]

    def _response_out(self, resp: Response) -> dict:
        usage = None
        if resp.status != "in_progress":
            usage = self._usage(resp)
        return self.dialect.response_out({
            "id": resp.id, "status": resp.status, "status_details": resp.status_details,
            "output": [i.data for i in resp.output],
            "conversation_id": self.conversation_id if resp.in_conversation else None,
            "max_output_tokens": resp.opts["max_output_tokens"], "usage": usage,
            "metadata": resp.opts["metadata"], "modalities": resp.opts["modalities"],
            "voice": resp.opts["voice"], "temperature": resp.opts["temperature"],
        })

    @staticmethod
    def _usage(resp: Response) -> dict:
        """Token-like counts: ~4 characters per text token, ~10 audio tokens per second."""
        in_text = sum(len(json.dumps(i.data)) for i in resp.context) // 4
        in_audio = sum(duration_ms(i.audio or b"") for i in resp.context) // 100
        out_text = resp.output_text_chars // 4
        out_audio = resp.output_audio_ms // 100
        return {
            "total_tokens": in_text + in_audio + out_text + out_audio,
            "input_tokens": in_text + in_audio,
            "output_tokens": out_text + out_audio,
            "input_token_details": {
                "text_tokens": in_text, "audio_tokens": in_audio, "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0,
                                          "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }

    def _response_of(self, item: Item) -> Response | None:
        for resp in self.responses.values():
            if resp.status == "in_progress" and resp.message is item:
                return resp
        return None

    def is_active(self, response_id: str) -> bool:
        resp = self.responses.get(response_id)
        return resp is not None and resp.status == "in_progress"

    def responder_input(self, response_id: str) -> ResponderInput:
        """What the responder needs, read at generation time (recognition may be late)."""
        resp = self.responses[response_id]
        turns: list[Turn] = []
        for item in resp.context:
            d = item.data
            if d["type"] == "function_call":
                turns.append(Turn("assistant", "function_call", name=d["name"],
                                  call_id=d["call_id"], arguments=d["arguments"]))
            elif d["type"] == "function_call_output":
                turns.append(Turn("tool", "function_call_output", text=d["output"],
                                  call_id=d["call_id"]))
            elif d["role"] == "assistant":
                text = " ".join(p.get("text") or p.get("transcript") or "" for p in d["content"])
                turns.append(Turn("assistant", "message", text=text))
            else:
                turns.append(Turn(d["role"], "message", text=item.heard or ""))
        tool_choice = resp.opts["tool_choice"]
        tools = [] if tool_choice == "none" else resp.opts["tools"]
        return ResponderInput(resp.opts["instructions"], tools, tool_choice,
                              resp.opts["modalities"], turns)

    def pending_recognition(self, response_id: str) -> list[str]:
        """Ids of user audio items in the response's context not yet recognised."""
        resp = self.responses[response_id]
        return [i.id for i in resp.context if i.audio is not None and i.heard is None
                and i.data.get("role") == "user"]

    # --- feedback from the I/O layer --------------------------------------------------

    def transcription_done(self, item_id: str, text: str | None, emit: bool,
                           error: str | None = None) -> list[dict]:
        """Recognition of a user audio item finished (text None on failure)."""
        item = self.find(item_id)
        if item is not None:
            item.heard = text or ""
        if not emit:
            return []
        if text is None:
            return [self._event(
                "conversation.item.input_audio_transcription.failed", item_id=item_id,
                content_index=0, error={"type": "transcription_error",
                                        "code": "audio_unintelligible",
                                        "message": error or "The audio could not be transcribed.",
                                        "param": None},
            )]
        if item is not None:
            item.data["content"][0]["transcript"] = text
        seconds = duration_ms(item.audio or b"") / 1000 if item is not None else 0.0
        events = []
        if text:
            events.append(self._event("conversation.item.input_audio_transcription.delta",
                                      item_id=item_id, content_index=0, delta=text))
        events.append(self._event(
            "conversation.item.input_audio_transcription.completed", item_id=item_id,
            content_index=0, transcript=text, usage={"type": "duration", "seconds": seconds},
        ))
        return events

    def _audio_modality(self, resp: Response) -> bool:
        return resp.opts["modalities"] == ["audio"]

    def _open_message(self, resp: Response) -> list[dict]:
        ctype = "output_audio" if self._audio_modality(resp) else "output_text"
        key = "transcript" if ctype == "output_audio" else "text"
        item = Item({"id": new_id("item"), "type": "message", "object": "realtime.item",
                     "status": "in_progress", "role": "assistant", "content": []},
                    audio=bytearray() if ctype == "output_audio" else None)
        part = {"type": "audio" if ctype == "output_audio" else "text", key: ""}
        events = self._open_output(resp, item)
        events.append(self._event(
            "response.content_part.added", response_id=resp.id, item_id=item.id,
            output_index=len(resp.output) - 1, content_index=0, part=part,
        ))
        return events

    def _open_output(self, resp: Response, item: Item) -> list[dict]:
        """output_item.added, then the item's conversation event (beta created / GA added)."""
        previous = self._last_item_id()
        resp.output.append(item)
        resp.message = item if item.data["type"] == "message" else None
        resp.text = ""
        events = [self._event("response.output_item.added", response_id=resp.id,
                              output_index=len(resp.output) - 1,
                              item=self.dialect.item_out(item.data))]
        if resp.in_conversation:
            self.items.append(item)
            name = "conversation.item.created" if self.dialect.beta else "conversation.item.added"
            events.append(self._event(name, previous_item_id=previous,
                                      item=self.dialect.item_out(item.data)))
        return events

    def _close_output(self, resp: Response, item: Item, status: str) -> list[dict]:
        item.data["status"] = status
        events = []
        if resp.in_conversation and not self.dialect.beta:
            idx = self.items.index(item) if item in self.items else -1
            prev = self.items[idx - 1].id if idx > 0 else None
            events.append(self._event("conversation.item.done", previous_item_id=prev,
                                      item=self.dialect.item_out(item.data)))
        events.append(self._event("response.output_item.done", response_id=resp.id,
                                  output_index=resp.output.index(item),
                                  item=self.dialect.item_out(item.data)))
        return events

    def _close_message(self, resp: Response, status: str) -> list[dict]:
        item = resp.message
        if item is None:
            return []
        resp.message = None
        ids = {"response_id": resp.id, "item_id": item.id,
               "output_index": resp.output.index(item), "content_index": 0}
        d = self.dialect
        if self._audio_modality(resp):
            part = {"type": "audio", "transcript": resp.text}
            item.data["content"] = [{"type": "output_audio", "transcript": resp.text}]
            events = [self._event(d.audio_done(), **ids),
                      self._event(d.transcript_done(), transcript=resp.text, **ids)]
        else:
            part = {"type": "text", "text": resp.text}
            item.data["content"] = [{"type": "output_text", "text": resp.text}]
            events = [self._event(d.text_done(), text=resp.text, **ids)]
        events.append(self._event("response.content_part.done", part=part, **ids))
        return events + self._close_output(resp, item, status)

    def response_speech(self, response_id: str, text: str, audio: bytes = b"") -> list[dict]:
        """Stream one piece of the reply: its text (or transcript) and, for audio, its pcm.

        Audio goes out in deltas of at most 100 ms, each after the text it speaks.
        """
        resp = self.responses.get(response_id)
        if resp is None or resp.status != "in_progress":
            return []
        events = [] if resp.message is not None else self._open_message(resp)
        ids = {"response_id": resp.id, "item_id": resp.message.id,
               "output_index": len(resp.output) - 1, "content_index": 0}
        d = self.dialect
        resp.text += text
        resp.output_text_chars += len(text)
        if self._audio_modality(resp):
            if text:
                events.append(self._event(d.transcript_delta(), delta=text, **ids))
            for piece in chunks(audio, 100):
                resp.message.audio.extend(piece)
                resp.output_audio_ms += duration_ms(piece)
                events.append(self._event(d.audio_delta(), delta=b64encode(piece), **ids))
        elif text:
            events.append(self._event(d.text_delta(), delta=text, **ids))
        return events

    def response_function_call(self, response_id: str, name: str, arguments: str,
                               call_id: str | None = None) -> list[dict]:
        """A complete function-call output item (section 4c of the protocol notes)."""
        resp = self.responses.get(response_id)
        if resp is None or resp.status != "in_progress":
            return []
        events = self._close_message(resp, "completed")
        call_id = call_id or new_id("call")
        item = Item({"id": new_id("item"), "type": "function_call", "object": "realtime.item",
                     "status": "in_progress", "name": name, "call_id": call_id,
                     "arguments": ""})
        events += self._open_output(resp, item)
        ids = {"response_id": resp.id, "item_id": item.id,
               "output_index": len(resp.output) - 1, "call_id": call_id}
        step = max(1, len(arguments) // 4 + 1)
        for i in range(0, len(arguments), step):
            events.append(self._event("response.function_call_arguments.delta",
                                      delta=arguments[i : i + step], **ids))
        done = {"arguments": arguments, **ids}
        if not self.dialect.beta:
            done["name"] = name
        events.append(self._event("response.function_call_arguments.done", **done))
        item.data["arguments"] = arguments
        resp.output_text_chars += len(arguments)
        return events + self._close_output(resp, item, "completed")

    def response_finish(self, response_id: str) -> list[dict]:
        """The generator is done: close what is open, then response.done + rate limits."""
        resp = self.responses.get(response_id)
        if resp is None or resp.status != "in_progress":
            return []
        events = self._close_message(resp, "completed")
        return self._stamp(events + self._done(resp, "completed", None))

    def response_fail(self, response_id: str, message: str) -> list[dict]:
        resp = self.responses.get(response_id)
        if resp is None or resp.status != "in_progress":
            return []
        events = self._close_message(resp, "incomplete")
        details = {"type": "failed", "error": {"type": "server_error", "code": "server_error",
                                               "message": message}}
        return self._stamp(events + self._done(resp, "failed", details))

    def _cancel(self, response_id: str, reason: str) -> list[dict]:
        resp = self.responses[response_id]
        events = self._close_message(resp, "incomplete")
        self._actions.append(CancelResponse(resp.id))
        return events + self._done(resp, "cancelled", {"type": "cancelled", "reason": reason})

    def _done(self, resp: Response, status: str, details: dict | None) -> list[dict]:
        resp.status, resp.status_details = status, details
        if self.active_response_id == resp.id:
            self.active_response_id = None
        out = [self._event("response.done", response=self._response_out(resp)),
               self._event("rate_limits.updated", rate_limits=self.dialect.rate_limits())]
        resp.context = []  # finished responses keep no references to audio
        self._bound_stored_audio()
        # Keep a bounded history of finished responses (ids only matter while active).
        if len(self.responses) > 64:
            for rid in [r for r, v in self.responses.items() if v.status != "in_progress"][:32]:
                del self.responses[rid]
        return out

    def expire_events(self) -> list[dict]:
        """The error sent when the session hits its maximum duration (then close)."""
        limit = self.max_session_s
        span = f"{limit / 60:g} minutes" if limit >= 60 else f"{limit:g} seconds"
        return [self.error_event(ProtocolError(
            "session_expired", f"Your session hit the maximum duration of {span}."))]

    def snapshot(self) -> dict:
        """A debugging view of the state."""
        return {"items": [copy.deepcopy(i.data) for i in self.items],
                "buffer_ms": len(self.buffer) // BYTES_PER_MS,
                "active_response_id": self.active_response_id}
