"""The tool registry and the offline search tool."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from rtc_agent.tools.registry import Tool, ToolRegistry
from rtc_agent.tools.search import search_tool

PARAMS = {"type": "object", "properties": {"x": {"type": "integer"}}}


async def test_registry_runs_times_out_and_reports_errors() -> None:
    async def double(x: int) -> dict:
        return {"value": x * 2}

    async def slow(x: int) -> str:
        await asyncio.sleep(5)
        return "late"

    async def broken(x: int) -> str:
        raise RuntimeError("disk on fire")

    reg = ToolRegistry()
    reg.register(Tool("double", "d", PARAMS, double))
    reg.register(Tool("slow", "s", PARAMS, slow, timeout_s=0.05))
    reg.register(Tool("broken", "b", PARAMS, broken))
    assert [d["name"] for d in reg.definitions()] == ["double", "slow", "broken"]
    assert reg.definitions()[0]["parameters"] == PARAMS

    ok = await reg.run("double", {"x": 21})
    assert ok.ok and json.loads(ok.output) == {"value": 42}
    late = await reg.run("slow", {"x": 1})
    assert not late.ok and "timed out" in json.loads(late.output)["error"]
    assert late.duration_ms >= 40
    bad = await reg.run("broken", {"x": 1})
    assert not bad.ok and "disk on fire" in json.loads(bad.output)["error"]
    wrong = await reg.run("double", {"y": 1})
    assert not wrong.ok and "bad arguments" in json.loads(wrong.output)["error"]
    missing = await reg.run("nope", {})
    assert not missing.ok


async def test_offline_search_ranks_local_documents(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("TAVILY_API_KEY", raising=False)
    (tmp_path / "coturn.md").write_text(
        "# TURN\n\nThe coturn relay needs use-auth-secret for REST credentials.\n\n"
        "Unrelated paragraph about bananas and other fruit.\n")
    (tmp_path / "notes.txt").write_text("Bananas are yellow and rich in potassium overall.\n")
    tool = search_tool(tmp_path)
    result = await tool.handler(query="coturn auth secret")
    assert result["results"][0]["source"] == "coturn.md"
    assert "use-auth-secret" in result["answer"]
    none = await tool.handler(query="quantum chromodynamics")
    assert none["results"] == []


async def test_tool_errors_and_per_call_tools(caplog) -> None:
    from rtc_agent.tools.registry import ProvidedTools, ToolError

    async def refuse(x: int) -> str:
        raise ToolError("order 7 does not exist")

    async def plain(x: int) -> str:
        return f"p{x}"

    class Provider:
        def __init__(self, names: list[str], fail_close: bool = False) -> None:
            self.names, self.fail_close = names, fail_close
            self.taken: frozenset[str] | None = None
            self.closed = 0

        async def open_call(self, taken: frozenset[str]) -> ProvidedTools:
            self.taken = taken

            async def close() -> None:
                self.closed += 1
                if self.fail_close:
                    raise RuntimeError("socket on fire")

            return ProvidedTools([Tool(n, n, PARAMS, plain) for n in self.names], close)

        async def aclose(self) -> None:
            pass

    reg = ToolRegistry()
    reg.register(Tool("refuse", "r", PARAMS, refuse))
    assert not reg.per_call
    first, second = Provider(["a__x", "refuse"], fail_close=True), Provider(["b__y"])
    reg.add_provider(first)
    reg.add_provider(second)
    assert reg.per_call
    call = await reg.for_call()
    assert first.taken == frozenset({"refuse"})
    # A provider cannot take a registered tool's name; registered tools come first.
    assert [d["name"] for d in call.definitions()] == ["refuse", "a__x", "b__y"]
    assert "a__x" in call and "a__x" not in reg and len(call) == 3
    refused = await call.run("refuse", {"x": 7})
    assert not refused.ok and json.loads(refused.output) == {"error": "order 7 does not exist"}
    assert "failed" not in caplog.text  # an expected failure is not logged as a fault
    assert (await call.run("b__y", {"x": 2})).output == "p2"
    await call.aclose()
    await call.aclose()  # once only
    assert (first.closed, second.closed) == (1, 1)  # one failing close does not stop others
    assert "closing a call's tools" in caplog.text
