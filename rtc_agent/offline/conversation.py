"""One Realtime session's state, without sockets, threads, clocks or randomness.

Every `Conversation` method that changes state returns one ordered list of `Output`s:
`Emit` (send this server event) or an action for the I/O layer: `DetectSpeech`,
`Recognize`, `StartResponse`, `CancelResponse`. Client events go in through
`handle`. The I/O layer answers the actions through `append_audio` (speech scores),
`transcription_done` (recognition) and the `response_*` methods (generated speech,
text and function calls), which return Outputs in turn. Ids and the clock are
constructor arguments, so the same inputs always give the same outputs; the asyncio
side is `driver.SessionDriver`.

Turn-taking on input audio is `input_buffer.InputBuffer`; responses and their
streaming are `Responses` below; client checks are in `validation` and the beta/GA
shapes of what goes out in `rendering`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtc_agent.offline.audio import b64encode, chunks, duration_ms
from rtc_agent.offline.input_buffer import (
    InputBuffer,
    SpeechPaused,
    SpeechStarted,
    TurnDetection,
    TurnEvent,
)
from rtc_agent.offline.rendering import (
    announces_item_done,
    client_item_events,
    event_name,
    item_out,
    names_function_in_arguments_done,
    rate_limits,
    response_out,
    session_out,
)
from rtc_agent.offline.validation import (
    JSON,
    ProtocolError,
    ResponseOptions,
    apply_session_update,
    check_client_event,
    decode_append,
    default_session,
    invalid_type,
    invalid_value,
    missing,
    parse_response_options,
    validate_item,
)
from rtc_agent.protocol import BYTES_PER_MS, Dialect

IdSource = Callable[[str], str]  # prefix ("item", "event", ...) -> a new id such as "item_x1"
Clock = Callable[[], float]  # seconds since the epoch

MIN_COMMIT_MS = 100
MAX_SESSION_S = {Dialect.GA: 3600, Dialect.BETA: 1800}  # what the cloud allows
MAX_KEPT_RESPONSES = 64  # past this, the oldest finished responses are forgotten


# --- outputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emit:
    """Send this server event to the client."""

    event: JSON


@dataclass(frozen=True, slots=True)
class DetectSpeech:
    """Action: score pcm with the session's speech detector, then hand the scores to
    `Conversation.append_audio(pcm, probabilities, window_ms)`; the audio joins the
    buffer only then. With `restart`, reset the detector first: the VAD timeline
    restarted (commit, clear or new settings) since it last scored audio."""

    pcm: bytes  # whole samples
    restart: bool


@dataclass(frozen=True, slots=True)
class Recognize:
    """Action: recognise a user audio item (always, so the responder can understand it),
    then call `Conversation.transcription_done`.

    With server VAD the recogniser gets the speech plus a short tail of the silence
    after it. That audio is complete long before silence_duration_ms ends the turn, so
    a `speculative` Recognize with the same `key` comes first; when the turn is
    committed with that key, the I/O layer reuses the running result instead of
    starting late (this takes recognition off the speech_stopped -> reply path). A
    speculative Recognize needs no answer.
    """

    item_id: str
    audio: bytes
    emit_events: bool  # input transcription was on when the item was committed
    key: tuple[int, int] | None = None  # (speech start ms, last voiced ms) for VAD turns
    speculative: bool = False


@dataclass(frozen=True, slots=True)
class StartResponse:
    """Action: generate the content of a response, feeding it back through
    `response_speech` / `response_function_call` and ending with `response_finish`
    (or `response_fail`). `responder_input` says what to answer."""

    response_id: str


@dataclass(frozen=True, slots=True)
class CancelResponse:
    """Action: stop generating a response that was cancelled or interrupted."""

    response_id: str


Output = Emit | DetectSpeech | Recognize | StartResponse | CancelResponse


def _event(new_id: IdSource, type_: str, **fields: Any) -> Emit:
    return Emit({"type": type_, "event_id": new_id("event"), **fields})


def _stamped(new_id: IdSource, events: list[JSON]) -> list[Output]:
    """Emit rendered events, adding their event_id (last, as they are built without one)."""
    out: list[Output] = []
    for event in events:
        event.setdefault("event_id", new_id("event"))
        out.append(Emit(event))
    return out


# --- state --------------------------------------------------------------------------


@dataclass
class Item:
    """A conversation item: its GA-shaped JSON plus what the server keeps beside it."""

    data: JSON
    audio: bytearray | None = None  # pcm16 24 kHz of the input_audio / output_audio part
    heard: str | None = None  # what the recogniser understood (user audio)

    @property
    def id(self) -> str:
        item_id: str = self.data["id"]
        return item_id


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
    """What the responder answers: the response's options and its context as turns."""

    instructions: str
    tools: list[JSON]
    tool_choice: str | JSON
    modalities: list[str]
    turns: list[Turn]


@dataclass
class Response:
    id: str
    opts: ResponseOptions
    context: list[Item]  # what the response answers (dropped when it is done)
    status: str = "in_progress"
    status_details: JSON | None = None
    output: list[Item] = field(default_factory=list)
    message: Item | None = None  # the assistant message being streamed
    text: str = ""  # text or transcript of the open message
    output_text_chars: int = 0
    output_audio_ms: int = 0

    @property
    def in_conversation(self) -> bool:
        return self.opts.conversation != "none"

    @property
    def speaks(self) -> bool:
        return self.opts.modalities == ["audio"]


# --- responses ----------------------------------------------------------------------


class Responses:
    """The session's responses, from response.created through streaming to response.done.

    Output items of in-conversation responses are appended to the conversation's
    item list, which is shared with the Conversation. `on_done` runs after each
    response ends (the conversation then bounds the audio it keeps).
    """

    def __init__(self, dialect: Dialect, new_id: IdSource, items: list[Item],
                 conversation_id: str, on_done: Callable[[], None]) -> None:
        self.dialect = dialect
        self._new_id = new_id
        self._items = items
        self._conversation_id = conversation_id
        self._on_done = on_done
        self._by_id: dict[str, Response] = {}
        self.active_id: str | None = None  # the in-conversation response in progress

    def _event(self, type_: str, **fields: Any) -> Emit:
        return _event(self._new_id, type_, **fields)

    # --- queries --------------------------------------------------------------------

    def __len__(self) -> int:
        """How many responses are remembered, finished ones included."""
        return len(self._by_id)

    def get(self, response_id: str) -> Response | None:
        return self._by_id.get(response_id)

    def is_active(self, response_id: str) -> bool:
        resp = self._by_id.get(response_id)
        return resp is not None and resp.status == "in_progress"

    def streaming(self, item: Item) -> Response | None:
        """The response still streaming this item, if any."""
        for resp in self._by_id.values():
            if resp.status == "in_progress" and resp.message is item:
                return resp
        return None

    def responder_input(self, response_id: str) -> ResponderInput:
        """What the responder needs, read at generation time (recognition may be late)."""
        resp = self._by_id[response_id]
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
        opts = resp.opts
        tools = [] if opts.tool_choice == "none" else opts.tools
        return ResponderInput(opts.instructions, tools, opts.tool_choice, opts.modalities, turns)

    def pending_recognition(self, response_id: str) -> list[str]:
        """Ids of user audio items in the response's context not yet recognised."""
        resp = self._by_id[response_id]
        return [i.id for i in resp.context if i.audio is not None and i.heard is None
                and i.data.get("role") == "user"]

    # --- lifecycle ------------------------------------------------------------------

    def start(self, opts: ResponseOptions, context: list[Item]) -> list[Output]:
        resp = Response(id=self._new_id("resp"), opts=opts, context=context)
        self._by_id[resp.id] = resp
        if resp.in_conversation:
            self.active_id = resp.id
        return [self._event("response.created", response=self._out(resp)),
                StartResponse(resp.id)]

    def speech(self, response_id: str, text: str, audio: bytes = b"") -> list[Output]:
        """Stream one piece of the reply: its text (or transcript) and, for audio, its pcm.

        Audio goes out in deltas of at most 100 ms, each after the text it speaks.
        """
        resp = self._in_progress(response_id)
        if resp is None:
            return []
        out = [] if resp.message is not None else self._open_message(resp)
        message = resp.message
        assert message is not None
        ids = {"response_id": resp.id, "item_id": message.id,
               "output_index": len(resp.output) - 1, "content_index": 0}
        resp.text += text
        resp.output_text_chars += len(text)
        if resp.speaks:
            assert message.audio is not None  # spoken messages open with an audio buffer
            if text:
                out.append(self._event(self._name("response.output_audio_transcript.delta"),
                                       delta=text, **ids))
            for piece in chunks(audio, 100):
                message.audio.extend(piece)
                resp.output_audio_ms += duration_ms(piece)
                out.append(self._event(self._name("response.output_audio.delta"),
                                       delta=b64encode(piece), **ids))
        elif text:
            out.append(self._event(self._name("response.output_text.delta"), delta=text, **ids))
        return out

    def function_call(self, response_id: str, name: str, arguments: str,
                      call_id: str | None = None) -> list[Output]:
        """A complete function-call output item (section 4c of the protocol notes)."""
        resp = self._in_progress(response_id)
        if resp is None:
            return []
        out = self._close_message(resp, "completed")
        call_id = call_id or self._new_id("call")
        item = Item({"id": self._new_id("item"), "type": "function_call",
                     "object": "realtime.item", "status": "in_progress", "name": name,
                     "call_id": call_id, "arguments": ""})
        out += self._open_output(resp, item)
        ids = {"response_id": resp.id, "item_id": item.id,
               "output_index": len(resp.output) - 1, "call_id": call_id}
        step = max(1, len(arguments) // 4 + 1)
        for i in range(0, len(arguments), step):
            out.append(self._event("response.function_call_arguments.delta",
                                   delta=arguments[i : i + step], **ids))
        done: JSON = {"arguments": arguments, **ids}
        if names_function_in_arguments_done(self.dialect):
            done["name"] = name
        out.append(self._event("response.function_call_arguments.done", **done))
        item.data["arguments"] = arguments
        resp.output_text_chars += len(arguments)
        return out + self._close_output(resp, item, "completed")

    def finish(self, response_id: str) -> list[Output]:
        """The generator is done: close what is open, then response.done + rate limits."""
        resp = self._in_progress(response_id)
        if resp is None:
            return []
        return self._close_message(resp, "completed") + self._done(resp, "completed", None)

    def fail(self, response_id: str, message: str) -> list[Output]:
        resp = self._in_progress(response_id)
        if resp is None:
            return []
        details = {"type": "failed", "error": {"type": "server_error", "code": "server_error",
                                               "message": message}}
        return self._close_message(resp, "incomplete") + self._done(resp, "failed", details)

    def cancel(self, response_id: str, reason: str) -> list[Output]:
        """Stop a response in progress (client_cancelled or turn_detected)."""
        resp = self._by_id[response_id]
        closed = self._close_message(resp, "incomplete")
        done = self._done(resp, "cancelled", {"type": "cancelled", "reason": reason})
        return [CancelResponse(resp.id), *closed, *done]

    # --- streaming ------------------------------------------------------------------

    def _name(self, ga_name: str) -> str:
        return event_name(self.dialect, ga_name)

    def _in_progress(self, response_id: str) -> Response | None:
        """The response if it may still stream (late output of a finished one is dropped)."""
        resp = self._by_id.get(response_id)
        return resp if resp is not None and resp.status == "in_progress" else None

    def _open_message(self, resp: Response) -> list[Output]:
        item = Item({"id": self._new_id("item"), "type": "message", "object": "realtime.item",
                     "status": "in_progress", "role": "assistant", "content": []},
                    audio=bytearray() if resp.speaks else None)
        part = {"type": "audio", "transcript": ""} if resp.speaks else {"type": "text", "text": ""}
        out = self._open_output(resp, item)
        out.append(self._event("response.content_part.added", response_id=resp.id,
                               item_id=item.id, output_index=len(resp.output) - 1,
                               content_index=0, part=part))
        return out

    def _open_output(self, resp: Response, item: Item) -> list[Output]:
        """output_item.added, then the item's conversation event (beta created / GA added)."""
        previous = self._items[-1].id if self._items else None
        resp.output.append(item)
        resp.message = item if item.data["type"] == "message" else None
        resp.text = ""
        out: list[Output] = [self._event("response.output_item.added", response_id=resp.id,
                                         output_index=len(resp.output) - 1,
                                         item=item_out(self.dialect, item.data))]
        if resp.in_conversation:
            self._items.append(item)
            out.append(self._event(self._name("conversation.item.added"),
                                   previous_item_id=previous,
                                   item=item_out(self.dialect, item.data)))
        return out

    def _close_output(self, resp: Response, item: Item, status: str) -> list[Output]:
        item.data["status"] = status
        out: list[Output] = []
        if resp.in_conversation and announces_item_done(self.dialect):
            idx = self._items.index(item) if item in self._items else -1
            prev = self._items[idx - 1].id if idx > 0 else None
            out.append(self._event("conversation.item.done", previous_item_id=prev,
                                   item=item_out(self.dialect, item.data)))
        out.append(self._event("response.output_item.done", response_id=resp.id,
                               output_index=resp.output.index(item),
                               item=item_out(self.dialect, item.data)))
        return out

    def _close_message(self, resp: Response, status: str) -> list[Output]:
        item = resp.message
        if item is None:
            return []
        resp.message = None
        ids = {"response_id": resp.id, "item_id": item.id,
               "output_index": resp.output.index(item), "content_index": 0}
        out: list[Output]
        if resp.speaks:
            part = {"type": "audio", "transcript": resp.text}
            item.data["content"] = [{"type": "output_audio", "transcript": resp.text}]
            out = [self._event(self._name("response.output_audio.done"), **ids),
                   self._event(self._name("response.output_audio_transcript.done"),
                               transcript=resp.text, **ids)]
        else:
            part = {"type": "text", "text": resp.text}
            item.data["content"] = [{"type": "output_text", "text": resp.text}]
            out = [self._event(self._name("response.output_text.done"), text=resp.text, **ids)]
        out.append(self._event("response.content_part.done", part=part, **ids))
        return out + self._close_output(resp, item, status)

    def _done(self, resp: Response, status: str, details: JSON | None) -> list[Output]:
        resp.status, resp.status_details = status, details
        if self.active_id == resp.id:
            self.active_id = None
        out: list[Output] = [
            self._event("response.done", response=self._out(resp)),
            self._event("rate_limits.updated", rate_limits=rate_limits(self.dialect)),
        ]
        resp.context = []  # finished responses keep no references to audio
        self._on_done()
        # Keep a bounded history of finished responses (ids only matter while active).
        if len(self._by_id) > MAX_KEPT_RESPONSES:
            finished = [r for r, v in self._by_id.items() if v.status != "in_progress"]
            for rid in finished[: MAX_KEPT_RESPONSES // 2]:
                del self._by_id[rid]
        return out

    def _out(self, resp: Response) -> JSON:
        opts = resp.opts
        return response_out(self.dialect, {
            "id": resp.id, "status": resp.status, "status_details": resp.status_details,
            "output": [i.data for i in resp.output],
            "conversation_id": self._conversation_id if resp.in_conversation else None,
            "max_output_tokens": opts.max_output_tokens,
            "usage": None if resp.status == "in_progress" else self._usage(resp),
            "metadata": opts.metadata, "modalities": opts.modalities,
            "voice": opts.voice, "temperature": opts.temperature,
        })

    @staticmethod
    def _usage(resp: Response) -> JSON:
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


# --- the conversation ---------------------------------------------------------------


class Conversation:
    """One Realtime session: its configuration, items, input buffer and responses."""

    def __init__(
        self,
        dialect: Dialect,
        model: str = "gpt-realtime",
        *,
        new_id: IdSource,
        clock: Clock,
        max_buffer_ms: int = 60_000,
        max_stored_audio_ms: int = 10 * 60_000,
        max_session_s: float | None = None,
    ) -> None:
        self.dialect = dialect
        self._new_id = new_id
        self.session = default_session(model)
        self.session_id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.max_session_s = max_session_s or MAX_SESSION_S[dialect]
        self.expires_at = int(clock() + self.max_session_s)
        # Items keep their audio for retrieve/truncate; past this total the oldest items'
        # audio is forgotten, so an hour-long session does not hold an hour of pcm.
        self.max_stored_audio_ms = max_stored_audio_ms
        self.items: list[Item] = []
        self.input = InputBuffer(new_id, max_buffer_ms, self._vad_settings())
        self.responses = Responses(dialect, new_id, self.items, self.conversation_id,
                                   on_done=self._bound_stored_audio)
        self._handlers: dict[str, Callable[[JSON], list[Output]]] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_input_audio_buffer_append,
            "input_audio_buffer.commit": self._on_input_audio_buffer_commit,
            "input_audio_buffer.clear": self._on_input_audio_buffer_clear,
            "conversation.item.create": self._on_conversation_item_create,
            "conversation.item.truncate": self._on_conversation_item_truncate,
            "conversation.item.delete": self._on_conversation_item_delete,
            "conversation.item.retrieve": self._on_conversation_item_retrieve,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }

    def _event(self, type_: str, **fields: Any) -> Emit:
        return _event(self._new_id, type_, **fields)

    # --- reading the state ----------------------------------------------------------

    @property
    def turn_detection(self) -> JSON | None:
        td: JSON | None = self.session["audio"]["input"]["turn_detection"]
        return td

    @property
    def transcription_on(self) -> bool:
        return self.session["audio"]["input"]["transcription"] is not None

    @property
    def active_response_id(self) -> str | None:
        return self.responses.active_id

    def find(self, item_id: object) -> Item | None:
        for item in self.items:
            if item.id == item_id:
                return item
        return None

    def is_active(self, response_id: str) -> bool:
        return self.responses.is_active(response_id)

    def responder_input(self, response_id: str) -> ResponderInput:
        return self.responses.responder_input(response_id)

    def pending_recognition(self, response_id: str) -> list[str]:
        return self.responses.pending_recognition(response_id)

    def snapshot(self) -> JSON:
        """A debugging view of the state."""
        return {"items": [copy.deepcopy(i.data) for i in self.items],
                "buffer_ms": int(self.input.buffered_ms),
                "active_response_id": self.responses.active_id}

    # --- entry points ---------------------------------------------------------------

    def created(self) -> list[Output]:
        """What the server sends first on a new connection."""
        return [self._event("session.created", session=self._session_out())]

    def error(self, err: ProtocolError, client_event_id: object = None) -> list[Output]:
        """The `error` event for a client mistake (client_event_id: the event it was in)."""
        return [self._event("error", error={
            "type": err.type, "code": err.code, "message": err.message, "param": err.param,
            "event_id": client_event_id if isinstance(client_event_id, str) else None,
        })]

    def expire(self) -> list[Output]:
        """The error sent when the session hits its maximum duration (then close)."""
        limit = self.max_session_s
        span = f"{limit / 60:g} minutes" if limit >= 60 else f"{limit:g} seconds"
        return self.error(ProtocolError(
            "session_expired", f"Your session hit the maximum duration of {span}."))

    def handle(self, event: object) -> list[Output]:
        """Apply one client event (already JSON-decoded)."""
        client_event_id = event.get("event_id") if isinstance(event, dict) else None
        try:
            kind, checked = check_client_event(event)
            return self._handlers[kind](checked)
        except ProtocolError as err:
            return self.error(err, client_event_id)

    def append_audio(self, pcm: bytes, probabilities: Sequence[float],
                     window_ms: int) -> list[Output]:
        """The answer to DetectSpeech: its audio, with the speech probabilities of its
        consecutive windows of window_ms (a window may span appends)."""
        return self._turn_taking(self.input.append(pcm, probabilities, window_ms))

    def transcription_done(self, item_id: str, text: str | None, emit: bool,
                           error: str | None = None) -> list[Output]:
        """The answer to a (non-speculative) Recognize: the text, or None on failure."""
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
        out: list[Output] = []
        if text:
            out.append(self._event("conversation.item.input_audio_transcription.delta",
                                   item_id=item_id, content_index=0, delta=text))
        out.append(self._event(
            "conversation.item.input_audio_transcription.completed", item_id=item_id,
            content_index=0, transcript=text, usage={"type": "duration", "seconds": seconds},
        ))
        return out

    def response_speech(self, response_id: str, text: str, audio: bytes = b"") -> list[Output]:
        """Generated reply text (or transcript) and, for spoken replies, its audio."""
        return self.responses.speech(response_id, text, audio)

    def response_function_call(self, response_id: str, name: str, arguments: str,
                               call_id: str | None = None) -> list[Output]:
        return self.responses.function_call(response_id, name, arguments, call_id)

    def response_finish(self, response_id: str) -> list[Output]:
        return self.responses.finish(response_id)

    def response_fail(self, response_id: str, message: str) -> list[Output]:
        return self.responses.fail(response_id, message)

    # --- session --------------------------------------------------------------------

    def _session_out(self) -> JSON:
        return session_out(self.dialect, self.session, self.session_id, self.expires_at)

    def _vad_settings(self) -> TurnDetection | None:
        td = self.turn_detection
        return TurnDetection.from_session(td) if td is not None else None

    def _on_session_update(self, event: JSON) -> list[Output]:
        if "session" not in event:
            raise missing("session")
        old_td = self.turn_detection
        self.session = apply_session_update(self.dialect, self.session, event["session"])
        if self.turn_detection != old_td:
            self.input.configure(self._vad_settings())
        return [self._event("session.updated", session=self._session_out())]

    # --- input audio ----------------------------------------------------------------

    def _on_input_audio_buffer_append(self, event: JSON) -> list[Output]:
        pcm = self.input.whole_samples(decode_append(event))
        if self.input.turn_detection is not None and pcm:
            return [DetectSpeech(pcm, self.input.take_detector_restart())]
        return self._turn_taking(self.input.append(pcm))

    def _turn_taking(self, events: list[TurnEvent]) -> list[Output]:
        """What the input buffer's turn events mean for items and responses."""
        td = self.turn_detection or {}
        out: list[Output] = []
        for turn in events:
            if isinstance(turn, SpeechStarted):
                out.append(self._event("input_audio_buffer.speech_started",
                                       audio_start_ms=turn.audio_start_ms, item_id=turn.item_id))
                active = self.responses.active_id
                if td.get("interrupt_response", True) and active:
                    out += self.responses.cancel(active, "turn_detected")
            elif isinstance(turn, SpeechPaused):
                out.append(Recognize(turn.item_id, turn.audio, self.transcription_on, turn.key,
                                     speculative=True))
            else:
                out.append(self._event("input_audio_buffer.speech_stopped",
                                       audio_end_ms=turn.audio_end_ms, item_id=turn.item_id))
                out += self._commit(turn.audio, turn.item_id, turn.recognition_audio, turn.key)
                if td.get("create_response", True) and self.responses.active_id is None:
                    out += self._start_response(
                        parse_response_options(self.dialect, None, self.session))
        return out

    def _commit(self, audio: bytes, item_id: str, recognition_audio: bytes | None = None,
                key: tuple[int, int] | None = None) -> list[Output]:
        previous = self._last_item_id()
        item = Item(
            data={"id": item_id, "type": "message", "object": "realtime.item",
                  "status": "completed", "role": "user",
                  "content": [{"type": "input_audio", "transcript": None}]},
            audio=bytearray(audio),
        )
        self.items.append(item)
        self._bound_stored_audio()
        return [
            self._event("input_audio_buffer.committed", item_id=item_id,
                        previous_item_id=previous),
            *_stamped(self._new_id, client_item_events(self.dialect, item.data, previous)),
            Recognize(item_id, audio if recognition_audio is None else recognition_audio,
                      self.transcription_on, key),
        ]

    def _on_input_audio_buffer_commit(self, event: JSON) -> list[Output]:
        have_ms = self.input.buffered_ms
        if have_ms < MIN_COMMIT_MS:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {have_ms:.2f}ms of audio.",
            )
        item_id, audio = self.input.commit()
        return self._commit(audio, item_id)

    def _on_input_audio_buffer_clear(self, event: JSON) -> list[Output]:
        self.input.clear()
        return [self._event("input_audio_buffer.cleared")]

    # --- items ----------------------------------------------------------------------

    def _last_item_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    def _new_item(self, raw: Any) -> Item:
        new = validate_item(raw, self._new_id)
        audio = bytearray(new.audio) if new.audio is not None else None
        return Item(new.data, audio=audio, heard=new.heard)

    def _bound_stored_audio(self) -> None:
        """Forget the audio of the oldest recognised items past max_stored_audio_ms."""
        total = sum(len(i.audio) for i in self.items if i.audio is not None)
        limit = self.max_stored_audio_ms * BYTES_PER_MS
        for item in self.items:
            if total <= limit:
                break
            if item.audio is not None and item.heard is not None \
                    and self.responses.streaming(item) is None:
                total -= len(item.audio)
                item.audio = None

    def _on_conversation_item_create(self, event: JSON) -> list[Output]:
        if "item" not in event:
            raise missing("item")
        item = self._new_item(event["item"])
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
        out = _stamped(self._new_id, client_item_events(self.dialect, item.data, previous))
        if item.audio is not None and item.data["role"] == "user" and item.heard is None:
            out.append(Recognize(item.id, bytes(item.audio), False))
        return out

    def _on_conversation_item_truncate(self, event: JSON) -> list[Output]:
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
        out: list[Output] = []
        owner = self.responses.streaming(item)
        if owner is not None:  # still streaming: the user stopped listening, so stop talking
            out += self.responses.cancel(owner.id, "client_cancelled")
        # Clamp to the audio the server produced: a client's played-ms count may round up.
        audio = item.audio if item.audio is not None else bytearray()
        end_ms = min(end_ms, duration_ms(audio))
        del audio[end_ms * BYTES_PER_MS :]
        content[index]["transcript"] = ""  # the model must not "remember" unheard words
        out.append(self._event("conversation.item.truncated", item_id=item.id,
                               content_index=index, audio_end_ms=end_ms))
        return out

    def _on_conversation_item_delete(self, event: JSON) -> list[Output]:
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

    def _on_conversation_item_retrieve(self, event: JSON) -> list[Output]:
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
                            item=item_out(self.dialect, item.data, audio_b64=audio))]

    # --- responses ------------------------------------------------------------------

    def _on_response_create(self, event: JSON) -> list[Output]:
        opts = parse_response_options(self.dialect, event.get("response"), self.session)
        active = self.responses.active_id
        if opts.conversation != "none" and active is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{active}. Wait until the response is finished before creating a new one.",
            )
        return self._start_response(opts)

    def _on_response_cancel(self, event: JSON) -> list[Output]:
        rid = event.get("response_id") or self.responses.active_id
        resp = self.responses.get(rid) if rid else None
        if resp is None or resp.status != "in_progress":
            raise ProtocolError("response_cancel_not_active",
                                "Cancellation failed: no active response found")
        return self.responses.cancel(resp.id, "client_cancelled")

    def _start_response(self, opts: ResponseOptions) -> list[Output]:
        context = self._resolve_input(opts.input) if opts.input is not None else list(self.items)
        return self.responses.start(opts, context)

    def _resolve_input(self, raw: list[Any]) -> list[Item]:
        """response.input: item references and inline items, as the response's context."""
        items: list[Item] = []
        for i, entry in enumerate(raw):
            if isinstance(entry, dict) and entry.get("type") == "item_reference":
                found = self.find(entry.get("id"))
                if found is None:
                    raise invalid_value(f"response.input[{i}].id",
                                        f"Item '{entry.get('id')}' does not exist.")
                items.append(found)
            else:
                items.append(self._new_item(entry))
        return items
