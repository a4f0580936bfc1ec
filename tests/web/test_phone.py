"""Phone-sized layout: no horizontal scroll, the call button above the fold,
touch targets of at least 44 px. Screenshots go to artifacts/."""

from __future__ import annotations

import pytest

from tests.web.conftest import artifact_path
from tests.web.test_page import wait_for, wait_ready

pytestmark = [pytest.mark.browser]

IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)

LAYOUT_JS = """() => {
  const doc = document.documentElement;
  const box = (sel) => { const r = document.querySelector(sel).getBoundingClientRect();
                         return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,
                                 width: r.width, height: r.height}; };
  const small = [...document.querySelectorAll('button, select, input, summary')]
    .filter(el => el.offsetParent !== null)
    .map(el => ({id: el.id || el.tagName, w: el.getBoundingClientRect().width,
                 h: el.getBoundingClientRect().height}))
    .filter(t => t.w < 44 || t.h < 44);
  const wide = [...document.querySelectorAll('body *')]
    .filter(el => el.getBoundingClientRect().right > innerWidth + 0.5)
    .map(el => el.id || el.className || el.tagName);
  return {scrollWidth: doc.scrollWidth, innerWidth, innerHeight, call: box('#call'),
          small, wide, audio: document.querySelector('#remote').hasAttribute('playsinline')};
}"""


# Each microphone's name against the room its menu has for it (the closed <select>
# shows the chosen name in its box, beside the arrow).
MIC_NAMES_JS = """() => {
  const sel = document.querySelector('#mic');
  const cs = getComputedStyle(sel);
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = `${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
  const room = sel.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - 24;
  return [...sel.options].map(o => ({name: o.text, width: ctx.measureText(o.text).width, room}));
}"""


def cut_off_mic_names(page) -> list[dict]:  # type: ignore[no-untyped-def]
    return [m for m in page.evaluate(MIC_NAMES_JS) if m["width"] > m["room"]]


def phone_context(browser, width: int = 390, height: int = 844):  # type: ignore[no-untyped-def]
    return browser.new_context(
        viewport={"width": width, "height": height},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        user_agent=IPHONE_UA,
    )


def check_layout(page) -> dict:  # type: ignore[no-untyped-def]
    page.evaluate("window.scrollTo(0, 0)")  # "visible without scrolling" is about the top
    layout = page.evaluate(LAYOUT_JS)
    assert layout["scrollWidth"] <= layout["innerWidth"], layout
    assert not layout["wide"], layout["wide"]
    assert not layout["small"], f"touch targets under 44 px: {layout['small']}"
    call = layout["call"]
    assert 0 <= call["top"] and call["bottom"] <= layout["innerHeight"], call
    assert call["left"] >= 0 and call["right"] <= layout["innerWidth"], call
    assert layout["audio"]
    # the default entry, at least, is shown whole in the menu's box
    assert page.evaluate(MIC_NAMES_JS)[0]["name"] == "Default microphone"
    assert "Default microphone" not in [m["name"] for m in cut_off_mic_names(page)]
    return layout


@pytest.mark.parametrize(("width", "height"), [(390, 844), (320, 568)])
def test_phone_layout_in_a_call(stack_factory, browser_factory, width: int, height: int) -> None:
    stack = stack_factory("rtc-agent")
    browser = browser_factory(stack)
    page = phone_context(browser, width, height).new_page()
    page.goto(stack.url("/"))
    wait_ready(page)
    check_layout(page)
    page.screenshot(path=str(artifact_path(f"phone-{width}x{height}-idle.png")))

    # a call with a long message and an open diagnostics panel must not widen the
    # page either
    page.tap("#call")
    wait_for(page, "rtcAgent.connectionState === 'connected'", what="connected")
    page.fill("#text", "a-very-long-word-without-spaces-" * 4 + " and what is the weather")
    page.tap("#send")
    wait_for(page, "rtcAgent.transcripts.some(t => t.role === 'assistant' && t.final)")
    page.tap("#diagnostics summary")
    wait_for(page, "document.querySelector('[data-k=codec]').textContent !== '–'")
    check_layout(page)
    page.screenshot(path=str(artifact_path(f"phone-{width}x{height}-call.png")), full_page=True)
    page.tap("#call")


def test_desktop_layout(stack_factory, browser_factory) -> None:
    """A wide screen: the chat takes the width beside the call column and the window's
    height; every microphone's name fits its menu."""
    stack = stack_factory("rtc-agent")
    page = browser_factory(stack).new_page(viewport={"width": 1280, "height": 800})
    page.goto(stack.url("/"))
    wait_ready(page)
    layout = page.evaluate(LAYOUT_JS)
    assert layout["scrollWidth"] <= layout["innerWidth"]
    assert layout["call"]["bottom"] <= layout["innerHeight"]
    boxes = page.evaluate("""() => Object.fromEntries(['.call', '.chat', '.diagnostics'].map(
        s => { const r = document.querySelector(s).getBoundingClientRect();
               return [s, {left: r.left, right: r.right, top: r.top, bottom: r.bottom,
                           width: r.width}]; }))""")
    chat, call = boxes[".chat"], boxes[".call"]
    assert chat["width"] >= 0.6 * 1280, boxes  # not a phone column in the middle
    assert chat["left"] >= call["right"], boxes  # beside the call column, not under it
    assert chat["bottom"] >= 800 - 40 and chat["top"] <= 80, boxes  # the window's height
    assert boxes[".diagnostics"]["top"] > call["bottom"], boxes
    assert layout["scrollWidth"] <= 1280 and page.evaluate(
        "document.documentElement.scrollHeight") <= 800  # one screen, nothing to scroll
    page.screenshot(path=str(artifact_path("desktop-1280x800-idle.png")))

    # in a call the menu lists the real device names; none is cut off
    page.click("#call")
    wait_for(page, "rtcAgent.connectionState === 'connected'", what="connected")
    wait_for(page, "document.querySelectorAll('#mic option').length > 1", what="the devices")
    names = page.evaluate(MIC_NAMES_JS)
    print("microphones:", names)
    assert not cut_off_mic_names(page), names
    page.click("#call")
