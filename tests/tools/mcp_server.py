"""An MCP server for the tests: FastMCP (`MCPServer` in mcp 2) over streamable HTTP on
127.0.0.1, as a child process. It prints its port, then serves until killed.

    python -m tests.tools.mcp_server [NAME]
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Literal

import uvicorn
from mcp import MCPError
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

NAME = "Orders Desk!"  # made fit for tool names: orders_desk
# A parameter whose schema is far over the 16 KiB a tool's schema may take.
Choice = Literal[tuple(f"option number {i} of a very long list" for i in range(1000))]  # type: ignore[valid-type]


def build(name: str) -> MCPServer:
    app = MCPServer(name)

    @app.tool()
    def lookup_order(order_id: str) -> str:
        """Look up an order by its number and say where it is."""
        return f"Order {order_id} shipped on Monday."

    @app.tool()
    def missing_order(order_id: str) -> str:
        """An order that cannot be found: an MCP error result."""
        raise ToolError(f"order {order_id} does not exist")

    @app.tool()
    def refused(order_id: str) -> str:
        """A protocol-level error (JSON-RPC) rather than an error result."""
        raise MCPError(-32602, f"refusing order {order_id}")

    @app.tool()
    async def slow(seconds: float) -> str:
        """Takes its time."""
        await asyncio.sleep(seconds)
        return "finally"

    @app.tool()
    def long_report() -> str:
        """More text than the model may get of one result."""
        return "word " * 10_000

    @app.tool(name="order.status")
    def order_status(order_id: str) -> str:
        """A name with a dot, which the model's function names do not allow."""
        return f"{order_id}: in transit"

    @app.tool()
    def pick(choice: Choice) -> str:  # type: ignore[valid-type]
        """Its schema is too large to offer."""
        return str(choice)

    return app


async def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else NAME
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(build(name).streamable_http_app(), log_level="warning")
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(main())
