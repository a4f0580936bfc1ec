"""MCP tools (--mcp-server) against a real MCP server on loopback (tests/tools/mcp_server.py,
FastMCP over streamable HTTP in a child process): listing, names, calls, errors,
timeouts, bounds, an unreachable server, and a real call through the offline model."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.types import CallToolResult, ImageContent, TextContent
from mcp.types import Tool as ListedTool

from rtc_agent.tools import mcp as mcp_tools
from rtc_agent.tools.mcp import (
    MAX_NAME_CHARS,
    MAX_OUTPUT_CHARS,
    Listing,
    McpTools,
    ResponseRefused,
    model_name,
    result_text,
    server_prefix,
    vet_listing,
    vet_tool,
)
from rtc_agent.tools.registry import CallTools, Tool, ToolError, ToolRegistry
from tests.ports import loopback_port

ROOT = Path(__file__).resolve().parents[2]
OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
OFFERED = {"orders_desk__lookup_order", "orders_desk__missing_order", "orders_desk__refused",
           "orders_desk__slow", "orders_desk__long_report", "orders_desk__order_status"}


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    """The test MCP server's URL; the server runs for the module's tests."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.tools.mcp_server"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # its port, once it listens
        assert line.strip().isdigit(), f"the MCP server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line)}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def registry(*providers: McpTools) -> ToolRegistry:
    async def search(query: str) -> str:
        return f"found {query}"

    tools = ToolRegistry()
    tools.register(Tool("search", "s", {"type": "object", "properties": {
        "query": {"type": "string"}}}, search))
    for provider in providers:
        tools.add_provider(provider)
    return tools


@contextlib.asynccontextmanager
async def offered(urls: list[str], **options: Any) -> AsyncIterator[CallTools]:
    """One call's tools with McpTools(urls, **options) as the registry's provider;
    the call's tools and the provider are closed after."""
    provider = McpTools(urls, **options)
    tools = await registry(provider).for_call()
    try:
        yield tools
    finally:
        await tools.aclose()
        await provider.aclose()


@pytest.fixture
async def call_tools(mcp_url: str) -> AsyncIterator[CallTools]:
    async with offered([mcp_url], tool_timeout_s=0.5) as tools:
        yield tools


def mcp_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("mcp-")]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ------------------------------------------------------------ listing


async def test_a_call_is_offered_the_servers_tools_under_prefixed_names(
        mcp_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "rtc_agent.tools.mcp")
    async with offered([mcp_url]) as tools:
        definitions = tools.definitions()
        names = [d["name"] for d in definitions]
        assert names[0] == "search"  # the built-in ones first
        assert set(names[1:]) == OFFERED  # `pick` dropped: its schema is too large
        assert all(OPENAI_NAME.match(n) for n in names)
        lookup = next(d for d in definitions if d["name"] == "orders_desk__lookup_order")
        assert lookup["type"] == "function"
        assert lookup["description"] == "Look up an order by its number and say where it is."
        assert lookup["parameters"]["properties"]["order_id"]["type"] == "string"
        assert lookup["parameters"]["required"] == ["order_id"]
        dropped = [r.getMessage() for r in caplog.records if "not offered" in r.getMessage()]
        assert len(dropped) == 1 and "'pick'" in dropped[0] and "16384" in dropped[0]
        # A dot is not allowed in a function name: the tool is offered as order_status
        # and still called by its own name.
        result = await tools.run("orders_desk__order_status", {"order_id": "7"})
        assert result.ok and result.output == "7: in transit"


async def test_two_servers_of_the_same_name_get_distinct_prefixes(mcp_url: str) -> None:
    async with offered([mcp_url, mcp_url]) as tools:
        names = {d["name"] for d in tools.definitions()}
        assert {"orders_desk__lookup_order", "orders_desk2__lookup_order"} <= names
        second = await tools.run("orders_desk2__lookup_order", {"order_id": "5"})
        assert second.ok and second.output == "Order 5 shipped on Monday."


async def test_a_burst_of_calls_lists_once_and_the_listing_expires(mcp_url: str) -> None:
    provider = McpTools([mcp_url], ttl_s=60)
    tools = registry(provider)
    burst = await asyncio.gather(*(tools.for_call() for _ in range(5)))
    assert all(len(t) == 1 + len(OFFERED) for t in burst)
    again = await tools.for_call()
    assert provider.servers[0].fetches == 1
    for each in [*burst, again]:
        await each.aclose()
    short = McpTools([mcp_url], ttl_s=0)
    tools = registry(short)
    for _ in range(2):
        await (await tools.for_call()).aclose()
    assert short.servers[0].fetches == 2
    await provider.aclose()
    await short.aclose()


# ------------------------------------------------------------ calls


async def test_a_tool_call_returns_the_results_text(call_tools: CallTools) -> None:
    result = await call_tools.run("orders_desk__lookup_order", {"order_id": "42"})
    assert result.ok and result.output == "Order 42 shipped on Monday."
    assert result.outcome == "ok"


async def test_an_error_result_becomes_an_error_output(call_tools: CallTools) -> None:
    result = await call_tools.run("orders_desk__missing_order", {"order_id": "9"})
    assert not result.ok and result.outcome == "error"
    assert "order 9 does not exist" in json.loads(result.output)["error"]
    refused = await call_tools.run("orders_desk__refused", {"order_id": "9"})
    assert not refused.ok
    assert "refusing order 9" in json.loads(refused.output)["error"]
    wrong = await call_tools.run("orders_desk__lookup_order", {"number": "9"})
    assert not wrong.ok and "order_id" in json.loads(wrong.output)["error"]
    # The session is still good after errors.
    ok = await call_tools.run("orders_desk__lookup_order", {"order_id": "1"})
    assert ok.ok


async def test_a_slow_tool_times_out_and_the_next_call_works(call_tools: CallTools) -> None:
    late = await call_tools.run("orders_desk__slow", {"seconds": 5})
    assert late.timed_out and late.outcome == "timeout"
    assert 400 <= late.duration_ms < 2000
    assert "timed out after 0.5 seconds" in json.loads(late.output)["error"]
    quick = await call_tools.run("orders_desk__slow", {"seconds": 0})
    assert quick.ok and quick.output == "finally"


async def test_a_long_result_reaches_the_model_clipped(call_tools: CallTools) -> None:
    result = await call_tools.run("orders_desk__long_report", {})
    assert result.ok and result.output.startswith("word word")
    assert MAX_OUTPUT_CHARS < len(result.output) <= MAX_OUTPUT_CHARS + 20
    assert result.output.endswith("(cut)")


async def test_a_response_over_the_byte_cap_fails_the_call_not_the_session(
        call_tools: CallTools, monkeypatch: pytest.MonkeyPatch) -> None:
    # The cap is read when a session opens: this call's opens at its first tool call.
    # The tool listing the SDK fetches in a session is about 45 kB, the report 100 kB.
    monkeypatch.setattr(mcp_tools, "MAX_RESPONSE_BYTES", 70_000)
    big = await call_tools.run("orders_desk__long_report", {})
    assert not big.ok and "over 70000 bytes" in json.loads(big.output)["error"]
    small = await call_tools.run("orders_desk__lookup_order", {"order_id": "3"})
    assert small.ok and small.output == "Order 3 shipped on Monday."


async def test_a_call_frees_its_sessions_when_it_ends(mcp_url: str) -> None:
    provider = McpTools([mcp_url])
    tools = registry(provider)
    warm = await tools.for_call()  # imports, the listing, the first connection's costs
    await warm.run("orders_desk__lookup_order", {"order_id": "0"})
    await warm.aclose()
    await asyncio.sleep(0.2)
    before = (len(asyncio.all_tasks()), open_fds())
    for _ in range(3):
        call = await tools.for_call()
        assert (await call.run("orders_desk__lookup_order", {"order_id": "1"})).ok
        assert (await call.run("orders_desk__slow", {"seconds": 0})).ok
        assert mcp_tasks() == [f"mcp-session {mcp_url}"]  # one session for the call
        await call.aclose()
        assert mcp_tasks() == []
    after = (len(asyncio.all_tasks()), open_fds())
    for _ in range(20):  # sockets close as the loop gets to them
        if after[1] <= before[1]:
            break
        await asyncio.sleep(0.05)
        after = (len(asyncio.all_tasks()), open_fds())
    assert after[0] <= before[0], f"asyncio tasks {before[0]} -> {after[0]}"
    assert after[1] <= before[1], f"open file descriptors {before[1]} -> {after[1]}"
    ended = await call.run("orders_desk__lookup_order", {"order_id": "1"})
    assert not ended.ok and "ended" in json.loads(ended.output)["error"]
    await provider.aclose()


# ------------------------------------------------------------ unreachable


async def test_an_unreachable_server_costs_its_tools_and_one_warning(
        mcp_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "rtc_agent.tools.mcp")
    dead = f"http://user:secret@127.0.0.1:{loopback_port()}/mcp?token=secret"
    provider = McpTools([dead, mcp_url], failed_ttl_s=0)  # tried again at every call
    tools = registry(provider)
    for _ in range(3):
        call = await tools.for_call()
        assert {d["name"] for d in call.definitions()} == {"search", *OFFERED}
        await call.aclose()
    assert provider.servers[0].fetches == 3
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "cannot be reached" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "secret" not in caplog.text  # neither the password nor the query's token
    await provider.aclose()


async def test_a_server_that_never_answers_is_given_up_in_time(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"
        provider = McpTools([url], list_timeout_s=0.5)
        start = time.monotonic()
        call = await registry(provider).for_call()
        took = time.monotonic() - start
        assert [d["name"] for d in call.definitions()] == ["search"]
        assert 0.4 < took < 2.0, took
        assert "no answer in time" in caplog.text
        await call.aclose()
        await provider.aclose()
    assert mcp_tasks() == []


# ------------------------------------------------------------ bounds


def listed(name: str = "t", schema: Any = None, description: str | None = "d") -> ListedTool:
    return ListedTool(name=name, description=description,
                      input_schema={"type": "object"} if schema is None else schema)


def test_a_listing_is_vetted_and_bounded() -> None:
    deep: dict[str, Any] = {"type": "object"}
    node = deep
    for _ in range(40):
        node["properties"] = {"x": {"type": "object"}}
        node = node["properties"]["x"]
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 90}
                                             for i in range(200)}}
    checks = {
        "deep": (deep, "nests over 32 levels"),
        "not_an_object": ({"type": "string"}, "not a JSON object schema"),
        "wide": (wide, "over 16384"),
        "nan": ({"type": "object", "default": float("nan")}, "not plain JSON"),
    }
    for name, (schema, why) in checks.items():
        problem = vet_tool(listed(name, schema))
        assert isinstance(problem, str) and why in problem, (name, problem)
    assert "at most 128" in str(vet_tool(listed("n" * 129)))
    ok = vet_tool(listed("a/b c", description="  many \n words\x00 " + "w" * 2000))
    assert not isinstance(ok, str)
    assert ok.name == "a/b c" and ok.part == "a_b_c"
    assert ok.description.startswith("many words w") and len(ok.description) < 1100
    listing = vet_listing("Name\x00", [listed("a.b"), listed("a_b"), listed("c", {"type": "x"})]
                          + [listed(f"t{i}") for i in range(70)])
    assert listing.server_name == "Name "
    assert [t.part for t in listing.tools][:2] == ["a_b", "t0"]
    assert len(listing.tools) == 64
    assert any("clashes" in d for d in listing.dropped)
    assert any("over 64 tools" in d for d in listing.dropped)


async def test_what_one_call_is_offered_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "rtc_agent.tools.mcp")

    def provider(*listings: Listing) -> McpTools:
        tools = McpTools([f"http://127.0.0.1:9/{i}" for i in range(len(listings))])
        for server, listing in zip(tools.servers, listings, strict=True):
            server._listing, server._expires = listing, time.monotonic() + 60  # listed
        return tools

    many = vet_listing("many", [listed(f"t{i}") for i in range(64)])
    counted = provider(many, many, many)
    for _ in range(2):
        call = await registry(counted).for_call()
        names = [d["name"] for d in call.definitions()]
        assert len(names) == mcp_tools.MAX_OFFERED_TOOLS  # with `search`
        assert {n.split("__")[0] for n in names[1:]} == {"many", "many2"}  # 1 + 64 + 63
        await call.aclose()
    left_out = [r for r in caplog.records if "not offered" in r.getMessage()]
    assert len(left_out) == 1  # said once while it stays the same
    bulky = vet_listing("bulky", [listed(f"b{i}", {"type": "object", "description": "x" * 15_000})
                                  for i in range(20)])
    call = await registry(provider(bulky)).for_call()
    definitions = call.definitions()
    assert 10 < len(definitions) < 20
    assert sum(len(json.dumps(d)) for d in definitions) <= mcp_tools.MAX_OFFERED_CHARS
    await call.aclose()


def test_names_fit_the_models_rule() -> None:
    assert server_prefix("Orders Desk!", 1) == "orders_desk"
    assert server_prefix("", 3) == "mcp3"
    assert server_prefix("!!!", 2) == "mcp2"
    assert server_prefix("ü-ber__service " * 5, 1) == "ber_service_ber"
    long_a = vet_tool(listed("x" * 100 + "a"))
    long_b = vet_tool(listed("x" * 100 + "b"))
    assert not isinstance(long_a, str) and not isinstance(long_b, str)
    a, b = model_name("orders_desk", long_a), model_name("orders_desk", long_b)
    assert len(a) == len(b) == MAX_NAME_CHARS and a != b
    assert OPENAI_NAME.match(a) and a.startswith("orders_desk__xxx")


def test_result_text_takes_the_text_and_marks_the_rest() -> None:
    mixed = CallToolResult(content=[TextContent(type="text", text="one"),
                                    ImageContent(type="image", data="AAAA",
                                                 mime_type="image/png")])
    assert result_text(mixed) == "one\n[image omitted]"
    structured = CallToolResult(content=[], structured_content={"status": "shipped"})
    assert json.loads(result_text(structured)) == {"status": "shipped"}
    failed = CallToolResult(content=[TextContent(type="text", text="no such order")],
                            is_error=True)
    with pytest.raises(ToolError, match="no such order"):
        result_text(failed)
    with pytest.raises(ToolError, match="reported an error"):
        result_text(CallToolResult(content=[], is_error=True))


async def test_responses_are_capped_and_must_not_be_compressed() -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"text": "x" * 5000}}).encode()

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/gzip":
            return httpx2.Response(200, content=gzip.compress(body),
                                   headers={"Content-Encoding": "gzip"})
        return httpx2.Response(200, content=body)

    capped = mcp_tools._CappedTransport(4096, inner=httpx2.MockTransport(answer))
    async with httpx2.AsyncClient(transport=capped) as http:
        with pytest.raises(ResponseRefused, match="over 4096 bytes"):
            await http.get("http://mcp.test/big")
        with pytest.raises(ResponseRefused, match="gzip-encoded"):
            await http.get("http://mcp.test/gzip")
    roomy = mcp_tools._CappedTransport(1 << 20, inner=httpx2.MockTransport(answer))
    async with httpx2.AsyncClient(transport=roomy) as http:
        assert (await http.get("http://mcp.test/ok")).content == body


# ------------------------------------------------------------ the setting


def test_mcp_servers_come_from_flags_variable_or_file(tmp_path: Path) -> None:
    import argparse

    from rtc_agent import ConfigError, config

    def parse(argv: list[str], env: dict[str, str] | None = None) -> config.ServeConfig:
        parser = argparse.ArgumentParser()
        config.add_arguments(parser)
        return config.from_args(parser.parse_args(argv), env or {})

    assert parse([]).mcp_servers == []
    flags = parse(["--mcp-server", "http://a.test/mcp", "--mcp-server", "https://b.test/mcp"])
    assert flags.mcp_servers == ["http://a.test/mcp", "https://b.test/mcp"]
    env = parse([], {"RTC_AGENT_MCP_SERVER": "http://a.test/mcp, http://c.test/mcp"})
    assert env.mcp_servers == ["http://a.test/mcp", "http://c.test/mcp"]
    file = tmp_path / "agent.toml"
    file.write_text('[serve]\nmcp_servers = ["http://d.test/mcp"]\n')
    assert parse(["--config", str(file)]).mcp_servers == ["http://d.test/mcp"]
    with pytest.raises(ConfigError, match="not an http:// or https:// URL"):
        parse(["--mcp-server", "ws://a.test/mcp"])
    secret = parse(["--mcp-server", "https://me:pw-123@tools.test/mcp?key=k-456"])
    text = "\n".join(config.describe(secret, config.Backend("offline"), {}))
    assert "MCP https://tools.test/mcp" in text and "[--mcp-server]" in text
    assert "pw-123" not in text and "k-456" not in text


# ------------------------------------------------------------ a real call


@pytest.mark.slow
async def test_a_caller_names_an_mcp_tool_and_the_offline_model_calls_it(
        mcp_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Through the whole chain: the call lists the servers' tools while ICE connects, its
    session.update offers them, the offline model calls one by its unprefixed name, the
    call runs it against the server, the caller sees the tool round and the answer; an
    unreachable second server costs nothing but a warning; the call's MCP session is
    gone when the call ends."""
    from rtc_agent.loadtest.caller import ScriptedCaller
    from rtc_agent.serve import running
    from tests.agent.test_call import is_done, server_config, url

    caplog.set_level(logging.INFO, "rtc_agent.tools.mcp")
    dead = f"http://127.0.0.1:{loopback_port()}/mcp"
    async with running(server_config(mcp_servers=[dead, mcp_url])) as server:
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            n = len(caller.events)
            caller.send({"type": "text", "text": "use the tool lookup_order with 42"})
            started = await caller.wait_event(lambda e: e["type"] == "tool.started", 30,
                                              start=n)
            assert started["name"] == "orders_desk__lookup_order"
            assert started["arguments"] == {"order_id": "42"}
            finished = await caller.wait_event(lambda e: e["type"] == "tool.finished", 30,
                                               start=n)
            assert finished["ok"] is True and finished["call_id"] == started["call_id"]
            reply = await caller.wait_event(is_done("assistant"), 30, start=n)
            assert "order 42 shipped on monday" in reply["text"].lower()
            assert mcp_tasks() == [f"mcp-session {mcp_url}"]
        for _ in range(100):
            if not server.calls and not mcp_tasks():
                break
            await asyncio.sleep(0.05)
        assert server.calls == {} and mcp_tasks() == []
    unreachable = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(unreachable) == 1 and dead in unreachable[0].getMessage()


class SlowProvider:
    """Lists its one tool after the upstream is up: the session.update must wait."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.closed = 0

    async def open_call(self, taken: frozenset[str]) -> Any:
        from rtc_agent.tools.registry import ProvidedTools

        await asyncio.sleep(self.delay_s)

        async def lookup(order_id: str) -> str:
            return f"Order {order_id} is on its way."

        async def close() -> None:
            self.closed += 1

        schema = {"type": "object", "properties": {"order_id": {"type": "string"}}}
        return ProvidedTools([Tool("shop__lookup_order", "Look up an order.", schema, lookup)],
                             close)

    async def aclose(self) -> None:
        pass


@pytest.mark.slow
async def test_the_session_update_waits_for_a_slow_listing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The upstream connects long before the listing ends: one session.update goes out,
    once the tools are known, and carries them."""
    from rtc_agent.loadtest.caller import ScriptedCaller
    from rtc_agent.realtime.client import RealtimeClient
    from rtc_agent.serve import running
    from tests.agent.test_call import is_done, server_config, url

    updates: list[dict[str, Any]] = []
    send = RealtimeClient.send

    def spy(self: RealtimeClient, event: dict[str, Any]) -> None:
        if event.get("type") == "session.update":
            updates.append(event)
        send(self, event)

    monkeypatch.setattr(RealtimeClient, "send", spy)
    provider = SlowProvider(delay_s=2.0)
    async with running(server_config()) as server:
        server.tools.add_provider(provider)
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            assert len(updates) == 1
            offered = [t["name"] for t in updates[0]["session"]["tools"]]
            assert offered == ["search", "shop__lookup_order"]
            n = len(caller.events)
            caller.send({"type": "text", "text": "use the tool lookup_order with 7"})
            started = await caller.wait_event(lambda e: e["type"] == "tool.started", 30,
                                              start=n)
            assert started["name"] == "shop__lookup_order"
            reply = await caller.wait_event(is_done("assistant"), 30, start=n)
            assert "order 7 is on its way" in reply["text"].lower()
        for _ in range(100):
            if not server.calls:
                break
            await asyncio.sleep(0.05)
        assert server.calls == {} and provider.closed == 1
    assert len(updates) == 1
