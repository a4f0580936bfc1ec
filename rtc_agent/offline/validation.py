"""What clients send, checked: event envelopes, session.update, items, response options.

A client mistake raises ProtocolError, which the conversation answers with an `error`
event while the session goes on. Whatever the dialect, the session is kept in the GA
shape, so beta updates are translated here on the way in and the state machine speaks
one vocabulary.
"""

from __future__ import annotations

import base64
import binascii
import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtc_agent.protocol import BYTES_PER_MS, Dialect

JSON = dict[str, Any]

# Client event type -> its fields besides `type` and `event_id`.
CLIENT_EVENTS: dict[str, frozenset[str]] = {
    "session.update": frozenset({"session"}),
    "input_audio_buffer.append": frozenset({"audio"}),
    "input_audio_buffer.commit": frozenset(),
    "input_audio_buffer.clear": frozenset(),
    "conversation.item.create": frozenset({"item", "previous_item_id"}),
    "conversation.item.truncate": frozenset({"item_id", "content_index", "audio_end_ms"}),
    "conversation.item.delete": frozenset({"item_id"}),
    "conversation.item.retrieve": frozenset({"item_id"}),
    "response.create": frozenset({"response"}),
    "response.cancel": frozenset({"response_id"}),
}

DEFAULT_INSTRUCTIONS = (
    "You are an offline test assistant. You do arithmetic, tell the time and date, "
    "greet people, look things up with your tools, and otherwise repeat what you heard."
)
DEFAULT_TURN_DETECTION: JSON = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
EAGERNESS = ("low", "medium", "high", "auto")  # semantic_vad (input_buffer: what each means)
REASONING_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
INCLUDABLE = ("item.input_audio_transcription.logprobs",)  # session.include
PCM_FORMAT = {"type": "audio/pcm", "rate": 24000}
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
READ_ONLY = {"id", "object", "expires_at", "client_secret"}  # echoed back by some clients

# How much one client may store in a session. Where the protocol reference gives the
# service's bound it is used; the others are defensive choices ("defensive" below):
# generous for real clients, small enough that a session stays a few megabytes.
MAX_INSTRUCTIONS_CHARS = 131_072  # defensive: about the 32k-token context of gpt-realtime
MAX_TEXT_CHARS = 131_072  # one text part, transcript, function arguments or output (defensive)
MAX_NAME_CHARS = 64  # function names (OpenAI's function-calling rule), ids, call ids
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]+")  # OpenAI's function-name pattern
MAX_SHORT_CHARS = 256  # model and voice names (defensive)
MAX_TOOLS = 128  # OpenAI's function-calling limit
MAX_TOOL_CHARS = 32_768  # one tool's JSON, its parameter schema included (defensive)
MAX_TOOLS_CHARS = 262_144  # all of a session's or response's tools (defensive)
MAX_JSON_DEPTH = 32  # free-form objects: tool schemas, tracing, prompt... (defensive)
MAX_JSON_CHARS = 16_384  # one free-form object such as tracing or a voice (defensive)
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512  # the reference, 6.3
MAX_CONTENT_PARTS = 32  # parts of one message item (defensive)
MAX_IMAGE_CHARS = 1_048_576  # one input_image part: a data URI (defensive; unused offline)
MAX_ITEM_AUDIO_MS = 60_000  # audio of one client item, as long as a VAD turn (defensive)
MAX_INPUT_ITEMS = 1024  # response.input entries, as many as a conversation keeps (defensive)
MAX_VAD_MS = 60_000  # prefix_padding_ms, silence_duration_ms, idle_timeout_ms (defensive)


class ProtocolError(Exception):
    """A client mistake, answered with an `error` event; the session goes on."""

    def __init__(
        self, code: str | None, message: str, param: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.type = code, message, param, type_


def shown(value: object, limit: int = 128) -> str:
    """A client value for an error message: a string (cut to limit), else its type.

    Never repr(): a hostile value may be nested too deeply to print.
    """
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "..."
    if isinstance(value, float) or (isinstance(value, int) and value.bit_length() < 64):
        return str(value)
    return f"<{type(value).__name__}>"


def unknown(param: str) -> ProtocolError:
    return ProtocolError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def missing(param: str) -> ProtocolError:
    return ProtocolError(
        "missing_required_parameter", f"Missing required parameter: '{param}'.", param
    )


def invalid_type(param: str, expected: str) -> ProtocolError:
    return ProtocolError("invalid_type", f"Invalid type for '{param}': expected {expected}.", param)


def invalid_value(param: str, message: str) -> ProtocolError:
    return ProtocolError("invalid_value", message, param)


def string_too_long(param: str, limit: int, got: int) -> ProtocolError:
    return ProtocolError(
        "string_above_max_length",
        f"Invalid '{param}': string too long. Expected a string with maximum length "
        f"{limit}, but got a string with length {got} instead.", param,
    )


def array_too_long(param: str, limit: int, got: int) -> ProtocolError:
    return ProtocolError(
        "array_above_max_length",
        f"Invalid '{param}': array too long. Expected an array with maximum length "
        f"{limit}, but got an array with length {got} instead.", param,
    )


def bounded_json(value: Any, param: str, max_chars: int = MAX_JSON_CHARS,
                 max_depth: int = MAX_JSON_DEPTH) -> Any:
    """value, if it is plain JSON of at most max_chars (about its JSON text) and
    max_depth levels, with finite numbers only; what passes can be deep-copied and
    serialised."""
    json_size(value, param, max_chars, max_depth)
    return value


def json_size(value: Any, param: str, max_chars: int = MAX_JSON_CHARS,
              max_depth: int = MAX_JSON_DEPTH) -> int:
    """About the length of value's JSON text, or ProtocolError past the bounds.

    Walks without recursion and stops at the first excess, so a hostile value costs no
    more than the bound to reject.
    """
    size = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise invalid_value(param, f"Invalid '{param}': nested too deeply (at most "
                                f"{max_depth} levels).")
        if isinstance(node, dict):
            size += 2 + 2 * len(node)
            for key in node:
                if size > max_chars:
                    break
                if not isinstance(key, str):
                    raise invalid_type(param, "an object with string keys")
                size += len(key)
            if size <= max_chars:
                stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            size += 2 + len(node)
            if size <= max_chars:
                stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str):
            size += len(node) + 2
        elif node is None or isinstance(node, bool):
            size += 5
        elif isinstance(node, int):
            size += node.bit_length() // 3 + 2  # about its decimal digits
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise invalid_value(param, f"Invalid '{param}': numbers must be finite.")
            size += 24
        else:
            raise invalid_type(param, "JSON")
        if size > max_chars:
            raise invalid_value(param, f"Invalid '{param}': the value is too large (at most "
                                f"{max_chars} characters of JSON).")
    return size


# --- client events ----------------------------------------------------------------


def check_client_event(event: object) -> tuple[str, JSON]:
    """The type of a decoded client event and the event itself, if its envelope is valid."""
    if not isinstance(event, dict):
        raise ProtocolError("invalid_event", "Expected a JSON object as the event.")
    kind = event.get("type")
    if kind is None:
        raise ProtocolError("invalid_event", "The 'type' field is missing.")
    if not isinstance(kind, str):  # a list or object here would not even hash
        raise invalid_type("type", "a string")
    if kind not in CLIENT_EVENTS:
        supported = ", ".join(f"'{t}'" for t in CLIENT_EVENTS)
        raise invalid_value("type", f"Invalid value: '{shown(kind)}'. Supported values are: "
                            f"{supported}.")
    for key in event:
        if key not in CLIENT_EVENTS[kind] and key not in ("type", "event_id"):
            raise unknown(key)
    return kind, event


def decode_append(event: JSON) -> bytes:
    """The raw bytes of an input_audio_buffer.append (not yet cut to whole samples)."""
    if "audio" not in event:
        raise missing("audio")
    if not isinstance(event["audio"], str):
        raise invalid_type("audio", "a base64 string")
    try:
        return base64.b64decode(event["audio"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid_value("audio", "Invalid 'audio': expected base64-encoded audio.") from exc


# --- the session --------------------------------------------------------------------


def default_session(model: str) -> JSON:
    """The effective session right after connecting (GA shape, plus beta temperature)."""
    return {
        "type": "realtime",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "audio": {
            "input": {
                "format": dict(PCM_FORMAT),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(DEFAULT_TURN_DETECTION),
            },
            "output": {"format": dict(PCM_FORMAT), "voice": "alloy", "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "temperature": 0.8,
    }


def _check_keys(obj: JSON, allowed: set[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise unknown(f"{prefix}.{key}")


def _as_dict(value: Any, param: str) -> JSON:
    if not isinstance(value, dict):
        raise invalid_type(param, "an object")
    return value


# Fields whose explicit null is a setting of its own ("off"), not "not given".
NULL_MEANS_OFF = frozenset({"turn_detection", "transcription", "noise_reduction", "tracing",
                            "input_audio_transcription", "input_audio_noise_reduction"})


def _given(obj: JSON) -> JSON:
    """The fields of an object that were given: an explicit null counts as absent.

    The SDKs type most fields Optional and some clients send every one of them
    (LiveKit's plugin sends `"instructions": null` in each `response.create`), so
    null means "not given" wherever it has no meaning of its own (NULL_MEANS_OFF)."""
    if all(v is not None for v in obj.values()):
        return obj
    return {k: v for k, v in obj.items() if v is not None or k in NULL_MEANS_OFF}


def _number(value: Any, param: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_type(param, "a number")
    if not lo <= value <= hi:
        raise ProtocolError(
            "decimal_out_of_range" if isinstance(value, float) else "integer_out_of_range",
            f"Invalid '{param}': expected a value between {lo} and {hi}, got {shown(value)}.",
            param,
        )
    return value


def _int(value: Any, param: str, lo: int = 0, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_type(param, "an integer")
    if value < lo:
        raise ProtocolError(
            "integer_below_min_value",
            f"Invalid '{param}': Expected a value >= {lo}, but got {shown(value)} instead.",
            param,
        )
    if hi is not None and value > hi:
        raise ProtocolError(
            "integer_above_max_value",
            f"Invalid '{param}': Expected a value <= {hi}, but got {shown(value)} instead.",
            param,
        )
    return value


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise invalid_type(param, "a boolean")
    return value


def _max_tokens(value: Any, param: str) -> int | str:
    if value == "inf":
        return "inf"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise invalid_value(param, f"Invalid '{param}': expected an integer 1-4096 or 'inf'.")
    return value


def _string(value: Any, param: str, max_chars: int = MAX_SHORT_CHARS) -> str:
    if not isinstance(value, str):
        raise invalid_type(param, "a string")
    if len(value) > max_chars:
        raise string_too_long(param, max_chars, len(value))
    return value


def _voice(value: Any, param: str) -> str | JSON:
    """A voice name or a custom voice object ({"id": ...})."""
    if isinstance(value, dict):
        voice: JSON = copy.deepcopy(bounded_json(value, param))
        return voice
    if not isinstance(value, str):
        raise invalid_type(param, "a string or an object")
    return _string(value, param)


def _metadata(value: Any, param: str) -> JSON | None:
    """Up to 16 string pairs, as the service allows."""
    if value is None:
        return None
    meta = _as_dict(value, param)
    if len(meta) > MAX_METADATA_PAIRS:
        raise invalid_value(param, f"Invalid '{param}': expected at most "
                            f"{MAX_METADATA_PAIRS} pairs, got {len(meta)}.")
    for key, val in meta.items():
        if len(key) > MAX_METADATA_KEY:
            raise string_too_long(f"{param}.{key[:MAX_METADATA_KEY]}", MAX_METADATA_KEY, len(key))
        _string(val, f"{param}.{key}", MAX_METADATA_VALUE)
    return dict(meta)


def _function_name(value: Any, param: str) -> str:
    name = _string(value, param, MAX_NAME_CHARS)
    if not NAME_PATTERN.fullmatch(name):
        raise invalid_value(param, f"Invalid '{param}': string does not match pattern. "
                            "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.")
    return name


def validate_tools(value: Any, param: str) -> list[JSON]:
    if not isinstance(value, list):
        raise invalid_type(param, "an array of objects")
    if len(value) > MAX_TOOLS:
        raise array_too_long(param, MAX_TOOLS, len(value))
    total = 0
    checked: list[JSON] = []
    for i, tool in enumerate(value):
        tool = _given(_as_dict(tool, f"{param}[{i}]"))
        total += json_size(tool, f"{param}[{i}]", MAX_TOOL_CHARS)
        if total > MAX_TOOLS_CHARS:
            raise invalid_value(param, f"Invalid '{param}': the tools are too large (at most "
                                f"{MAX_TOOLS_CHARS} characters of JSON in all).")
        if tool.get("type", "function") not in ("function", "mcp"):
            raise invalid_value(f"{param}[{i}].type", "Supported values are: 'function' and 'mcp'.")
        if tool.get("type", "function") == "function":
            if "name" not in tool:
                raise missing(f"{param}[{i}].name")
            _function_name(tool["name"], f"{param}[{i}].name")
        checked.append(copy.deepcopy(tool))
    return checked


def validate_tool_choice(value: Any, param: str) -> str | JSON:
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            raise invalid_value(param, "Supported values are: 'auto', 'none' and 'required'.")
        return value
    choice = _given(_as_dict(value, param))
    if choice.get("type") not in ("function", "mcp"):
        raise invalid_value(f"{param}.type", "Supported values are: 'function' and 'mcp'.")
    if "name" in choice:
        _string(choice["name"], f"{param}.name", MAX_NAME_CHARS)
    checked: JSON = copy.deepcopy(bounded_json(choice, param))
    return checked


def validate_turn_detection(value: Any, param: str) -> JSON | None:
    """A new turn-detection object, filled with defaults for absent fields."""
    if value is None:
        return None
    td = _given(_as_dict(value, param))
    _check_keys(td, set(DEFAULT_TURN_DETECTION) | {"eagerness"}, param)
    kind = td.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise invalid_value(
            f"{param}.type", "Supported values are: 'server_vad' and 'semantic_vad'."
        )
    out = dict(DEFAULT_TURN_DETECTION, type=kind)
    if kind == "semantic_vad":
        eagerness = td.get("eagerness", "auto")
        if not isinstance(eagerness, str) or eagerness not in EAGERNESS:
            raise invalid_value(f"{param}.eagerness", "Supported values are: 'low', 'medium', "
                                "'high' and 'auto'.")
        out = {"type": kind, "eagerness": eagerness, "create_response": True,
               "interrupt_response": True}
    for key, val in td.items():
        p = f"{param}.{key}"
        if key == "threshold":
            out[key] = _number(val, p, 0.0, 1.0)
        elif key in ("prefix_padding_ms", "silence_duration_ms"):
            out[key] = _int(val, p, 0, MAX_VAD_MS)
        elif key == "idle_timeout_ms":
            out[key] = None if val is None else _int(val, p, 0, MAX_VAD_MS)
        elif key in ("create_response", "interrupt_response"):
            out[key] = _bool(val, p)
    return out


def validate_transcription(value: Any, param: str) -> JSON | None:
    if value is None:
        return None
    tr = copy.deepcopy(bounded_json(_given(_as_dict(value, param)), param))
    _check_keys(tr, {"model", "language", "prompt", "delay", "keywords", "languages"}, param)
    return {"model": tr.get("model", "whisper-1"), **{k: v for k, v in tr.items() if k != "model"}}


def validate_noise_reduction(value: Any, param: str) -> JSON | None:
    if value is None:
        return None
    nr = _given(_as_dict(value, param))
    if "type" not in nr:  # {} or {"type": null}: no kind of noise reduction asked for
        return None
    if nr.get("type") not in ("near_field", "far_field"):
        raise invalid_value(f"{param}.type", "Supported values are: 'near_field' and 'far_field'.")
    return dict(copy.deepcopy(bounded_json(nr, param)))


def validate_ga_format(value: Any, param: str) -> JSON:
    fmt = _given(_as_dict(value, param))
    _check_keys(fmt, {"type", "rate"}, param)
    if fmt.get("type") != "audio/pcm":
        # The offline backend only decodes and produces pcm16; say so rather than emit noise.
        raise invalid_value(f"{param}.type", "The offline backend supports only 'audio/pcm'.")
    rate = fmt.get("rate", 24000)
    if rate != 24000:
        raise ProtocolError(
            "integer_below_min_value" if isinstance(rate, int) and rate < 24000
            else "invalid_value",
            f"Invalid '{param}.rate': Expected a value >= 24000, but got {shown(rate)} instead.",
            f"{param}.rate",
        )
    return dict(PCM_FORMAT)


def validate_beta_format(value: Any, param: str) -> JSON:
    if not isinstance(value, str) or value not in BETA_FORMATS:
        raise invalid_value(param, "Supported values are: 'pcm16', 'g711_ulaw' and 'g711_alaw'.")
    if value != "pcm16":
        raise invalid_value(param, "The offline backend supports only 'pcm16'.")
    return dict(PCM_FORMAT)


def _ga_modalities(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(m in ("text", "audio") for m in value) or not value:
        raise invalid_value(param, "Supported values are: ['audio'] and ['text'].")
    if len(set(value)) > 1:
        raise invalid_value(param, "Only one output modality is allowed: ['audio'] or ['text'].")
    return [value[0]]


def _beta_modalities(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(m in ("text", "audio") for m in value):
        raise invalid_value(param, "Supported values are: 'text' and 'audio'.")
    return ["audio"] if "audio" in value else ["text"]


def apply_session_update(dialect: Dialect, current: JSON, update: Any) -> JSON:
    """A new effective session (GA shape) from a partial update, or ProtocolError.

    Works on a copy, so a rejected update leaves the session untouched.
    """
    upd = _as_dict(update, "session")
    new = copy.deepcopy(current)
    if dialect is Dialect.BETA:
        _apply_beta(new, upd)
    else:
        _apply_ga(new, upd)
    return new


def _apply_ga(s: JSON, upd: JSON) -> None:
    upd = _given(upd)
    allowed = {
        "type", "model", "output_modalities", "instructions", "audio", "include", "tools",
        "tool_choice", "max_output_tokens", "tracing", "truncation", "prompt", "reasoning",
        "parallel_tool_calls",
    } | READ_ONLY
    _check_keys(upd, allowed, "session")
    if "type" not in upd:
        raise missing("session.type")
    if upd["type"] != "realtime":
        if upd["type"] == "transcription":
            raise invalid_value(
                "session.type",
                "The offline backend serves realtime sessions only, not 'transcription'.",
            )
        raise invalid_value("session.type", "Supported values are: 'realtime' and 'transcription'.")
    _apply_common(s, upd, "max_output_tokens")
    if "output_modalities" in upd:
        s["output_modalities"] = _ga_modalities(upd["output_modalities"],
                                                "session.output_modalities")
    if "truncation" in upd:
        s["truncation"] = validate_truncation(upd["truncation"], "session.truncation")
    if "prompt" in upd:
        s["prompt"] = validate_prompt(upd["prompt"], "session.prompt")
    if "reasoning" in upd:
        s["reasoning"] = validate_reasoning(upd["reasoning"], "session.reasoning")
    if "parallel_tool_calls" in upd:
        s["parallel_tool_calls"] = _bool(upd["parallel_tool_calls"],
                                         "session.parallel_tool_calls")
    if "audio" not in upd:
        return
    audio = _given(_as_dict(upd["audio"], "session.audio"))
    _check_keys(audio, {"input", "output"}, "session.audio")
    if "input" in audio:
        inp = _given(_as_dict(audio["input"], "session.audio.input"))
        p = "session.audio.input"
        _check_keys(inp, {"format", "transcription", "noise_reduction", "turn_detection"}, p)
        cur = s["audio"]["input"]
        if "format" in inp:
            cur["format"] = validate_ga_format(inp["format"], f"{p}.format")
        if "transcription" in inp:
            cur["transcription"] = validate_transcription(inp["transcription"],
                                                          f"{p}.transcription")
        if "noise_reduction" in inp:
            cur["noise_reduction"] = validate_noise_reduction(inp["noise_reduction"],
                                                              f"{p}.noise_reduction")
        if "turn_detection" in inp:
            cur["turn_detection"] = validate_turn_detection(inp["turn_detection"],
                                                            f"{p}.turn_detection")
    if "output" in audio:
        out = _given(_as_dict(audio["output"], "session.audio.output"))
        p = "session.audio.output"
        _check_keys(out, {"format", "voice", "speed"}, p)
        cur = s["audio"]["output"]
        if "format" in out:
            cur["format"] = validate_ga_format(out["format"], f"{p}.format")
        if "voice" in out:
            cur["voice"] = _voice(out["voice"], f"{p}.voice")
        if "speed" in out:
            cur["speed"] = _number(out["speed"], f"{p}.speed", 0.25, 1.5)


def _apply_beta(s: JSON, upd: JSON) -> None:
    upd = _given(upd)
    allowed = {
        "modalities", "instructions", "voice", "input_audio_format", "output_audio_format",
        "input_audio_transcription", "input_audio_noise_reduction", "turn_detection",
        "tools", "tool_choice", "temperature", "max_response_output_tokens", "speed",
        "tracing", "model", "include",
    } | READ_ONLY
    _check_keys(upd, allowed, "session")
    _apply_common(s, upd, "max_response_output_tokens")
    inp, out = s["audio"]["input"], s["audio"]["output"]
    if "modalities" in upd:
        s["output_modalities"] = _beta_modalities(upd["modalities"], "session.modalities")
    if "voice" in upd:
        out["voice"] = _string(upd["voice"], "session.voice")
    if "speed" in upd:
        out["speed"] = _number(upd["speed"], "session.speed", 0.25, 1.5)
    if "temperature" in upd:
        s["temperature"] = _number(upd["temperature"], "session.temperature", 0.6, 1.2)
    if "input_audio_format" in upd:
        inp["format"] = validate_beta_format(upd["input_audio_format"],
                                             "session.input_audio_format")
    if "output_audio_format" in upd:
        out["format"] = validate_beta_format(upd["output_audio_format"],
                                             "session.output_audio_format")
    if "input_audio_transcription" in upd:
        inp["transcription"] = validate_transcription(upd["input_audio_transcription"],
                                                      "session.input_audio_transcription")
    if "input_audio_noise_reduction" in upd:
        inp["noise_reduction"] = validate_noise_reduction(upd["input_audio_noise_reduction"],
                                                          "session.input_audio_noise_reduction")
    if "turn_detection" in upd:
        td = upd["turn_detection"]
        if isinstance(td, dict) and td.get("type") == "none":  # Azure preview spelling
            td = None
        inp["turn_detection"] = validate_turn_detection(td, "session.turn_detection")


def _apply_common(s: JSON, upd: JSON, max_tokens_key: str) -> None:
    if "model" in upd:
        s["model"] = _string(upd["model"], "session.model")
    if "instructions" in upd:
        s["instructions"] = _string(upd["instructions"], "session.instructions",
                                    MAX_INSTRUCTIONS_CHARS)
    if "tools" in upd:
        s["tools"] = validate_tools(upd["tools"], "session.tools")
    if "tool_choice" in upd:
        s["tool_choice"] = validate_tool_choice(upd["tool_choice"], "session.tool_choice")
    if max_tokens_key in upd:
        s["max_output_tokens"] = _max_tokens(upd[max_tokens_key], f"session.{max_tokens_key}")
    if "tracing" in upd:
        s["tracing"] = validate_tracing(upd["tracing"], "session.tracing")
    if "include" in upd:
        s["include"] = validate_include(upd["include"], "session.include")


# --- settings the offline backend accepts and echoes without acting on them ----------
# Each is checked for the shape the SDK's models give it (bounded, its nulls "not given")
# and kept as given: session.updated echoes it as the service does.


def _kept(value: JSON, param: str) -> JSON:
    """A checked object, copied (bounded) with its nulls dropped."""
    kept: JSON = copy.deepcopy(bounded_json(_given(value), param))
    return kept


def validate_prompt(value: Any, param: str) -> JSON:
    """A stored prompt: {id, version?, variables?}; variables are strings or input objects."""
    prompt = _given(_as_dict(value, param))
    _check_keys(prompt, {"id", "version", "variables"}, param)
    if "id" not in prompt:
        raise missing(f"{param}.id")
    _string(prompt["id"], f"{param}.id")
    if "version" in prompt:
        _string(prompt["version"], f"{param}.version")
    if "variables" in prompt:
        for name, var in _as_dict(prompt["variables"], f"{param}.variables").items():
            if not isinstance(var, str | dict):
                raise invalid_type(f"{param}.variables.{shown(name, MAX_NAME_CHARS)}",
                                   "a string or an object")
    return _kept(prompt, param)


def validate_reasoning(value: Any, param: str) -> JSON:
    """{effort?}: one of REASONING_EFFORTS."""
    reasoning = _given(_as_dict(value, param))
    _check_keys(reasoning, {"effort"}, param)
    if "effort" in reasoning and reasoning["effort"] not in REASONING_EFFORTS:
        raise invalid_value(f"{param}.effort", "Supported values are: "
                            + ", ".join(f"'{e}'" for e in REASONING_EFFORTS) + ".")
    return _kept(reasoning, param)


def validate_truncation(value: Any, param: str) -> str | JSON:
    """'auto', 'disabled' or {type: 'retention_ratio', retention_ratio: 0-1,
    token_limits?: {post_instructions?}}."""
    if isinstance(value, str):
        if value not in ("auto", "disabled"):
            raise invalid_value(param, "Supported values are: 'auto', 'disabled' and an "
                                "object of type 'retention_ratio'.")
        return value
    trunc = _given(_as_dict(value, param))
    _check_keys(trunc, {"type", "retention_ratio", "token_limits"}, param)
    if trunc.get("type") != "retention_ratio":
        raise invalid_value(f"{param}.type", "Supported values are: 'retention_ratio'.")
    if "retention_ratio" not in trunc:
        raise missing(f"{param}.retention_ratio")
    _number(trunc["retention_ratio"], f"{param}.retention_ratio", 0.0, 1.0)
    if "token_limits" in trunc:
        limits = _given(_as_dict(trunc["token_limits"], f"{param}.token_limits"))
        _check_keys(limits, {"post_instructions"}, f"{param}.token_limits")
        if "post_instructions" in limits:
            _int(limits["post_instructions"], f"{param}.token_limits.post_instructions", 0)
    return _kept(trunc, param)


def validate_tracing(value: Any, param: str) -> str | JSON | None:
    """null (off), 'auto' or {workflow_name?, group_id?, metadata?}."""
    if value is None:
        return None
    if isinstance(value, str):
        if value != "auto":
            raise invalid_value(param, "Supported values are: 'auto', an object and null.")
        return value
    tracing = _given(_as_dict(value, param))
    _check_keys(tracing, {"workflow_name", "group_id", "metadata"}, param)
    for key in ("workflow_name", "group_id"):
        if key in tracing:
            _string(tracing[key], f"{param}.{key}")
    return _kept(tracing, param)


def validate_include(value: Any, param: str) -> list[str]:
    """Extra output fields: only INCLUDABLE (at most once each)."""
    if not isinstance(value, list):
        raise invalid_type(param, "an array of strings")
    for i, entry in enumerate(value):
        if entry not in INCLUDABLE:
            raise invalid_value(f"{param}[{i}]", "Supported values are: "
                                + ", ".join(f"'{e}'" for e in INCLUDABLE) + ".")
    return list(dict.fromkeys(value))


# --- responses ----------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseOptions:
    """What one response is generated with: the session's settings, overridden per response."""

    modalities: list[str]  # ["audio"] or ["text"]
    instructions: str
    voice: str | JSON
    tools: list[JSON]
    tool_choice: str | JSON
    max_output_tokens: int | str
    temperature: float
    conversation: str  # "auto": part of the conversation; "none": out of band
    metadata: JSON | None
    input: list[Any] | None  # replaces the conversation as context when given
    # response.create's own instructions (None: the session's apply): the responder
    # follows fixed-words instructions only when they were given for this response.
    response_instructions: str | None = None


def parse_response_options(dialect: Dialect, value: Any, session: JSON) -> ResponseOptions:
    """Per-response overrides from response.create (None: none), merged over the session."""
    opts: JSON = {
        "modalities": list(session["output_modalities"]),
        "instructions": session["instructions"],
        "voice": session["audio"]["output"]["voice"],
        # Shared, not copied: a session's objects are replaced by updates, never changed
        # in place, and a copy per response would multiply a large tool list.
        "tools": session["tools"],
        "tool_choice": session["tool_choice"],
        "max_output_tokens": session["max_output_tokens"],
        "temperature": session["temperature"],
        "conversation": "auto",
        "metadata": None,
        "input": None,
        "response_instructions": None,
    }
    if value is None:
        return ResponseOptions(**opts)
    r = _given(_as_dict(value, "response"))
    common = {"instructions", "tools", "tool_choice", "conversation", "metadata", "input",
              "prompt"}
    if dialect is Dialect.BETA:
        allowed = common | {"modalities", "voice", "output_audio_format", "temperature",
                            "max_response_output_tokens"}
    else:
        allowed = common | {"output_modalities", "audio", "max_output_tokens", "reasoning",
                            "parallel_tool_calls"}
    _check_keys(r, allowed, "response")
    if "instructions" in r:
        opts["instructions"] = opts["response_instructions"] = _string(
            r["instructions"], "response.instructions", MAX_INSTRUCTIONS_CHARS)
    if "prompt" in r:
        validate_prompt(r["prompt"], "response.prompt")
    if "tools" in r:
        opts["tools"] = validate_tools(r["tools"], "response.tools")
    if "tool_choice" in r:
        opts["tool_choice"] = validate_tool_choice(r["tool_choice"], "response.tool_choice")
    if "conversation" in r:
        if r["conversation"] not in ("auto", "none"):
            raise invalid_value("response.conversation", "Supported values are: 'auto' and "
                                "'none'.")
        opts["conversation"] = r["conversation"]
    if "metadata" in r:
        opts["metadata"] = _metadata(r["metadata"], "response.metadata")
    if "input" in r:
        if not isinstance(r["input"], list):
            raise invalid_type("response.input", "an array")
        if len(r["input"]) > MAX_INPUT_ITEMS:
            raise array_too_long("response.input", MAX_INPUT_ITEMS, len(r["input"]))
        opts["input"] = r["input"]
    if dialect is Dialect.BETA:
        if "modalities" in r:
            opts["modalities"] = _beta_modalities(r["modalities"], "response.modalities")
        if "voice" in r:
            opts["voice"] = _string(r["voice"], "response.voice")
        if "output_audio_format" in r:
            validate_beta_format(r["output_audio_format"], "response.output_audio_format")
        if "temperature" in r:
            opts["temperature"] = _number(r["temperature"], "response.temperature", 0.6, 1.2)
        if "max_response_output_tokens" in r:
            opts["max_output_tokens"] = _max_tokens(r["max_response_output_tokens"],
                                                    "response.max_response_output_tokens")
    else:
        if "output_modalities" in r:
            opts["modalities"] = _ga_modalities(r["output_modalities"],
                                                "response.output_modalities")
        if "max_output_tokens" in r:
            opts["max_output_tokens"] = _max_tokens(r["max_output_tokens"],
                                                    "response.max_output_tokens")
        if "reasoning" in r:
            validate_reasoning(r["reasoning"], "response.reasoning")
        if "parallel_tool_calls" in r:
            _bool(r["parallel_tool_calls"], "response.parallel_tool_calls")
        if "audio" in r:
            audio = _given(_as_dict(r["audio"], "response.audio"))
            _check_keys(audio, {"output"}, "response.audio")
            out = _given(_as_dict(audio.get("output", {}), "response.audio.output"))
            _check_keys(out, {"format", "voice"}, "response.audio.output")
            if "format" in out:
                validate_ga_format(out["format"], "response.audio.output.format")
            if "voice" in out:
                opts["voice"] = _voice(out["voice"], "response.audio.output.voice")
    return ResponseOptions(**opts)


# --- items --------------------------------------------------------------------------


@dataclass(frozen=True)
class NewItem:
    """A client's conversation item, validated: its GA-shaped JSON and what the server keeps."""

    data: JSON
    audio: bytes | None  # pcm16 of an input_audio part
    heard: str | None  # the item's text for the responder; None until audio is recognised


def _optional_id(raw: JSON, key: str, prefix: str, new_id: Callable[[str], str]) -> str:
    """A client-chosen id (a string of at most MAX_NAME_CHARS) or a new one."""
    value = raw.get(key)
    if value is None or value == "":
        return new_id(prefix)
    return _string(value, f"item.{key}", MAX_NAME_CHARS)


def validate_item(raw: Any, new_id: Callable[[str], str]) -> NewItem:
    """An item from conversation.item.create (or response.input); new_id fills missing ids."""
    if not isinstance(raw, dict):
        raise invalid_type("item", "an object")
    kind = raw.get("type")
    if kind is None:
        raise missing("item.type")
    common = {"id", "type", "object", "status"}
    if kind == "function_call_output":
        for key in raw:
            if key not in common | {"call_id", "output"}:
                raise unknown(f"item.{key}")
        for key in ("call_id", "output"):
            if key not in raw:
                raise missing(f"item.{key}")
        call_id = _string(raw["call_id"], "item.call_id", MAX_NAME_CHARS)
        output = _string(raw["output"], "item.output", MAX_TEXT_CHARS)
        return NewItem({"id": _optional_id(raw, "id", "item", new_id), "type": kind,
                        "object": "realtime.item", "status": "completed", "call_id": call_id,
                        "output": output}, None, None)
    if kind == "function_call":
        for key in raw:
            if key not in common | {"call_id", "name", "arguments"}:
                raise unknown(f"item.{key}")
        for key in ("name", "arguments"):
            if not isinstance(raw.get(key), str):
                raise missing(f"item.{key}")
        name = _string(raw["name"], "item.name", MAX_NAME_CHARS)
        arguments = _string(raw["arguments"], "item.arguments", MAX_TEXT_CHARS)
        return NewItem({"id": _optional_id(raw, "id", "item", new_id), "type": kind,
                        "object": "realtime.item", "status": "completed",
                        "call_id": _optional_id(raw, "call_id", "call", new_id),
                        "name": name, "arguments": arguments}, None, None)
    if kind != "message":
        raise invalid_value("item.type", f"Invalid value: '{shown(kind)}'. Supported values are: "
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
    if len(content) > MAX_CONTENT_PARTS:
        raise array_too_long("item.content", MAX_CONTENT_PARTS, len(content))
    item_id = _optional_id(raw, "id", "item", new_id)
    allowed = {
        "user": ("input_text", "input_audio", "input_image"),
        "system": ("input_text",),
        "assistant": ("text", "output_text", "audio", "output_audio"),
    }[role]
    parts: list[JSON] = []
    audio: bytes | None = None
    heard_parts: list[str] = []
    for i, part in enumerate(content):
        ptype = part.get("type")
        if ptype not in allowed:
            raise invalid_value(
                f"item.content[{i}].type",
                f"Invalid value: '{shown(ptype)}'. Supported values are: "
                + ", ".join(f"'{a}'" for a in sorted(allowed)) + ".",
            )
        if ptype in ("audio", "output_audio"):
            raise invalid_value(f"item.content[{i}].type",
                                "Assistant audio items cannot be created by the client.")
        if ptype in ("input_text", "text", "output_text"):
            if not isinstance(part.get("text"), str):
                raise missing(f"item.content[{i}].text")
            text = _string(part["text"], f"item.content[{i}].text", MAX_TEXT_CHARS)
            heard_parts.append(text)
            parts.append({"type": "output_text" if role == "assistant" else "input_text",
                          "text": text})
        elif ptype == "input_audio":
            audio = _input_audio(part.get("audio"), f"item.content[{i}].audio")
            transcript = part.get("transcript")
            if transcript is not None:
                transcript = _string(transcript, f"item.content[{i}].transcript",
                                     MAX_TEXT_CHARS)
                heard_parts.append(transcript)
            parts.append({"type": "input_audio", "transcript": transcript})
        else:
            image = bounded_json(part, f"item.content[{i}]", MAX_IMAGE_CHARS)
            parts.append(copy.deepcopy(image))
    data = {"id": item_id, "type": "message", "object": "realtime.item",
            "status": "completed", "role": role, "content": parts}
    heard = " ".join(heard_parts) if heard_parts or audio is None else None
    return NewItem(data, audio, heard)


def _input_audio(value: Any, param: str) -> bytes:
    """The pcm16 of an input_audio part (whole samples, at most MAX_ITEM_AUDIO_MS)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise invalid_type(param, "a base64 string")
    limit = MAX_ITEM_AUDIO_MS * BYTES_PER_MS
    if len(value) // 4 * 3 > limit + 3:
        raise invalid_value(param, f"Invalid '{param}': at most {MAX_ITEM_AUDIO_MS} ms of "
                            "audio per item.")
    try:
        pcm = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid_value(param, "Invalid audio: expected base64.") from exc
    return pcm[: len(pcm) - len(pcm) % 2]
