"""One Realtime session's state, without sockets, threads, clocks or randomness.

Every `Conversation` method that changes state returns one ordered list of `Output`s:
`Emit` (send this server event) or an action for the I/O layer: `DetectSpeech`,
`Recognize`, `StartResponse`, `CancelResponse`. Client events go in through
`handle`. The I/O layer answers the actions through `append_audio` (speech scores),
`transcription_done` (recognition) and the `response_*` methods (generated speech,
text and function calls), which return Outputs in turn. Ids and the clock are
constructor arguments, so the same inputs always give the same outputs; the asyncio
side is `driver.SessionDriver`.

Turn-taking on input audio is `input_buffer.InputBuffer`; items and responses and
their streaming are `responses.Responses`; the output types are in `outputs`;
client checks are in `validation` and the beta/GA shapes of what goes out in
`rendering`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from rtc_agent.offline.audio import b64encode, duration_ms
from rtc_agent.offline.input_buffer import (
    InputBuffer,
    SpeechPaused,
    SpeechStarted,
    TurnDetection,
    TurnEvent,
)
from rtc_agent.offline.outputs import (
    Clock,
    DetectSpeech,
    Emit,
    IdSource,
    Output,
    Recognize,
    event,
    stamped,
)
from rtc_agent.offline.rendering import (
    client_item_events,
    item_out,
    session_out,
)
from rtc_agent.offline.responses import (
    MAX_OUT_OF_BAND,
    Item,
    ItemStore,
    ResponderInput,
    Response,
    Responses,
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
    shown,
    validate_item,
)
from rtc_agent.protocol import BYTES_PER_MS, Dialect

MIN_COMMIT_MS = 100
MAX_SESSION_S = {Dialect.GA: 3600, Dialect.BETA: 1800}  # what the cloud allows
# What one session keeps (defensive bounds; see ItemStore): the agent replays at most
# its last 100 turns, and an hour-long call then holds what a ten-minute one holds.
MAX_ITEMS = 1024
# Audio is kept only for truncation and retrieval of recent items; two minutes
# (5.8 MB) covers any reply being played. With ten minutes kept, a 15-minute soak
# of four calls grew the process by 94 MB, still under that cap (docs/benchmarks.md).
MAX_STORED_AUDIO_MS = 2 * 60_000  # user and reply audio together
MAX_STORED_TEXT_CHARS = 2_000_000
# Live captions: a recognised turn goes out as word-by-word transcription deltas (the
# recogniser gives the words at once); a long turn's words are grouped into at most this
# many deltas.
MAX_TRANSCRIPTION_DELTAS = 64


def word_deltas(text: str, limit: int = MAX_TRANSCRIPTION_DELTAS) -> list[str]:
    """text cut into at most limit deltas of whole words that join back into text."""
    words = text.split(" ")
    per = -(-len(words) // limit)  # ceiling
    groups = [" ".join(words[i : i + per]) for i in range(0, len(words), per)]
    return [g if i == 0 else " " + g for i, g in enumerate(groups)]


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
        max_stored_audio_ms: int = MAX_STORED_AUDIO_MS,
        max_session_s: float | None = None,
        max_items: int = MAX_ITEMS,
        max_stored_text_chars: int = MAX_STORED_TEXT_CHARS,
    ) -> None:
        self.dialect = dialect
        self._new_id = new_id
        self.session = default_session(model)
        self.session_id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.max_session_s = max_session_s or MAX_SESSION_S[dialect]
        self.expires_at = int(clock() + self.max_session_s)
        # Items keep their audio for retrieve; past the bounds the oldest audio, then the
        # oldest items, are forgotten, so an hour-long session does not hold an hour of pcm.
        self.store = ItemStore(max_items, max_stored_audio_ms * BYTES_PER_MS,
                               max_stored_text_chars)
        self.input = InputBuffer(new_id, max_buffer_ms, self._vad_settings())
        self.responses = Responses(dialect, new_id, self.store, self.conversation_id,
                                   on_done=self._response_ended)
        # Idle timeout (server_vad idle_timeout_ms), on the input audio timeline: where the
        # quiet since the last reply's playback started (None: not counting), and where
        # the reply being generated started to play.
        self._idle_since_ms: int | None = None
        self._reply_from_ms: int | None = None
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
        return event(self._new_id, type_, **fields)

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

    @property
    def items(self) -> list[Item]:
        """The conversation's items in order (read only: change them through the store)."""
        return self.store.items

    def find(self, item_id: object) -> Item | None:
        return self.store.find(item_id)

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
        out = self._turn_taking(self.input.append(pcm, probabilities, window_ms))
        return out + self._idle_check()

    def heard_so_far(self, key: tuple[int, int], text: str | None) -> list[Output]:
        """The answer to a speculative Recognize that asked to `report`: the words of the
        speech so far (None: not recognised). Semantic VAD judges the turn by them."""
        return self._turn_taking(self.input.heard_so_far(key, text))

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
        seconds = item.audio_ms / 1000 if item is not None else 0.0
        # Captions as the service streams them: deltas after the item exists, then the
        # whole transcript. The recogniser answers once per turn, so the deltas are its
        # words, sent together.
        out: list[Output] = [
            self._event("conversation.item.input_audio_transcription.delta",
                        item_id=item_id, content_index=0, delta=delta)
            for delta in (word_deltas(text) if text else [])
        ]
        out.append(self._event(
            "conversation.item.input_audio_transcription.completed", item_id=item_id,
            content_index=0, transcript=text, usage={"type": "duration", "seconds": seconds},
        ))
        return out

    def response_speech(self, response_id: str, text: str, audio: bytes = b"") -> list[Output]:
        """Generated reply text (or transcript) and, for spoken replies, its audio."""
        if audio and self._reply_from_ms is None and response_id == self.responses.active_id:
            self._reply_from_ms = self.input.end_ms  # the caller starts hearing it now
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
                self._idle_since_ms = None  # the caller is not idle (after the cancel's done)
            elif isinstance(turn, SpeechPaused):
                semantic = self.input.turn_detection is not None \
                    and self.input.turn_detection.semantic
                out.append(Recognize(turn.item_id, turn.audio, self.transcription_on, turn.key,
                                     speculative=True, report=semantic))
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
            audio=bytearray(audio), audio_ms=duration_ms(audio),
        )
        self.store.append(item)
        return [
            self._event("input_audio_buffer.committed", item_id=item_id,
                        previous_item_id=previous),
            *stamped(self._new_id, client_item_events(self.dialect, item.data, previous)),
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
        return self.store.last_id()

    def _new_item(self, raw: Any) -> Item:
        new = validate_item(raw, self._new_id)
        if new.audio is None:
            return Item(new.data, heard=new.heard)
        return Item(new.data, audio=bytearray(new.audio), heard=new.heard,
                    audio_ms=duration_ms(new.audio))

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
                    f"Error adding item: the previous item with id '{shown(prev)}' does not exist.",
                )
            index = self.store.position(found) + 1
        previous = self.items[index - 1].id if index > 0 else None
        self.store.insert(index, item)
        out = stamped(self._new_id, client_item_events(self.dialect, item.data, previous))
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
                f"Item with item_id not found: {shown(event['item_id'])}" if item is None
                else f"Only assistant messages can be truncated: {item.id}",
                "item_id",
            )
        index, end_ms = event["content_index"], event["audio_end_ms"]
        if isinstance(index, bool) or not isinstance(index, int):
            raise invalid_type("content_index", "an integer")
        content = item.data.get("content", [])
        owner = self.responses.streaming(item)  # its audio part is written when it closes
        if not (owner is not None and owner.speaks and index == 0) and (
                not 0 <= index < len(content) or content[index].get("type") != "output_audio"):
            raise invalid_value("content_index", f"Content index {shown(index)} of item "
                                f"{item.id} is not an audio part.")
        if isinstance(end_ms, bool) or not isinstance(end_ms, int) or end_ms < 0:
            raise invalid_value("audio_end_ms", "Invalid 'audio_end_ms': expected an integer "
                                ">= 0.")
        out: list[Output] = []
        if owner is not None:  # still streaming: the user stopped listening, so stop talking
            out += self.responses.cancel(owner.id, "client_cancelled")
            content = item.data["content"]
        # Clamp to the audio the server produced: a client's played-ms count may round up.
        # The duration outlives the bytes, which may have been freed (see ItemStore).
        end_ms = min(end_ms, item.audio_ms)
        item.audio_ms = end_ms
        if item.audio is not None and len(item.audio) > end_ms * BYTES_PER_MS:
            removed = len(item.audio) - end_ms * BYTES_PER_MS
            del item.audio[end_ms * BYTES_PER_MS :]
            self.store.truncated(item, removed)
        content[index]["transcript"] = ""  # the model must not "remember" unheard words
        out.append(self._event("conversation.item.truncated", item_id=item.id,
                               content_index=index, audio_end_ms=end_ms))
        return out

    def _named_item(self, event: JSON, action: str) -> Item:
        """The item an event names by `item_id`, or the service's error for `action`."""
        if "item_id" not in event:
            raise missing("item_id")
        item = self.find(event["item_id"])
        if item is None:
            raise ProtocolError(
                f"item_{action}_invalid_item_id",
                f"Error {action.removesuffix('e')}ing item: the item with id "
                f"'{shown(event['item_id'])}' does not exist.",
            )
        return item

    def _on_conversation_item_delete(self, event: JSON) -> list[Output]:
        item = self._named_item(event, "delete")
        self.store.remove(item)
        return [self._event("conversation.item.deleted", item_id=item.id)]

    def _on_conversation_item_retrieve(self, event: JSON) -> list[Output]:
        item = self._named_item(event, "retrieve")
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
        running = self.responses.out_of_band_in_progress()
        if opts.conversation == "none" and len(running) >= MAX_OUT_OF_BAND:
            raise ProtocolError(
                "too_many_active_responses",
                f"Session already has {len(running)} out-of-band responses in progress: "
                f"{', '.join(running)}. Wait until one is finished before creating a new one.",
            )
        return self._start_response(opts)

    def _on_response_cancel(self, event: JSON) -> list[Output]:
        rid = event.get("response_id") or self.responses.active_id
        resp = self.responses.get(rid) if isinstance(rid, str) else None
        if resp is None or resp.status != "in_progress":
            raise ProtocolError("response_cancel_not_active",
                                "Cancellation failed: no active response found")
        return self.responses.cancel(resp.id, "client_cancelled")

    def _start_response(self, opts: ResponseOptions) -> list[Output]:
        context = self._resolve_input(opts.input) if opts.input is not None else list(self.items)
        out = self.responses.start(opts, context)
        if opts.conversation != "none":  # a reply is coming: the caller is not idle
            self._idle_since_ms = self._reply_from_ms = None
        return out

    # --- idle timeout -----------------------------------------------------------------

    def _response_ended(self, resp: Response) -> None:
        """A reply ended: the idle time counts from the end of its playback, which began
        at its first audio and lasts as long as its audio (or from now, if it had none)."""
        if not resp.in_conversation:
            return
        now = self.input.end_ms
        played_until = (self._reply_from_ms + resp.output_audio_ms
                        if self._reply_from_ms is not None else now)
        self._idle_since_ms = max(now, played_until)
        self._reply_from_ms = None

    def _idle_check(self) -> list[Output]:
        """server_vad's idle_timeout_ms: after that long of input audio without speech
        since the last reply played, input_audio_buffer.timeout_triggered, the (empty)
        buffer committed as a user item and a response to it (GA only: beta has neither
        the setting nor the event)."""
        td = self.turn_detection
        since = self._idle_since_ms
        if (td is None or td.get("type") != "server_vad" or self.dialect is not Dialect.GA
                or td.get("idle_timeout_ms") is None or since is None
                or self.input.speaking or self.responses.active_id is not None):
            return []
        now = self.input.end_ms
        if now - since < td["idle_timeout_ms"]:
            return []
        self._idle_since_ms = None
        previous = self._last_item_id()
        item_id, audio = self.input.commit()
        # Nothing was said: the item is known to be empty, so it needs no recognition.
        item = Item(data={"id": item_id, "type": "message", "object": "realtime.item",
                          "status": "completed", "role": "user",
                          "content": [{"type": "input_audio", "transcript": None}]},
                    audio=bytearray(audio), audio_ms=duration_ms(audio), heard="", idle=True)
        self.store.append(item)
        return [
            self._event("input_audio_buffer.timeout_triggered",
                        audio_start_ms=min(since, now), audio_end_ms=now, item_id=item_id),
            self._event("input_audio_buffer.committed", item_id=item_id,
                        previous_item_id=previous),
            *stamped(self._new_id, client_item_events(self.dialect, item.data, previous)),
            *self._start_response(parse_response_options(self.dialect, None, self.session)),
        ]

    def _resolve_input(self, raw: list[Any]) -> list[Item]:
        """response.input: item references and inline items, as the response's context."""
        items: list[Item] = []
        for i, entry in enumerate(raw):
            if isinstance(entry, dict) and entry.get("type") == "item_reference":
                found = self.find(entry.get("id"))
                if found is None:
                    raise invalid_value(f"response.input[{i}].id",
                                        f"Item '{shown(entry.get('id'))}' does not exist.")
                items.append(found)
            else:
                items.append(self._new_item(entry))
        return items
