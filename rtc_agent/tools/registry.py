"""A registry of async tools with JSON-schema parameters.

The registry gives the `tools` list for `session.update` and runs a call with
its own timeout. A tool that fails or times out still produces an output (a
JSON object with an `error`), so the model can tell the caller what happened
instead of waiting forever.

Tools known at start are registered once per worker. Tools found anew for each
call (an MCP server's, `tools/mcp.py`) come from providers: `for_call` lists
them, bounded in time, and gives the call its own `CallTools`, which the call
closes when it ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

ToolHandler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    handler: ToolHandler
    timeout_s: float = 10.0
    # A barge-in (or a typed message) cancels it: its answer is no longer wanted once
    # the caller moved on. Off by default: a tool may act, not only look something up.
    cancellable: bool = False

    def definition(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }


class ToolError(Exception):
    """A tool's expected failure (an MCP server's error result, say): its message becomes
    the error output, without the warning an unexpected exception gets."""


@dataclass(frozen=True)
class ProvidedTools:
    """What a provider offers one call, and how to free what it opened for the call."""

    tools: list[Tool]
    close: Callable[[], Awaitable[None]] | None = None


class ToolProvider(Protocol):
    """A source of tools that can change between calls (an MCP server)."""

    async def open_call(self, taken: frozenset[str]) -> ProvidedTools:
        """This call's tools, none named as in `taken`; never raises, returns in bounded time."""
        ...

    async def aclose(self) -> None:
        """Stop what the provider runs for the worker (a listing in flight)."""
        ...


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    output: str  # what goes into function_call_output
    duration_ms: int
    timed_out: bool = False
    cancelled: bool = False

    @property
    def outcome(self) -> str:
        """"ok", "error", "timeout" or "cancelled" (the metrics' label)."""
        if self.ok:
            return "ok"
        return "timeout" if self.timed_out else "cancelled" if self.cancelled else "error"


def cancelled_result(duration_ms: int) -> ToolResult:
    """What the model gets from a tool the caller's barge-in cancelled."""
    return ToolResult(False, json.dumps({"error": "cancelled: the caller moved on"}),
                      duration_ms, cancelled=True)


async def _run(tool: Tool | None, name: str, arguments: dict[str, Any]) -> ToolResult:
    start = time.perf_counter()

    def elapsed() -> int:
        return int((time.perf_counter() - start) * 1000)

    if tool is None:
        return ToolResult(False, json.dumps({"error": f"no tool named {name!r}"}), 0)
    try:
        value = await asyncio.wait_for(tool.handler(**arguments), tool.timeout_s)
    except TimeoutError:
        message = f"the {name} tool timed out after {tool.timeout_s:g} seconds"
        return ToolResult(False, json.dumps({"error": message}), elapsed(), timed_out=True)
    except ToolError as exc:
        return ToolResult(False, json.dumps({"error": str(exc)}, ensure_ascii=False), elapsed())
    except TypeError as exc:
        return ToolResult(False, json.dumps({"error": f"bad arguments: {exc}"}), elapsed())
    except Exception as exc:  # a tool's fault must not end the call
        log.warning("tool %s failed: %s", name, exc)
        return ToolResult(False, json.dumps({"error": f"{name} failed: {exc}"}), elapsed())
    output = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return ToolResult(True, output, elapsed())


class _Tools:
    """Tools by name: their definitions for `session.update`, and a call of one by name."""

    def __init__(self, tools: dict[str, Tool]) -> None:
        self._tools = tools

    def definitions(self) -> list[dict[str, Any]]:
        return [t.definition() for t in self._tools.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def cancellable(self, name: str) -> bool:
        tool = self._tools.get(name)
        return tool is not None and tool.cancellable

    async def run(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        return await _run(self._tools.get(name), name, arguments)


class ToolRegistry(_Tools):
    """The worker's tools: registered ones, and providers of per-call ones."""

    def __init__(self) -> None:
        super().__init__({})
        self._providers: list[ToolProvider] = []

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def add_provider(self, provider: ToolProvider) -> None:
        self._providers.append(provider)

    @property
    def per_call(self) -> bool:
        """Some tools are listed per call: a call needs `for_call` before its session.update."""
        return bool(self._providers)

    async def for_call(self) -> CallTools:
        """One call's tools: the registered ones, then each provider's (in parallel, each
        bounded in time by the provider; none can take a registered tool's name)."""
        taken = frozenset(self._tools)
        provided = await asyncio.gather(*(p.open_call(taken) for p in self._providers))
        tools = dict(self._tools)
        closers = []
        for each in provided:
            for tool in each.tools:
                tools.setdefault(tool.name, tool)
            if each.close is not None:
                closers.append(each.close)
        return CallTools(tools, closers)

    async def aclose(self) -> None:
        """At the worker's end: stop the providers' work."""
        for provider in self._providers:
            await provider.aclose()


class CallTools(_Tools):
    """The tools of one call; `aclose` frees what the providers opened for it."""

    def __init__(self, tools: dict[str, Tool],
                 closers: list[Callable[[], Awaitable[None]]]) -> None:
        super().__init__(tools)
        self._closers = closers

    async def aclose(self) -> None:
        closers, self._closers = self._closers, []
        for close in closers:
            try:
                await close()
            except Exception:  # one provider's fault must not keep the others open
                log.exception("closing a call's tools")
