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
    stack = stack_factory("rtc-agent")
    page = browser_factory(stack).new_page(viewport={"width": 1280, "height": 800})
    page.goto(stack.url("/"))
    wait_ready(page)
    layout = page.evaluate(LAYOUT_JS)
    assert layout["scrollWidth"] <= layout["innerWidth"]
    assert layout["call"]["bottom"] <= layout["innerHeight"]
    page.screenshot(path=str(artifact_path("desktop-1280x800-idle.png")))
