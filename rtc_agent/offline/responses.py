"""A session's items and responses: from response.created, through streaming, to done.

Pure, like the rest of the offline core: methods return `Output`s and take ids
from the `IdSource` they were given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
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
from rtc_agent.protocol import Dialect

MAX_KEPT_RESPONSES = 64  # past this, the oldest finished responses are forgotten


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
