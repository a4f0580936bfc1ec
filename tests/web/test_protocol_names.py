"""The page's copy of the caller protocol's names against the server's.

web/protocol.js holds every name the page uses for the `events` data channel;
rtc_agent/datachannel.py holds the server's (`CallState`, `SERVER_TYPES`,
`CALLER_TYPES`). They cannot share code, so this reads the JS blocks (flat
`export const X = Object.freeze({...});` of double-quoted strings) and compares.
Pure Python: no browser.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rtc_agent import datachannel

WEB = Path(__file__).resolve().parents[2] / "web"
PROTOCOL_JS = WEB / "protocol.js"

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_PAIR = re.compile(r'\b([A-Za-z_]\w*)\s*:\s*"([^"\\]*)"\s*,?')
_ITEM = re.compile(r'"([^"\\]*)"\s*,?')


def _source() -> str:
    return PROTOCOL_JS.read_text(encoding="utf-8")


def js_block(name: str) -> dict[str, str] | list[str]:
    """`export const <name> = Object.freeze({KEY: "value", ...})` (or a `[...]`)
    from web/protocol.js, as a dict (or list); fails if it is not that plain shape."""
    found = re.search(
        rf"export\s+const\s+{name}\s*=\s*Object\.freeze\(\s*(\{{.*?\}}|\[.*?\])\s*\)\s*;",
        _source(),
        re.S,
    )
    if found is None:
        pytest.fail(f"web/protocol.js has no `export const {name} = Object.freeze({{...}});`")
    text = _COMMENTS.sub("", found.group(1))
    inner = text[1:-1]
    pattern = _PAIR if text.startswith("{") else _ITEM
    leftover = pattern.sub("", inner).strip()
    if leftover:
        # a computed value or a single-quoted string would otherwise go unseen
        pytest.fail(f"web/protocol.js `{name}` is not a flat list of double-quoted names; "
                    f"cannot read {leftover!r}")
    if text.startswith("{"):
        pairs = pattern.findall(inner)
        block: dict[str, str] | list[str] = dict(pairs)
        values = [v for _, v in pairs]
        if len(block) < len(pairs):
            pytest.fail(f"web/protocol.js `{name}` repeats a key: {[k for k, _ in pairs]}")
    else:
        block = values = pattern.findall(inner)
    if len(set(values)) < len(values):
        pytest.fail(f"web/protocol.js `{name}` repeats a name: {values}")
    return block


def js_number(name: str) -> int:
    found = re.search(rf"export\s+const\s+{name}\s*=\s*(\d+)\s*;", _source())
    if found is None:
        pytest.fail(f"web/protocol.js has no `export const {name} = <integer>;`")
    return int(found.group(1))


def other_modules() -> dict[str, str]:
    """The page's other modules (they must use protocol.js's names)."""
    return {p.name: p.read_text(encoding="utf-8")
            for p in sorted(WEB.glob("*.js")) if p != PROTOCOL_JS}


def differences(what: str, page: set[str], server: set[str], server_name: str) -> list[str]:
    out = []
    if page - server:
        out.append(f"{what}: in web/protocol.js but not in {server_name}: {sorted(page - server)}")
    if server - page:
        out.append(f"{what}: in {server_name} but not in web/protocol.js: {sorted(server - page)}")
    return out


def test_call_states_match_the_server() -> None:
    page = js_block("CallState")
    server = {state.name: state.value for state in datachannel.CallState}
    assert isinstance(page, dict)
    problems = differences("CallState values", set(page.values()), set(server.values()),
                           "rtc_agent.datachannel.CallState")
    problems += [f"CallState.{k} is {page[k]!r} in the page but {server[k]!r} on the server"
                 for k in page.keys() & server.keys() if page[k] != server[k]]
    assert not problems, "\n".join(problems)


def test_page_states_are_not_call_states() -> None:
    # both go to body[data-state] and rtcAgent.state, so they must not collide
    page = js_block("PageState")
    assert isinstance(page, dict)
    clash = set(page.values()) & {s.value for s in datachannel.CallState}
    assert not clash, f"PageState reuses server state names: {sorted(clash)}"


def test_server_types_are_handled_or_ignored() -> None:
    handled = js_block("ServerType")
    ignored = js_block("IGNORED_SERVER_TYPES")
    assert isinstance(handled, dict) and isinstance(ignored, list)
    known = set(datachannel.SERVER_TYPES)
    handled_set, ignored_set = set(handled.values()), set(ignored)
    problems = []
    if handled_set - known:
        problems.append("web/protocol.js ServerType handles types the server never sends "
                        f"(not in SERVER_TYPES): {sorted(handled_set - known)}")
    if ignored_set - known:
        problems.append("web/protocol.js IGNORED_SERVER_TYPES names types not in SERVER_TYPES: "
                        f"{sorted(ignored_set - known)}")
    if handled_set & ignored_set:
        problems.append(f"both handled and ignored: {sorted(handled_set & ignored_set)}")
    unhandled = known - handled_set - ignored_set
    if unhandled:
        problems.append("SERVER_TYPES the page neither handles (ServerType) nor deliberately "
                        f"ignores (IGNORED_SERVER_TYPES): {sorted(unhandled)}")
    assert not problems, "\n".join(problems)


def test_sent_types_are_caller_types() -> None:
    sent = js_block("CallerType")
    assert isinstance(sent, dict)
    unknown = set(sent.values()) - set(datachannel.CALLER_TYPES)
    assert not unknown, (f"web/protocol.js CallerType sends types the server refuses "
                         f"(not in CALLER_TYPES {datachannel.CALLER_TYPES}): {sorted(unknown)}")


def test_limits_match_the_server() -> None:
    for name in ("MAX_TEXT_CHARS", "MAX_PLAYOUT_DELAY_MS"):
        assert js_number(name) == getattr(datachannel, name), (
            f"web/protocol.js {name} = {js_number(name)}, "
            f"rtc_agent.datachannel.{name} = {getattr(datachannel, name)}"
        )


def test_modules_use_the_declared_names() -> None:
    """`ServerType.TYPO` is just undefined in JS, and a literal "state" elsewhere
    would escape the comparison above: both are caught here."""
    blocks = {n: js_block(n) for n in ("CallState", "PageState", "ServerType", "CallerType")}
    modules = other_modules()
    # protocol.js itself uses some names (message constructors); not its declarations
    body = _source()
    for name in blocks:
        body = re.sub(rf"export\s+const\s+{name}\s*=\s*Object\.freeze\(.*?\)\s*;", "", body,
                      flags=re.S)
    sources = {**modules, "protocol.js": body}
    problems = []
    used: dict[str, set[str]] = {n: set() for n in blocks}
    for file, text in sources.items():
        for block, key in re.findall(r"\b(CallState|PageState|ServerType|CallerType)\.(\w+)",
                                     text):
            used[block].add(key)
            if key not in blocks[block]:
                problems.append(f"{file} uses {block}.{key}, "
                                "which web/protocol.js does not declare")
    for block in ("ServerType", "CallerType"):
        unused = set(blocks[block]) - used[block]
        if unused:
            problems.append(f"web/protocol.js declares {block} {sorted(unused)} but no module "
                            "uses them (a type declared handled or sent must be)")
    # spelled-out protocol names outside protocol.js; generic words ("text",
    # "error") are left out, they are also CSS class names
    names = {n for n in datachannel.SERVER_TYPES if "." in n}
    names |= {s.value for s in datachannel.CallState} | set(blocks["PageState"].values())
    types = set(datachannel.SERVER_TYPES) | set(datachannel.CALLER_TYPES)
    for file, text in modules.items():
        code = _COMMENTS.sub("", text)
        for literal in re.findall(r"""["'`]([\w.]+)["'`]""", code):
            if literal in names:
                problems.append(f"{file} spells out {literal!r}; use web/protocol.js's name")
        for literal in re.findall(r"""\btype\s*(?::|[!=]==?)\s*["'`]([\w.]+)["'`]""", code):
            if literal in types:
                problems.append(f"{file} spells out message type {literal!r}; "
                                "use web/protocol.js's name")
    assert not problems, "\n".join(problems)


def test_styled_states_are_known() -> None:
    css = (WEB / "style.css").read_text(encoding="utf-8")
    styled = set(re.findall(r"""data-state\s*=\s*["']?([\w.-]+)""", css))
    known = {s.value for s in datachannel.CallState}
    page_states = js_block("PageState")
    assert isinstance(page_states, dict)
    unknown = styled - known - set(page_states.values())
    assert not unknown, f"web/style.css styles states nobody sets: {sorted(unknown)}"


def test_end_reasons_are_worded() -> None:
    """`call.ended` carries the call's end reason (the metrics' END_REASONS): the page
    must have a headline for each one a caller can receive (`caller_gone` cannot)."""
    from rtc_agent.observability.metrics import END_REASONS

    worded = js_block("EndReason")
    assert isinstance(worded, dict)
    missing = set(END_REASONS) - {"caller_gone"} - set(worded.values())
    assert not missing, f"web/protocol.js EndReason lacks server end reasons: {sorted(missing)}"
    ui = (WEB / "ui.js").read_text(encoding="utf-8")
    unworded = [k for k in worded if f"[EndReason.{k}]" not in ui]
    assert not unworded, f"web/ui.js END_HEADLINES has no wording for {unworded}"
