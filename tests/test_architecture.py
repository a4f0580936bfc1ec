"""The tree's import rules (docs/architecture.md), checked on the source.

Each part of `rtc_agent` may import only the parts listed for it, so arrows
point one way: the pure cores import no I/O, the offline server never imports
the agent, and nothing imports the load tester or the composition root. The
module graph has no cycles.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "rtc_agent"

# part -> the parts it may import (a part is a module or package under rtc_agent;
# an entry also allows its submodules).
MAY_IMPORT: dict[str, set[str]] = {
    "protocol": set(),
    "datachannel": set(),
    "ice": set(),
    "logs": set(),
    "lifeline": set(),
    "tools": {"tools"},
    "media": {"media", "protocol"},
    "realtime": {"realtime", "protocol", "datachannel"},
    "offline": {"offline", "protocol", "media.pcm", "logs", "lifeline"},
    "config": {"realtime.settings", "ice", "protocol"},
    "observability": {"observability", "protocol"},
    "call": {"protocol", "datachannel", "ice", "media", "realtime", "tools", "observability"},
    "signaling": {"signaling", "call", "config", "realtime.service", "realtime.health",
                  "tools", "ice", "media.recorder", "cluster.forward", "cluster.membership",
                  "observability"},
    # The supervisor starts the offline backend for the node; workers are `serve`.
    "cluster": {"cluster", "config", "offline.process", "realtime.service",
                "observability.metrics"},
    "serve": {"config", "ice", "logs", "lifeline", "offline.process", "realtime.service",
              "realtime.client", "signaling", "tools", "cluster", "observability"},
    # `rtc-agent say` speaks prompts with the offline backend's synthesiser.
    "loadtest": {"loadtest", "protocol", "datachannel", "media.pcm", "media.opus", "ice",
                 "logs", "offline.tts"},
    "cli": set(),  # loads each subcommand's module by name, on demand
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: str | None = None) -> set[str]:
    """Every rtc_agent module a file imports, at any depth of its code."""
    found: set[str] = set()
    if package is None:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rtc_agent"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("rtc_agent"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                sub = ROOT.parent / Path(*candidate.split("."))
                is_module = sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file()
                found.add(candidate if is_module else base)
    return found


def part_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def allowed(target: str, entries: set[str]) -> bool:
    rel = target.removeprefix("rtc_agent.")
    return target == "rtc_agent" or any(rel == e or rel.startswith(e + ".") for e in entries)


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}


def test_every_part_has_a_rule() -> None:
    parts = {part_of(m) for m in graph()} - {""}
    assert parts <= set(MAY_IMPORT), f"parts without an import rule: {parts - set(MAY_IMPORT)}"


def test_each_part_imports_only_what_its_rule_allows() -> None:
    wrong = []
    for module, targets in sorted(graph().items()):
        part = part_of(module)
        if not part:
            continue
        for target in sorted(targets):
            if not allowed(target, MAY_IMPORT[part]):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_the_module_graph_has_no_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt == "rtc_agent" or nxt not in edges:
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_pure_cores_import_without_pyav_or_aiortc() -> None:
    """The protocol cores load (and test) without the media stack."""
    code = (
        "import sys\n"
        "import rtc_agent.protocol, rtc_agent.datachannel, rtc_agent.realtime.session\n"
        "import rtc_agent.media.playout_buffer, rtc_agent.offline.conversation\n"
        "heavy = sorted(m for m in ('av', 'aiortc', 'numpy', 'websockets', 'aiohttp')"
        " if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT.parent)
    assert out.stdout.strip() == "", f"pure cores pulled in: {out.stdout.strip()}"


def test_the_rules_catch_a_wrong_arrow(tmp_path: Path) -> None:
    """The checker itself: an offline module importing the agent is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from rtc_agent.call import Call\nimport rtc_agent.realtime.session\n")
    targets = imports_of(bad, "rtc_agent.offline")
    assert targets == {"rtc_agent.call", "rtc_agent.realtime.session"}
    assert not any(allowed(t, MAY_IMPORT["offline"]) for t in targets)
