"""The `search` tool: Tavily when TAVILY_API_KEY is set, else local files.

The local fallback ranks paragraphs of the text and markdown files under a
folder (by default the project's docs) by how many query terms they contain,
so the tool works, and can be tested, with no network at all.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from rtc_agent.tools.registry import Tool

PARAMETERS = {
    "type": "object",
    "properties": {"query": {"type": "string", "description": "What to search for."}},
    "required": ["query"],
}
DESCRIPTION = "Search for current information on a topic and return short snippets."
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an and are for from how in is it of on or the to what with about".split())
MAX_FILE_BYTES = 1_000_000


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


class LocalSearch:
    """Full-text search over paragraphs of .md/.txt files, indexed once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._paragraphs: list[tuple[str, str, Counter[str]]] = []
        self._df: Counter[str] = Counter()
        self._indexed = False

    def _index(self) -> None:
        if self.folder.is_dir():
            for path in sorted(self.folder.rglob("*")):
                if path.suffix.lower() not in (".md", ".txt") or not path.is_file():
                    continue
                if path.stat().st_size > MAX_FILE_BYTES:
                    continue
                text = path.read_text(encoding="utf-8", errors="replace")
                for para in re.split(r"\n\s*\n", text):
                    para = " ".join(para.split())
                    if len(para) < 20:
                        continue
                    counts = Counter(_terms(para))
                    self._paragraphs.append((str(path.relative_to(self.folder)), para, counts))
                    self._df.update(counts.keys())
        self._indexed = True

    def search(self, query: str, limit: int = 3) -> list[dict[str, str]]:
        if not self._indexed:
            self._index()
        terms = set(_terms(query))
        n = max(1, len(self._paragraphs))
        scored = []
        for source, para, counts in self._paragraphs:
            score = sum(
                (1 + math.log(counts[t])) * math.log(1 + n / self._df[t])
                for t in terms
                if counts[t]
            )
            if score > 0:
                scored.append((score, source, para))
        scored.sort(key=lambda s: -s[0])
        return [{"source": s, "snippet": p[:400]} for _, s, p in scored[:limit]]


def search_tool(search_dir: Path, api_key: str | None = None, timeout_s: float = 8.0) -> Tool:
    """The search tool, backed by Tavily if a key is given, else by `search_dir`."""
    key = api_key if api_key is not None else os.environ.get("TAVILY_API_KEY")
    if key:
        from tavily import AsyncTavilyClient  # imported only when configured

        client = AsyncTavilyClient(api_key=key)

        async def tavily(query: str) -> dict[str, Any]:
            reply = await client.search(query, max_results=3, include_answer=True)
            results = [
                {"title": r.get("title", ""), "url": r.get("url", ""),
                 "snippet": (r.get("content") or "")[:400]}
                for r in reply.get("results", [])
            ]
            return {"query": query, "answer": reply.get("answer") or "", "results": results}

        return Tool("search", DESCRIPTION, PARAMETERS, tavily, timeout_s)

    local = LocalSearch(search_dir)

    async def offline(query: str) -> dict[str, Any]:
        # Indexing reads files: keep it off the event loop.
        results = await asyncio.to_thread(local.search, query)
        if not results:
            return {"query": query, "answer": f"No local documents mention {query}.",
                    "results": []}
        return {"query": query, "answer": results[0]["snippet"], "results": results}

    return Tool("search", DESCRIPTION, PARAMETERS, offline, timeout_s)
