"""The backend's "brain": deterministic rules by default, or any chat-completions LLM.

A responder reads a ResponderInput (instructions, tools, the conversation as turns)
and yields reply text fragments and/or FunctionCall objects. The rules give tests
known answers: fixed words when a response's instructions say so (`say_exactly`),
arithmetic in words, the time and date, greetings, a call of any declared tool the user
names ("use the tool <name> with <argument>"), tool calls for "search for ..." requests,
long replies on request, a prompt after an idle timeout, else "I heard: ...".
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rtc_agent.offline.responses import ResponderInput, Turn
from rtc_agent.protocol import parse_say_exactly


@dataclass
class FunctionCall:
    name: str
    arguments: str  # JSON text
    call_id: str | None = None


ReplyPart = str | FunctionCall


class Responder(Protocol):
    def reply(self, request: ResponderInput) -> AsyncIterator[ReplyPart]: ...


# --- numbers in words ---------------------------------------------------------------

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
          "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
          "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand"),
           (100, "hundred")]
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS)} | {
    w: i * 10 for i, w in enumerate(_TENS) if w
} | {"oh": 0, "a": 1}
_SCALE_VALUES = {"hundred": 100, "thousand": 1000, "million": 1_000_000,
                 "billion": 1_000_000_000}


def number_to_words(n: int) -> str:
    """84 -> "eighty-four"; -3 -> "minus three"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _UNITS[n]
    if n < 100:
        tens, rest = divmod(n, 10)
        return _TENS[tens] + ("-" + _UNITS[rest] if rest else "")
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            words = f"{number_to_words(head)} {name}"
            if rest:
                words += (" and " if rest < 100 and value == 100 else " ") + number_to_words(rest)
            return words
    raise AssertionError("unreachable")


def decimal_to_words(x: float) -> str:
    """2.5 -> "two point five" (at most three decimals)."""
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    if "." not in text:
        return number_to_words(int(text))
    whole, frac = text.split(".")
    sign = "minus " if whole.startswith("-") else ""
    whole_words = number_to_words(abs(int(whole)))
    return f"{sign}{whole_words} point " + " ".join(_UNITS[int(d)] for d in frac)


def _parse_number(tokens: list[str]) -> int | None:
    """Words or digits ("twenty one", "21", "one hundred and five") -> int."""
    if not tokens:
        return None
    if len(tokens) == 1 and re.fullmatch(r"-?\d+", tokens[0]):
        return int(tokens[0])
    total, current, seen = 0, 0, False
    negative = False
    for tok in tokens:
        if tok in ("minus", "negative") and not seen:
            negative = True
        elif tok == "and" and seen:
            continue
        elif tok in _WORD_VALUES and not (tok == "a" and seen):
            current += _WORD_VALUES[tok]
            seen = True
        elif tok in _SCALE_VALUES and seen:
            if _SCALE_VALUES[tok] == 100:
                current *= 100
            else:
                total += current * _SCALE_VALUES[tok]
                current = 0
        elif re.fullmatch(r"\d+", tok) and not seen:
            current, seen = int(tok), True
        else:
            return None
    if not seen:
        return None
    value = total + current
    return -value if negative else value


_OPERATORS = [
    ("divided by", "/"), ("divided into", "/"), ("over", "/"), ("multiplied by", "*"),
    ("times", "*"), ("x", "*"), ("plus", "+"), ("and", "+"), ("added to", "+"),
    ("minus", "-"), ("take away", "-"), ("less", "-"),
]
_SYMBOLS = {"*": "times", "/": "divided by", "+": "plus", "-": "minus"}


def _tokens(text: str) -> list[str]:
    text = text.lower().replace("-", " ").replace("×", " times ").replace("÷", " divided by ")
    text = re.sub(r"(?<=\d)\s*([*/+])\s*(?=\d)", lambda m: f" {m.group(1)} ", text)
    return re.findall(r"[a-z]+|\d+|[*/+]", text)


def arithmetic(text: str) -> str | None:
    """"what is twelve times seven" -> "twelve times seven is eighty-four"."""
    toks = _tokens(text)
    # Drop the question's lead-in so only "<number> <op> <number>" remains.
    for lead in (["what", "is"], ["what", "s"], ["how", "much", "is"], ["calculate"],
                 ["compute"], ["tell", "me"], ["whats"]):
        for i in range(len(toks) - len(lead) + 1):
            if toks[i : i + len(lead)] == lead:
                toks = toks[i + len(lead):]
                break
    while toks and toks[-1] in ("please", "equal", "equals", "now"):
        toks = toks[:-1]
    for phrase, op in _OPERATORS:
        words = phrase.split()
        for i in range(1, len(toks) - len(words) + 1):
            if toks[i : i + len(words)] != words:
                continue
            left, right = _parse_number(toks[:i]), _parse_number(toks[i + len(words):])
            if left is None or right is None:
                continue
            if op == "/" and right == 0:
                return f"{number_to_words(left)} divided by zero is not defined."
            result: float = {"+": left + right, "-": left - right, "*": left * right,
                             "/": left / right if op == "/" else 0}[op]
            spoken = (number_to_words(int(result)) if float(result).is_integer()
                      else decimal_to_words(result))
            return f"{number_to_words(left)} {phrase if phrase != 'x' else 'times'} " \
                   f"{number_to_words(right)} is {spoken}."
    for sym, name in _SYMBOLS.items():  # "12 * 7" style
        if sym in toks:
            i = toks.index(sym)
            left, right = _parse_number(toks[:i]), _parse_number(toks[i + 1:])
            if left is not None and right is not None:
                return arithmetic(f"{left} {name} {right}")
    return None


# --- the rules ----------------------------------------------------------------------

STORY = (
    "Once upon a time, in a small village by the sea, there lived an old lighthouse keeper "
    "named Tom. Every evening he climbed the one hundred steps of his tower to light the "
    "great lamp. One stormy night the lamp went dark, and a fishing boat was lost in the "
    "waves. Tom took a lantern and stood on the rocks, waving it from side to side. The "
    "sailors saw the small light and followed it home. In the morning the whole village "
    "came to thank him. From that day on, the children of the village took turns helping "
    "Tom climb the tower, and the light never went out again. The end."
)

_SEARCH = re.compile(
    r"\b(?:search(?: the web| online| the internet)? for|look up|lookup|find (?:out )?"
    r"(?:information |info )?(?:about|on)|(?:get|give me|tell me|what is|what's|whats)? ?"
    r"the latest (?:news )?(?:about|on)|latest news (?:about|on)|news about)\s+(.+)",
    re.IGNORECASE,
)


def _clean_topic(topic: str) -> str:
    topic = re.sub(r"[?.!]+$", "", topic.strip())
    topic = re.sub(r"^(?:the )?latest (?:news )?(?:about|on)\s+", "", topic, flags=re.IGNORECASE)
    return re.sub(r"\s+(please|for me)$", "", topic, flags=re.IGNORECASE).strip()


def first_sentence(text: str, limit: int = 300) -> str:
    text = " ".join(text[: limit * 8].split())  # the search below is quadratic in the rest
    match = re.search(r"(.+?[.!?])(\s|$)", text)
    sentence = match.group(1) if match else text
    return sentence[:limit]


def _tool_output_text(output: str) -> str:
    """A function output is often JSON: find the first readable string in it."""
    try:
        data = json.loads(output)
    except (ValueError, TypeError):
        return output
    stack: deque[Any] = deque([data])
    while stack:
        node = stack.popleft()
        if isinstance(node, str) and len(node.split()) >= 3:
            return node
        if isinstance(node, dict):
            for key in ("answer", "summary", "content", "text", "snippet", "title", "results"):
                if key in node:
                    stack.appendleft(node[key])
            stack.extend(v for k, v in node.items())
        elif isinstance(node, list):
            stack.extend(node)
    return output


def tool_arguments(tool: dict, topic: str) -> str:
    """JSON arguments: the tool's first string parameter set to the topic."""
    props = (tool.get("parameters") or {}).get("properties") or {}
    name = next((k for k, v in props.items() if isinstance(v, dict)
                 and v.get("type") == "string"), None)
    return json.dumps({name or "query": topic})


# --- tools the user names ------------------------------------------------------------

_USE_TOOL = re.compile(r"\b(?:use|call|run)\s+(?:the\s+)?tool\s+(?:called\s+|named\s+)?(.*)",
                       re.IGNORECASE | re.DOTALL)
_WITH = re.compile(r"\s*,?\s*with\s+(?:the\s+)?(?:argument\s+)?(.*)", re.IGNORECASE | re.DOTALL)
_SEPARATORS = "[\\s_-]*"  # recognised speech renders "_" as a space, or drops it
MCP_SEPARATOR = "__"  # MCP tools are offered as <server prefix>__<tool>
MAX_NAME_SAID = 64  # of an unknown tool's name, said back


def tool_names(tool: dict) -> list[str]:
    """The names a tool answers to: its own, and for a prefixed one also the part after
    the first MCP_SEPARATOR."""
    name = str(tool.get("name", ""))
    head, sep, rest = name.partition(MCP_SEPARATOR)
    return [name, rest] if sep and head and rest else [name]


def _spoken_name(name: str) -> re.Pattern[str]:
    """name, matched case-insensitively at the start of what was said, with any
    underscores, hyphens and spaces anywhere in it or none ("lookup_order" is also
    "look up order"). Linear: no nested repetition."""
    letters = [c for c in name.lower() if c not in "_- "]
    return re.compile(_SEPARATORS.join(map(re.escape, letters)) + "(?![a-z0-9])",
                      re.IGNORECASE)


def find_named_tool(spoken: str, functions: list[dict]) -> tuple[dict, str] | None:
    """The declared tool whose name starts `spoken` (the longest match), and what follows."""
    best: tuple[int, dict] | None = None
    for tool in functions:
        for name in tool_names(tool):
            if not name:
                continue
            match = _spoken_name(name).match(spoken)
            if match and (best is None or match.end() > best[0]):
                best = (match.end(), tool)
    return None if best is None else (best[1], spoken[best[0]:])


def _accepts_string(schema: object) -> bool:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return kind == "string" or (isinstance(kind, list) and "string" in kind)


def _spoken_value(argument: str, schema: object) -> Any:
    """The argument as the parameter's type wants it: numbers said in words become numbers
    (an id "forty two" is "42" even for a string), yes/no booleans; else the text."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    toks = _tokens(argument)
    number = (_parse_number(toks) if toks and toks[0] not in ("a", "and", "oh")
              and re.fullmatch(r"[\w\s-]+", argument) else None)
    if kind in ("integer", "number") and number is not None:
        return number
    if kind == "boolean" and argument.lower() in ("yes", "true", "on", "no", "false", "off"):
        return argument.lower() in ("yes", "true", "on")
    if kind == "array":
        return [argument]
    return str(number) if number is not None else argument


def named_tool_arguments(tool: dict, argument: str | None) -> str:
    """JSON arguments for a tool the user named, with the argument they said.

    It goes into the first required parameter that takes a string, else the only
    parameter, else the first one that takes a string, else the first required one
    (converted as _spoken_value says). A tool without parameters, or a call without an
    argument, gets {}.
    """
    params = tool.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    if not isinstance(props, dict) or not props or not argument:
        return "{}"
    required = params.get("required") if isinstance(params, dict) else None
    required = [r for r in required if isinstance(r, str) and r in props] \
        if isinstance(required, list) else []
    name = (next((r for r in required if _accepts_string(props[r])), None)
            or (next(iter(props)) if len(props) == 1 else None)
            or next((k for k, v in props.items() if _accepts_string(v)), None)
            or (required[0] if required else None))
    if name is None:
        return "{}"
    return json.dumps({name: _spoken_value(argument, props[name])})


def _argument(rest: str) -> str | None:
    """What follows "with" after a tool's name, without closing punctuation or "please"."""
    match = _WITH.fullmatch(rest)
    if match is None:
        return None
    arg = re.sub(r"[\s.!?]+$", "", match.group(1).strip())
    return re.sub(r"[\s,]+please$", "", arg, flags=re.IGNORECASE).strip() or None


def named_tool_call(text: str, functions: list[dict]) -> list[ReplyPart] | None:
    """The reply to "use the tool <name> [with <argument>]": a call of that declared tool
    (found as tool_names and _spoken_name say), or saying there is none. None: the user
    named no tool."""
    use = _USE_TOOL.search(text)
    if use is None:
        return None
    found = find_named_tool(use.group(1), functions)
    if found is None:
        wanted = re.split(r"\s+with\s+", use.group(1), maxsplit=1, flags=re.IGNORECASE)[0]
        wanted = re.sub(r"[\s.!?]+$", "", wanted)[:MAX_NAME_SAID]
        return [f"I have no tool called {wanted}."]
    tool, rest = found
    return [FunctionCall(tool["name"], named_tool_arguments(tool, _argument(rest)))]

# The rules read at most this much of what the user said: a spoken turn is far shorter,
# the arithmetic search is quadratic in it, and the echo is synthesised.
MAX_RULE_TEXT = 500
# Fixed words (say_exactly) are spoken up to this length, about a long reply's worth; the
# instructions themselves are bounded by the session's checks.
MAX_SAY_CHARS = 4096
IDLE_PROMPT = "Are you still there?"  # the reply to an idle timeout's empty turn


class RuleResponder:
    """Deterministic offline replies (see module docstring)."""

    def __init__(self, now: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        self.now = now

    async def reply(self, request: ResponderInput) -> AsyncIterator[ReplyPart]:
        for part in self.decide(request):
            yield part

    def decide(self, request: ResponderInput) -> list[ReplyPart]:
        said = (parse_say_exactly(request.response_instructions)
                if request.response_instructions is not None else None)
        if said is not None:  # fixed words, whatever the conversation holds
            said = said.strip()[:MAX_SAY_CHARS]
            return [said] if said else []
        turns = request.turns
        last = turns[-1] if turns else Turn("user", "message")
        if last.kind == "function_call_output":
            found = first_sentence(_tool_output_text(last.text))
            return [f"Here is what I found: {found}" if found else "I found nothing."]
        if last.kind == "function_call":
            return ["I am waiting for the result of the tool."]
        user = next((t for t in reversed(turns) if t.role == "user"), None)
        text = (user.text if user else "")[:MAX_RULE_TEXT].strip()
        if not text:
            return [IDLE_PROMPT if user is not None and user.idle
                    else "Sorry, I did not catch that."]
        return self._rules(text, request)

    def _rules(self, text: str, request: ResponderInput) -> list[ReplyPart]:
        lower = text.lower()
        functions = [t for t in request.tools if t.get("type", "function") == "function"]
        named = named_tool_call(text, functions if request.tool_choice != "none" else [])
        if named is not None:
            return named
        match = _SEARCH.search(text)
        if match and functions and request.tool_choice != "none":
            tool = functions[0]
            if isinstance(request.tool_choice, dict) and request.tool_choice.get("name"):
                tool = next((t for t in functions if t.get("name") ==
                             request.tool_choice["name"]), tool)
            topic = _clean_topic(match.group(1))
            return [FunctionCall(tool["name"], tool_arguments(tool, topic))]
        answer = arithmetic(text)
        if answer:
            return [answer[0].upper() + answer[1:]]
        if re.search(r"\b(story|long answer|talk for a while)\b", lower):
            return [STORY]
        count = re.search(r"\b(?:count|counts|got|come) (?:from one )?(?:to|until) (\w+(?: \w+)?)",
                          lower)
        if count:
            n = _parse_number(_tokens(count.group(1))) or _parse_number(
                _tokens(count.group(1))[:1])
            if n is not None and n > 0:
                n = min(n, 100)
                words = [number_to_words(i) for i in range(1, n + 1)]
                return [", ".join(words).capitalize() + "."]
        now = self.now()
        if re.search(r"\bwhat(?: i|')?s? (?:the )?time\b|\bwhat time\b", lower):
            hour = now.hour % 12 or 12
            minutes = "o'clock" if now.minute == 0 else (
                f"oh {number_to_words(now.minute)}" if now.minute < 10
                else number_to_words(now.minute))
            return [f"It is {number_to_words(hour)} {minutes} "
                    f"{'in the morning' if now.hour < 12 else 'in the afternoon'}."
                    if now.hour < 18 else
                    f"It is {number_to_words(hour)} {minutes} in the evening."]
        if re.search(r"\b(date|day|today)\b", lower):
            return [f"Today is {now.strftime('%A, %B')} {now.day}, {now.year}."]
        if re.search(r"^\s*(hello|hi|hey|good (morning|afternoon|evening)|greetings)\b", lower):
            return ["Hello! How can I help you today?"]
        if re.search(r"\b(how are you)\b", lower):
            return ["I am fine, thank you. How can I help you?"]
        return [f"I heard: {text}."]


# --- an OpenAI-compatible chat-completions endpoint ----------------------------------


class ChatCompletionsResponder:
    """Streams replies and tool calls from `<url>/chat/completions` (OpenAI-compatible)."""

    def __init__(self, url: str, model: str = "default", api_key: str | None = None,
                 timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.model, self.api_key, self.timeout_s = model, api_key, timeout_s

    @staticmethod
    def messages(request: ResponderInput) -> list[dict]:
        out: list[dict] = [{"role": "system", "content": request.instructions}]
        for t in request.turns:
            if t.kind == "function_call":
                out.append({"role": "assistant", "content": None, "tool_calls": [{
                    "id": t.call_id, "type": "function",
                    "function": {"name": t.name, "arguments": t.arguments}}]})
            elif t.kind == "function_call_output":
                out.append({"role": "tool", "tool_call_id": t.call_id, "content": t.text})
            else:
                out.append({"role": t.role, "content": t.text})
        return out

    def body(self, request: ResponderInput) -> dict:
        body: dict[str, Any] = {"model": self.model, "stream": True,
                                "messages": self.messages(request)}
        tools = [{"type": "function", "function": {
            "name": t["name"], "description": t.get("description", ""),
            "parameters": t.get("parameters") or {"type": "object", "properties": {}}}}
            for t in request.tools if t.get("type", "function") == "function"]
        if tools:
            body["tools"] = tools
            choice = request.tool_choice
            body["tool_choice"] = choice if isinstance(choice, str) else {
                "type": "function", "function": {"name": choice.get("name")}}
        return body

    async def reply(self, request: ResponderInput) -> AsyncIterator[ReplyPart]:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        calls: dict[int, dict] = {}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.post(
            self.url, json=self.body(request), headers=headers
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(f"LLM endpoint answered HTTP {resp.status}: "
                                   f"{(await resp.text())[:200]}")
            async for raw in resp.content:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                for choice in chunk.get("choices", []):
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        yield delta["content"]
                    for call in delta.get("tool_calls") or []:
                        slot = calls.setdefault(call.get("index", 0),
                                                {"id": None, "name": "", "arguments": ""})
                        slot["id"] = call.get("id") or slot["id"]
                        fn = call.get("function") or {}
                        slot["name"] += fn.get("name") or ""
                        slot["arguments"] += fn.get("arguments") or ""
        for slot in calls.values():
            yield FunctionCall(slot["name"], slot["arguments"] or "{}", slot["id"])
