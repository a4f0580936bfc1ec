"""A registry of async tools with JSON-schema parameters.

The registry gives the `tools` list for `session.update` and runs a call with
its own timeout. A tool that fails or times out still produces an output (a
JSON object with an `error`), so the model can tell the caller what happened
instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ToolHandler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    handler: ToolHandler
    timeout_s: float = 10.0

    def definition(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    output: str  # what goes into function_call_output
    duration_ms: int
    timed_out: bool = False

    @property
    def outcome(self) -> str:
        """"ok", "error" or "timeout" (the metrics' label)."""
        return "ok" if self.ok else "timeout" if self.timed_out else "error"


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def definitions(self) -> list[dict[str, Any]]:
        return [t.definition() for t in self._tools.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    async def run(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        start = time.perf_counter()

        def elapsed() -> int:
            return int((time.perf_counter() - start) * 1000)

        tool = self._tools.get(name)
        if tool is None:
            return ToolResult(False, json.dumps({"error": f"no tool named {name!r}"}), 0)
        try:
            value = await asyncio.wait_for(tool.handler(**arguments), tool.timeout_s)
        except TimeoutError:
            message = f"the {name} tool timed out after {tool.timeout_s:g} seconds"
            return ToolResult(False, json.dumps({"error": message}), elapsed(), timed_out=True)
        except TypeError as exc:
            return ToolResult(False, json.dumps({"error": f"bad arguments: {exc}"}), elapsed())
        except Exception as exc:  # a tool's fault must not end the call
            log.warning("tool %s failed: %s", name, exc)
            return ToolResult(False, json.dumps({"error": f"{name} failed: {exc}"}), elapsed())
        output = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return ToolResult(True, output, elapsed())
