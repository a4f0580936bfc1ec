"""Tools of MCP servers (`--mcp-server URL`, streamable HTTP), offered next to the built-in ones.

Per worker, each server's tool listing is fetched with a short-lived client session,
bounded by `list_timeout_s`, shared by the calls that ask at the same time and kept
for LISTING_TTL_S (a failure for FAILED_TTL_S): a burst of calls lists once, and an
unreachable server costs the calls nothing but its tools, with one warning when it
goes down and one line when it comes back.

Per call, each server's tools get the model-facing name `<prefix>__<tool>` (the
prefix from the server's own name, else `mcp1`, `mcp2`, ... by its place on the
command line), and the call opens its own client session with a server at its first
tool call there and closes it when the call ends. A session per call costs a connect
(about one round trip) but isolates callers: an MCP server may keep state per
session, and one caller's state must never reach another; it also cannot go stale
across a server restart the way a long-lived shared session would.

What a server sends is hostile input: every HTTP response (or SSE event) is capped
at MAX_RESPONSE_BYTES and must not be compressed (a small body must not inflate);
names, descriptions and schemas are checked and bounded, a tool that does not fit is
dropped with a warning; a result reaches the model as its text, clipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, Implementation, TextContent
from mcp.types import Tool as ListedTool

from rtc_agent.tools.registry import ProvidedTools, Tool, ToolError

log = logging.getLogger(__name__)

LIST_TIMEOUT_S = 3.0  # connect and list one server's tools, while the call's ICE proceeds
LISTING_TTL_S = 60.0  # a listing serves the calls of the next minute
FAILED_TTL_S = 15.0  # an unreachable server is tried again after this
CLOSE_TIMEOUT_S = 2.0  # ending a call's session (the DELETE of its MCP session)
MAX_RESPONSE_BYTES = 1 << 20  # one HTTP response or SSE event from a server
MAX_PAGES = 8  # of one tools/list
MAX_TOOLS_PER_SERVER = 64
MAX_OFFERED_TOOLS = 128  # OpenAI's function-calling limit, built-in tools included
MAX_OFFERED_CHARS = 200_000  # the MCP tools' JSON in one session.update (the service caps it)
MAX_TOOL_NAME_CHARS = 128  # a server's own tool name (the MCP spec's SHOULD)
MAX_NAME_CHARS = 64  # the model-facing name, OpenAI's rule ^[a-zA-Z0-9_-]{1,64}$
MAX_PREFIX_CHARS = 16
MAX_DESCRIPTION_CHARS = 1024
MAX_SCHEMA_CHARS = 16_384  # one tool's parameter schema as JSON
MAX_SCHEMA_DEPTH = 32
MAX_CONTENT_BLOCKS = 64  # of one result
MAX_OUTPUT_CHARS = 16_384  # what the model gets of one result
MAX_REASON_CHARS = 200  # of an error's text, in logs and outputs
SEPARATOR = "__"
CLIENT_INFO = Implementation(name="rtc-agent", version="0.1.0")

_NOT_NAME = re.compile(r"[^a-zA-Z0-9_-]+")
_UNDERSCORES = re.compile(r"[-_]*_[-_]*")  # a run of - and _ with an _: one _
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def safe_url(url: str) -> str:
    """A URL for logs: without user, password or query (tokens travel there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:
        return "(unreadable URL)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " ... (cut)"


def _reason(exc: BaseException) -> str:
    """One line on why a request failed: the innermost error of a group, bounded."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = exc.message if isinstance(exc, MCPError) else str(exc)
    text = _CONTROL.sub(" ", text).strip() or type(exc).__name__
    return _clip(text, MAX_REASON_CHARS)


# ------------------------------------------------------------ bounded HTTP


class ResponseRefused(httpx2.StreamError):
    """A server's response over MAX_RESPONSE_BYTES, or compressed."""


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int, refused: str | None) -> None:
        self._inner = inner
        self._limit = limit
        self._refused = refused

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._refused:
            raise ResponseRefused(self._refused)
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseRefused(f"a response over {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedTransport(httpx2.AsyncBaseTransport):
    """Bodies are capped as they arrive and must come uncompressed (httpx2 would inflate
    them after the cap)."""

    def __init__(self, limit: int, inner: httpx2.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx2.AsyncHTTPTransport(trust_env=False)
        self._limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        encoding = response.headers.get("content-encoding", "").strip().lower()
        refused = None if encoding in ("", "identity") else f"a {encoding[:20]}-encoded response"
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code, headers=response.headers, request=request,
            stream=_CappedStream(response.stream, self._limit, refused),
            extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


# ------------------------------------------------------------ vetting a listing


@dataclass(frozen=True)
class McpTool:
    """A listed tool that passed the checks."""

    name: str  # the server's own, for tools/call
    part: str  # its model-facing part: sanitised, unique within the server
    description: str
    parameters: dict[str, Any]
    chars: int  # about what its definition adds to a session.update


@dataclass(frozen=True)
class Listing:
    server_name: str  # serverInfo.name, bounded ("" if the server did not say)
    tools: tuple[McpTool, ...]
    dropped: tuple[str, ...]  # why each dropped tool was dropped


def _depth(value: Any) -> int:
    """How deep a JSON value nests (without recursion: the value is the server's)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_SCHEMA_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def vet_tool(tool: ListedTool) -> McpTool | str:
    """The tool as offered to the model, or why it cannot be."""
    name = tool.name
    if not 0 < len(name) <= MAX_TOOL_NAME_CHARS:
        return f"a tool name of {len(name)} characters (at most {MAX_TOOL_NAME_CHARS})"
    shown = repr(name[:40])
    schema = tool.input_schema
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return f"tool {shown}: its input schema is not a JSON object schema"
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        return f"tool {shown}: its input schema nests over {MAX_SCHEMA_DEPTH} levels"
    try:
        text = json.dumps(schema, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return f"tool {shown}: its input schema is not plain JSON"
    if len(text) > MAX_SCHEMA_CHARS:
        return (f"tool {shown}: its input schema is {len(text)} characters of JSON, "
                f"over {MAX_SCHEMA_CHARS}")
    part = _UNDERSCORES.sub("_", _NOT_NAME.sub("_", name)).strip("_") or "tool"
    description = " ".join(_CONTROL.sub(" ", tool.description or tool.title or "").split())
    description = _clip(description, MAX_DESCRIPTION_CHARS)
    return McpTool(name, part, description, json.loads(text),
                   len(text) + len(description) + 2 * MAX_NAME_CHARS)


def vet_listing(server_name: str | None, tools: Sequence[ListedTool]) -> Listing:
    """The tools a server listed, checked; dropped ones say why."""
    kept: list[McpTool] = []
    dropped: list[str] = []
    parts: set[str] = set()
    for tool in tools:
        vetted = vet_tool(tool)
        if isinstance(vetted, str):
            dropped.append(vetted)
        elif vetted.part in parts:
            dropped.append(f"tool {vetted.name[:40]!r}: its name clashes with another's "
                           f"once made fit for the model ({vetted.part!r})")
        elif len(kept) >= MAX_TOOLS_PER_SERVER:
            dropped.append(f"tool {vetted.name[:40]!r}: over {MAX_TOOLS_PER_SERVER} tools")
        else:
            parts.add(vetted.part)
            kept.append(vetted)
    name = _CONTROL.sub(" ", server_name or "")[:MAX_REASON_CHARS]
    return Listing(name, tuple(kept), tuple(dropped))


def server_prefix(server_name: str, index: int) -> str:
    """`<prefix>` of a server's tool names: its own name made fit, or `mcp<index>`."""
    text = _UNDERSCORES.sub("_", _NOT_NAME.sub("_", server_name.lower())).strip("_-")
    return text[:MAX_PREFIX_CHARS].rstrip("_-") or f"mcp{index}"


def model_name(prefix: str, tool: McpTool) -> str:
    """`<prefix>__<tool>` within MAX_NAME_CHARS; a long tool part is cut and keeps a
    short hash of the server's name for it, so two cut names stay apart."""
    name = f"{prefix}{SEPARATOR}{tool.part}"
    if len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.sha256(tool.name.encode()).hexdigest()[:6]
    room = MAX_NAME_CHARS - len(prefix) - len(SEPARATOR) - len(digest) - 1
    return f"{prefix}{SEPARATOR}{tool.part[:room].rstrip('_')}_{digest}"


def result_text(result: CallToolResult) -> str:
    """What the model gets of a tool's result: its text content, bounded (structured
    content as JSON if there is no text). An error result raises ToolError."""
    parts: list[str] = []
    size = 0
    for block in result.content[:MAX_CONTENT_BLOCKS]:
        text = block.text if isinstance(block, TextContent) else f"[{block.type} omitted]"
        parts.append(text)
        size += len(text)
        if size > MAX_OUTPUT_CHARS:
            break
    text = "\n".join(parts)
    if not text.strip() and result.structured_content is not None:
        with contextlib.suppress(TypeError, ValueError, RecursionError):
            text = json.dumps(result.structured_content, ensure_ascii=False)
    text = _clip(text, MAX_OUTPUT_CHARS)
    if result.is_error:
        raise ToolError(text.strip() or "the tool reported an error")
    return text


# ------------------------------------------------------------ one server


class McpServer:
    """One configured server, for the worker: its listing (cached) and its reachability."""

    def __init__(self, url: str, index: int, *, list_timeout_s: float = LIST_TIMEOUT_S,
                 read_timeout_s: float = 10.0, ttl_s: float = LISTING_TTL_S,
                 failed_ttl_s: float = FAILED_TTL_S) -> None:
        self.url = url
        self.index = index  # 1-based, its place among --mcp-server
        self.label = safe_url(url)
        self.list_timeout_s = list_timeout_s
        self.read_timeout_s = read_timeout_s
        self._ttl_s = ttl_s
        self._failed_ttl_s = failed_ttl_s
        self._listing: Listing | None = None
        self._expires = 0.0
        self._fetching: asyncio.Task[Listing | None] | None = None
        self.reachable: bool | None = None  # None: not tried yet
        self._reported: tuple[str, ...] = ()  # the dropped tools last warned about
        self.fetches = 0

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Client]:
        """A client session with the server; leave it in the task that entered it (anyio)."""
        timeout = httpx2.Timeout(max(self.read_timeout_s, self.list_timeout_s) + 1,
                                 connect=self.list_timeout_s)
        async with httpx2.AsyncClient(transport=_CappedTransport(MAX_RESPONSE_BYTES),
                                      timeout=timeout,
                                      headers={"Accept-Encoding": "identity"}) as http:
            transport = streamable_http_client(self.url, http_client=http,
                                               max_sse_event_size=MAX_RESPONSE_BYTES)
            async with Client(transport, cache=None, client_info=CLIENT_INFO,
                              read_timeout_seconds=self.read_timeout_s) as client:
                yield client

    async def listing(self) -> Listing | None:
        """The server's tools (None while it cannot be reached), fetched at most once
        at a time and kept a while; never raises but for cancellation."""
        if time.monotonic() < self._expires:
            return self._listing
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._fetch(), name=f"mcp-list {self.label}")
        return await asyncio.shield(self._fetching)

    async def _fetch(self) -> Listing | None:
        self.fetches += 1
        try:
            async with asyncio.timeout(self.list_timeout_s):
                listing: Listing | None = await self._list()
        except Exception as exc:  # whatever went wrong, the calls go on without its tools
            listing = None
            self._expires = time.monotonic() + self._failed_ttl_s
            if self.reachable is not False:
                log.warning("MCP server %s cannot be reached (%s): calls go on without its "
                            "tools; trying again every %g s", self.label, _reason(exc),
                            self._failed_ttl_s)
            else:
                log.debug("MCP server %s still unreachable: %s", self.label, _reason(exc))
            self.reachable = False
        else:
            assert listing is not None
            self._expires = time.monotonic() + self._ttl_s
            if self.reachable is not True:
                log.info("MCP server %s (%s)%s: %d tools", self.label,
                         listing.server_name or "unnamed",
                         " reachable again" if self.reachable is False else "",
                         len(listing.tools))
            self.reachable = True
            if listing.dropped and listing.dropped != self._reported:
                log.warning("MCP server %s: %d tools not offered: %s", self.label,
                            len(listing.dropped), "; ".join(listing.dropped[:8]))
            self._reported = listing.dropped
        finally:
            self._fetching = None
        self._listing = listing
        return listing

    async def _list(self) -> Listing:
        async with self.connect() as client:
            info = client.server_info
            tools: list[ListedTool] = []
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                page = await client.list_tools(cursor=cursor, cache_mode="bypass")
                tools.extend(page.tools[:MAX_TOOLS_PER_SERVER * 2])
                cursor = page.next_cursor
                if cursor is None or len(tools) >= MAX_TOOLS_PER_SERVER * 2:
                    break
        return vet_listing(info.name if info is not None else None, tools)

    async def aclose(self) -> None:
        fetching = self._fetching
        if fetching is not None:
            fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetching


class CallSession:
    """One call's client session with one server: opened at the call's first tool call
    there, held by a task of its own (anyio's scopes close in the task that opened them),
    reopened after a transport failure, closed with the call."""

    def __init__(self, server: McpServer) -> None:
        self.server = server
        self._ready: asyncio.Future[Client] | None = None
        self._stop = asyncio.Event()
        self._holders: set[asyncio.Task[None]] = set()
        self._closed = False
        self.opened = 0  # sessions opened (for the tests)

    async def _client(self) -> Client:
        if self._closed:
            raise ToolError("the call has ended")
        if self._ready is None:
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            # Read its failure even when no tool call is left waiting (it timed out).
            ready.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._ready, self._stop = ready, asyncio.Event()
            holder = asyncio.create_task(self._hold(ready, self._stop),
                                         name=f"mcp-session {self.server.label}")
            self._holders.add(holder)
            holder.add_done_callback(self._holders.discard)
            self.opened += 1
        return await asyncio.shield(self._ready)

    async def _hold(self, ready: asyncio.Future[Client], stop: asyncio.Event) -> None:
        try:
            async with self.server.connect() as client:
                ready.set_result(client)
                await stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.debug("MCP server %s: a call's session ended: %s", self.server.label,
                          _reason(exc))
        finally:
            if not ready.done():
                ready.cancel()
            if self._ready is ready:
                self._ready = None  # the next tool call opens a new one

    def _discard(self) -> None:
        """Give up the session (after a transport failure): the next call reconnects."""
        self._stop.set()
        self._ready = None

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        try:
            client = await self._client()
            result = await client.call_tool(name, arguments,
                                            read_timeout_seconds=self.server.read_timeout_s)
        except MCPError as exc:  # the server answered with a protocol error
            raise ToolError(f"the server refused the call: {_reason(exc)}") from None
        except (ToolError, asyncio.CancelledError):
            raise
        except Exception as exc:
            self._discard()
            log.warning("MCP server %s: calling %s failed: %s", self.server.label,
                        name[:40], _reason(exc))
            raise ToolError(f"the tool's server failed: {_reason(exc)}") from None
        return result_text(result)

    async def aclose(self) -> None:
        self._closed = True
        self._stop.set()
        holders = set(self._holders)
        if not holders:
            return
        _, late = await asyncio.wait(holders, timeout=CLOSE_TIMEOUT_S)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=CLOSE_TIMEOUT_S)


# ------------------------------------------------------------ the provider


class McpTools:
    """The configured MCP servers as a tool provider (`ToolRegistry.add_provider`): each
    call gets the tools of the servers that answered, under prefixed names, within the
    limits of what one session.update may offer."""

    def __init__(self, urls: Sequence[str], *, tool_timeout_s: float = 10.0,
                 list_timeout_s: float = LIST_TIMEOUT_S, ttl_s: float = LISTING_TTL_S,
                 failed_ttl_s: float = FAILED_TTL_S) -> None:
        self.tool_timeout_s = tool_timeout_s
        # The SDK's own read timeout comes after the tool's, which is the one reported.
        self.servers = [McpServer(url, i, list_timeout_s=list_timeout_s,
                                  read_timeout_s=tool_timeout_s + 1, ttl_s=ttl_s,
                                  failed_ttl_s=failed_ttl_s)
                        for i, url in enumerate(urls, start=1)]
        self._over_budget: tuple[str, ...] = ()  # last warned about

    async def open_call(self, taken: frozenset[str]) -> ProvidedTools:
        """This call's MCP tools, under prefixed names, within the offered limits."""
        listings = await asyncio.gather(*(s.listing() for s in self.servers))
        names = set(taken)
        prefixes: set[str] = set()
        offered: list[Tool] = []
        sessions: list[CallSession] = []
        left_out: list[str] = []
        budget = MAX_OFFERED_CHARS
        for server, listing in zip(self.servers, listings, strict=True):
            if listing is None or not listing.tools:
                continue
            prefix = server_prefix(listing.server_name, server.index)
            for candidate in (prefix, f"{prefix[:MAX_PREFIX_CHARS - 3]}{server.index}"):
                if candidate not in prefixes:
                    prefix = candidate
                    break
            else:
                left_out.append(f"{server.label}: its prefix {prefix!r} is taken")
                continue
            prefixes.add(prefix)
            session = CallSession(server)
            for tool in listing.tools:
                name = model_name(prefix, tool)
                if name in names:
                    left_out.append(f"{name}: the name is taken")
                    continue
                if len(names) >= MAX_OFFERED_TOOLS or tool.chars > budget:
                    left_out.append(f"{name}: over the {MAX_OFFERED_TOOLS} tools or "
                                    f"{MAX_OFFERED_CHARS} characters offered at once")
                    continue
                budget -= tool.chars
                names.add(name)
                offered.append(Tool(name, tool.description, tool.parameters,
                                    _handler(session, tool.name), self.tool_timeout_s))
            sessions.append(session)
        if tuple(left_out) != self._over_budget:
            self._over_budget = tuple(left_out)
            if left_out:
                log.warning("MCP tools not offered: %s", "; ".join(left_out[:8]))

        async def close() -> None:
            await asyncio.gather(*(s.aclose() for s in sessions))

        return ProvidedTools(offered, close)

    async def aclose(self) -> None:
        for server in self.servers:
            await server.aclose()


def _handler(session: CallSession, name: str) -> Any:
    async def handler(**arguments: Any) -> str:
        return await session.call(name, arguments)

    return handler
