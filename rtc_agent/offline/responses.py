"""A session's items and responses: from response.created, through streaming, to done.

Pure, like the rest of the offline core: methods return `Output`s and take ids
from the `IdSource` they were given.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from rtc_agent.offline.audio import b64encode, chunks, duration_ms
from rtc_agent.offline.outputs import (
    CancelResponse,
    Emit,
    IdSource,
    Output,
    StartResponse,
    event,
)
from rtc_agent.offline.rendering import (
    announces_item_done,
    event_name,
    item_out,
    names_function_in_arguments_done,
    rate_limits,
    response_out,
)
from rtc_agent.offline.validation import JSON, ResponseOptions
from rtc_agent.protocol import BYTES_PER_MS, Dialect

MAX_KEPT_RESPONSES = 64  # past this, the oldest finished responses are forgotten
# Out-of-band (conversation "none") responses in progress at once in one session. The
# service runs them "in parallel" with no documented cap; each costs synthesis here, so
# a small defensive number keeps one client from starving the other sessions.
MAX_OUT_OF_BAND = 4
# Audio one reply item keeps while it streams (its duration is counted on regardless,
# so a truncate still clamps right); finished items are bounded by the ItemStore.
MAX_REPLY_AUDIO_MS = 2 * 60_000


@dataclass(eq=False)  # items are compared by identity: two items may hold equal JSON
class Item:
    """A conversation item: its GA-shaped JSON plus what the server keeps beside it."""

    data: JSON
    audio: bytearray | None = None  # pcm16 24 kHz of the input_audio / output_audio part
    heard: str | None = None  # what the recogniser understood; None: user audio not yet
    audio_ms: int = 0  # duration of its audio, kept when the bytes are freed
    stored: int = 0  # bytes of `audio` the ItemStore counts (0: none, or freed)
    chars: int = 0  # text the ItemStore counts
    counted: bool = False  # the ItemStore counts it (user and client items at once,
    #                        reply items when their response closes them)
    idle: bool = False  # the empty user turn an idle timeout committed

    @property
    def id(self) -> str:
        item_id: str = self.data["id"]
        return item_id


def _index(items: list[Item], item: Item) -> int:
    """Position of item in items, by identity."""
    return next(i for i, other in enumerate(items) if other is item)


def text_chars(data: JSON) -> int:
    """About how much text an item holds (its strings), for the store's text bound."""
    total = 0
    for key in ("name", "arguments", "output"):
        value = data.get(key)
        if isinstance(value, str):
            total += len(value)
    for part in data.get("content") or ():
        total += sum(len(v) for v in part.values() if isinstance(v, str))
    return total


class ItemStore:
    """The conversation's items in order, bounded in count, text and audio.

    Past max_audio_bytes the audio counted first is freed first, user and reply audio
    alike (an item outlives its audio: retrieve then has none, truncate still clamps to
    `audio_ms`); past max_items or max_chars the oldest items are forgotten, as the
    service drops old items from a full context. Reply items are counted once their
    response closes them, so a reply being streamed is never cut (MAX_REPLY_AUDIO_MS
    bounds it). Lookups by id are O(1) and bounding is amortised O(1) per item added, so
    a turn costs the same in the first minute and after an hour.
    """

    def __init__(self, max_items: int, max_audio_bytes: int, max_chars: int) -> None:
        self.items: list[Item] = []
        self.max_items, self.max_audio_bytes, self.max_chars = max_items, max_audio_bytes, \
            max_chars
        self.audio_bytes = 0  # counted audio
        self.chars = 0  # counted text
        self._ids: dict[str, list[Item]] = {}  # id -> items with it (ids may repeat)
        self._audio: deque[Item] = deque()  # items whose audio was counted, oldest first

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def last_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    def find(self, item_id: object) -> Item | None:
        """The first item added with this id that is still there."""
        same = self._ids.get(item_id) if isinstance(item_id, str) else None
        return same[0] if same else None

    def position(self, item: Item) -> int:
        """Where the item is, or -1. Searched from the end, where items are looked up."""
        for i in range(len(self.items) - 1, -1, -1):
            if self.items[i] is item:
                return i
        return -1

    def holds(self, item: Item) -> bool:
        return any(i is item for i in self._ids.get(item.id, ()))

    def insert(self, index: int, item: Item, complete: bool = True) -> None:
        """Add an item at index; a complete one counts against the bounds at once."""
        self.items.insert(index, item)
        self._ids.setdefault(item.id, []).append(item)
        if complete:
            self._count(item)
            self._bound(keep=item)

    def append(self, item: Item, complete: bool = True) -> None:
        self.insert(len(self.items), item, complete)

    def complete(self, item: Item) -> None:
        """A reply item is final: count its text and audio from now on."""
        if self.holds(item) and not item.counted:
            self._count(item)
            self._bound(keep=item)

    def remove(self, item: Item) -> None:
        index = self.position(item)
        if index >= 0:
            self._drop(index)

    def truncated(self, item: Item, removed_bytes: int) -> None:
        """Audio was cut off the end of an item."""
        if item.stored:
            cut = min(removed_bytes, item.stored)
            item.stored -= cut
            self.audio_bytes -= cut

    def _count(self, item: Item) -> None:
        item.counted = True
        item.chars = text_chars(item.data)
        self.chars += item.chars
        if item.audio:
            item.stored = len(item.audio)
            self.audio_bytes += item.stored
            self._audio.append(item)

    def _free_audio(self, item: Item) -> None:
        self.audio_bytes -= item.stored
        item.stored = 0
        item.audio = None

    def _drop(self, index: int) -> None:
        item = self.items.pop(index)
        same = self._ids[item.id]
        same[:] = [i for i in same if i is not item]
        if not same:
            del self._ids[item.id]
        self.chars -= item.chars
        item.chars = 0
        if item.stored:
            self._free_audio(item)  # its queue entry goes when reached (or compacted)

    def _bound(self, keep: Item) -> None:
        while self.audio_bytes > self.max_audio_bytes and self._audio:
            oldest = self._audio.popleft()
            if oldest.stored:
                self._free_audio(oldest)
        if len(self._audio) > 2 * len(self.items) + 16:  # entries of removed or freed items
            self._audio = deque(i for i in self._audio if i.stored)
        while (len(self.items) > self.max_items or self.chars > self.max_chars) \
                and len(self.items) > 1:
            self._drop(1 if self.items[0] is keep else 0)


@dataclass
class Turn:
    """One conversation entry as the responder sees it."""

    role: str  # user | assistant | system | tool
    kind: str  # message | function_call | function_call_output
    text: str = ""
    name: str = ""
    call_id: str = ""
    arguments: str = ""
    idle: bool = False  # an idle timeout's empty user turn: the caller said nothing


@dataclass
class ResponderInput:
    """What the responder answers: the response's options and its context as turns."""

    instructions: str
    tools: list[JSON]
    tool_choice: str | JSON
    modalities: list[str]
    turns: list[Turn]
    response_instructions: str | None = None  # given in response.create itself


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


class Responses:
    """The session's responses, from response.created through streaming to response.done.

    Output items of in-conversation responses join the conversation's ItemStore,
    which is shared with the Conversation. Out-of-band replies keep no audio (no
    client can retrieve or truncate them), and a finished response keeps only what
    its id needs: a history of them is cheap.
    """

    def __init__(self, dialect: Dialect, new_id: IdSource, items: ItemStore,
                 conversation_id: str,
                 on_done: Callable[[Response], None] | None = None) -> None:
        self.dialect = dialect
        self._on_done = on_done  # told of every response that ends, as it ends
        self._new_id = new_id
        self._items = items
        self._conversation_id = conversation_id
        self._by_id: dict[str, Response] = {}
        self._running: dict[str, Response] = {}
        self.active_id: str | None = None  # the in-conversation response in progress

    def _event(self, type_: str, **fields: Any) -> Emit:
        return event(self._new_id, type_, **fields)

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
        for resp in self._running.values():
            if resp.message is item:
                return resp
        return None

    def out_of_band_in_progress(self) -> list[str]:
        """Ids of the out-of-band responses still in progress."""
        return [r.id for r in self._running.values() if not r.in_conversation]

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
                turns.append(Turn(d["role"], "message", text=item.heard or "", idle=item.idle))
        opts = resp.opts
        tools = [] if opts.tool_choice == "none" else opts.tools
        return ResponderInput(opts.instructions, tools, opts.tool_choice, opts.modalities, turns,
                              opts.response_instructions)

    def pending_recognition(self, response_id: str) -> list[str]:
        """Ids of user audio items in the response's context not yet recognised (whether
        or not their audio is still stored)."""
        resp = self._by_id[response_id]
        return [i.id for i in resp.context if i.heard is None and i.data.get("role") == "user"]

    # --- lifecycle ------------------------------------------------------------------

    def start(self, opts: ResponseOptions, context: list[Item]) -> list[Output]:
        resp = Response(id=self._new_id("resp"), opts=opts, context=context)
        self._by_id[resp.id] = resp
        self._running[resp.id] = resp
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
            if text:
                out.append(self._event(self._name("response.output_audio_transcript.delta"),
                                       delta=text, **ids))
            keep = MAX_REPLY_AUDIO_MS * BYTES_PER_MS
            for piece in chunks(audio, 100):
                if message.audio is not None and len(message.audio) < keep:
                    message.audio.extend(piece[: keep - len(message.audio)])
                message.audio_ms += duration_ms(piece)
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
        # Only conversation items keep their audio: retrieve and truncate need them.
        item = Item({"id": self._new_id("item"), "type": "message", "object": "realtime.item",
                     "status": "in_progress", "role": "assistant", "content": []},
                    audio=bytearray() if resp.speaks and resp.in_conversation else None)
        part = {"type": "audio", "transcript": ""} if resp.speaks else {"type": "text", "text": ""}
        out = self._open_output(resp, item)
        out.append(self._event("response.content_part.added", response_id=resp.id,
                               item_id=item.id, output_index=len(resp.output) - 1,
                               content_index=0, part=part))
        return out

    def _open_output(self, resp: Response, item: Item) -> list[Output]:
        """output_item.added, then the item's conversation event (beta created / GA added)."""
        previous = self._items.last_id()
        resp.output.append(item)
        resp.message = item if item.data["type"] == "message" else None
        resp.text = ""
        out: list[Output] = [self._event("response.output_item.added", response_id=resp.id,
                                         output_index=len(resp.output) - 1,
                                         item=item_out(self.dialect, item.data))]
        if resp.in_conversation:
            self._items.append(item, complete=False)
            out.append(self._event(self._name("conversation.item.added"),
                                   previous_item_id=previous,
                                   item=item_out(self.dialect, item.data)))
        return out

    def _close_output(self, resp: Response, item: Item, status: str) -> list[Output]:
        item.data["status"] = status
        out: list[Output] = []
        if resp.in_conversation:
            self._items.complete(item)
        if resp.in_conversation and announces_item_done(self.dialect):
            idx = self._items.position(item)
            prev = self._items.items[idx - 1].id if idx > 0 else None
            out.append(self._event("conversation.item.done", previous_item_id=prev,
                                   item=item_out(self.dialect, item.data)))
        out.append(self._event("response.output_item.done", response_id=resp.id,
                               output_index=_index(resp.output, item),
                               item=item_out(self.dialect, item.data)))
        return out

    def _close_message(self, resp: Response, status: str) -> list[Output]:
        item = resp.message
        if item is None:
            return []
        resp.message = None
        ids = {"response_id": resp.id, "item_id": item.id,
               "output_index": _index(resp.output, item), "content_index": 0}
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
        self._running.pop(resp.id, None)
        if self.active_id == resp.id:
            self.active_id = None
        out: list[Output] = [
            self._event("response.done", response=self._out(resp)),
            self._event("rate_limits.updated", rate_limits=rate_limits(self.dialect)),
        ]
        # A finished response keeps its id, status and output JSON, nothing heavy: no
        # context (audio), tools, instructions or inline input.
        resp.context = []
        resp.message = None
        resp.opts = replace(resp.opts, tools=[], instructions="", input=None,
                            response_instructions=None)
        for item in resp.output:
            if not resp.in_conversation:
                item.audio = None
        # Keep a bounded history of finished responses (ids only matter while active).
        if len(self._by_id) > MAX_KEPT_RESPONSES:
            finished = [r for r, v in self._by_id.items() if v.status != "in_progress"]
            for rid in finished[: MAX_KEPT_RESPONSES // 2]:
                del self._by_id[rid]
        if self._on_done is not None:
            self._on_done(resp)
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
        in_text = sum(text_chars(i.data) for i in resp.context) // 4
        in_audio = sum(i.audio_ms for i in resp.context) // 100
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
